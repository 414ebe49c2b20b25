"""Result files and tables: every table is computed from records.parquet (no model code)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from typoattack.errors import OutputError
from typoattack.analysis.metrics import build_clean_table, build_confusion_table, build_per_word_table

RECORDS_FILE = "records.parquet"
RUN_FILE = "run.json"
PER_WORD_CSV = "per_word.csv"
PER_WORD_MD = "per_word.md"
CONFUSION_CSV = "confusion.csv"
SKIPPED_CSV = "skipped.csv"
# Floats in CSV files are rounded so reference tables diff cleanly across machines.
_CSV_DECIMALS = 6


def write_atomic(path: Path, text: str) -> None:
    """Write text to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as CSV (floats rounded to 6 decimals) atomically."""
    write_atomic(path, frame.round(_CSV_DECIMALS).to_csv(index=False, lineterminator="\n"))


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """Read run.json of a run directory.

    Raises:
        OutputError: The directory or its run.json is missing or unreadable.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise OutputError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise OutputError(f"{run_dir} holds no {RUN_FILE}; it is not a typoattack run directory")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise OutputError(f"{path} is not valid JSON: {e}") from None


def load_records(run_dir: str | Path) -> pd.DataFrame:
    """Read records.parquet of a run directory.

    Raises:
        OutputError: The run is incomplete or has no records.
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if not info.get("complete", False):
        raise OutputError(
            f"the run in {run_dir} is incomplete ({info.get('chunks_done', 0)} of {info.get('chunks_total', '?')} chunks); "
            "rerun the same `typoattack eval` command to resume it"
        )
    path = run_dir / RECORDS_FILE
    if not path.is_file():
        raise OutputError(f"{run_dir} has no {RECORDS_FILE}")
    return pd.read_parquet(path)


def format_per_word_markdown(per_word: pd.DataFrame) -> str:
    """Render the per-word table as a Markdown table with percentages."""
    pct = ["pixel_cover_mean", "clean_top1", "attacked_top1", "asr", "changed_to",
           "already_target", "changed_away", "neither", "flip_rate"]
    header = ["model", "pretrained", "word", "target", "fraction", "placement", "n", "pixel cover",
              "clean top-1", "attacked top-1", "ASR [95% CI]", "already target", "changed away",
              "neither", "flip rate"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    for r in per_word.to_dict("records"):
        f = {k: ("n/a" if pd.isna(r[k]) else f"{100 * r[k]:.1f}%") for k in pct}
        ci = f"{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}"
        lines.append("| " + " | ".join([
            cell(r["model"]), cell(r["pretrained"]), f"`{cell(r['word'])}`", f"{cell(r['target_name'])} ({r['target_index']})",
            f"{r['fraction']:g}", cell(r["placement"]), str(r["n_images"]), f["pixel_cover_mean"],
            f["clean_top1"], f["attacked_top1"], f"{f['asr']} [{ci}]", f["already_target"],
            f["changed_away"], f["neither"], f["flip_rate"],
        ]) + " |")
    return "\n".join(lines) + "\n"


def build_rich_tables(per_word: pd.DataFrame) -> list[Table]:
    """Build one rich Table of the per-word results per model, for the terminal."""
    tables = []
    for (model, pretrained), rows in per_word.groupby(["model", "pretrained"], sort=False):
        table = Table(title=f"Typographic attack success: {model} / {pretrained}")
        for col in ("word", "target", "frac", "placement", "n", "cover", "clean", "attacked", "ASR [95% CI]", "flip"):
            table.add_column(col, justify="left" if col in ("word", "target", "placement") else "right")
        for r in rows.to_dict("records"):
            flip = "n/a" if pd.isna(r["flip_rate"]) else f"{100 * r['flip_rate']:.1f}%"
            table.add_row(
                str(r["word"]), str(r["target_name"]), f"{r['fraction']:g}", str(r["placement"]), str(r["n_images"]),
                f"{100 * r['pixel_cover_mean']:.2f}%", f"{100 * r['clean_top1']:.1f}%",
                f"{100 * r['attacked_top1']:.1f}%",
                f"{100 * r['asr']:.1f}% [{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}]", flip,
            )
        tables.append(table)
    return tables


def write_tables(records: pd.DataFrame, out_dir: str | Path, class_names: Sequence[str]) -> pd.DataFrame:
    """Compute per_word.csv/.md and confusion.csv from the records and write them.

    Returns:
        The per-word table.
    """
    out_dir = Path(out_dir)
    per_word = build_per_word_table(records, class_names)
    write_csv(per_word, out_dir / PER_WORD_CSV)
    write_atomic(out_dir / PER_WORD_MD, format_per_word_markdown(per_word))
    write_csv(build_confusion_table(records), out_dir / CONFUSION_CSV)
    return per_word


def summarize_clean(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Clean accuracy per model as plain dicts (for run.json)."""
    return build_clean_table(records).to_dict("records")
