"""Analysis of records.parquet: metrics, figures and the report (no model code, no Typer)."""
