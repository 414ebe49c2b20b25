"""DuckDB or polars for the tables? The two out-of-core queries that dominate a run's table step,
timed on the same run folder with each engine, each in a child process (peak RSS its own).

The queries: the per-word outcome counts (attacked records joined with their image's clean
prediction, then counted per condition: `typoattack.analysis.tables.query_outcome_counts`) and the
confusion counts (records grouped by condition, true and predicted class, written to Parquet in key
order: `tables.write_confusion`). DuckDB runs typoattack's own SQL under its default memory limit; polars
runs the same computation as a lazy query on its streaming engine (`collect(engine="streaming")`,
`sink_parquet`). Both results are checked equal before the figures are printed.

Usage (polars is not a typoattack dependency: `pip install polars` first):

    python benchmarks/scale.py --records 10000000 --steps "" --keep --out /tmp/s10
    python benchmarks/query_engines.py /tmp/s10/run

Prints one line per (engine, query): seconds and peak RSS, best of `--repeat` runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r'''
import json, resource, sys, time
from pathlib import Path
engine, query, run = sys.argv[1], sys.argv[2], Path(sys.argv[3])
out = Path(sys.argv[4])
t0 = time.perf_counter()
if engine == "duckdb":
    from typoattack.engine.rundir import RunFolder
    from typoattack.analysis.tables import query_outcome_counts, write_confusion
    with RunFolder(run).open_records() as records:
        if query == "outcomes":
            result = query_outcome_counts(records)
            rows = len(result)
            result.to_parquet(out, index=False)
        else:
            rows = write_confusion(records, out, out.with_suffix(".csv"))["cells"]
else:
    import polars as pl
    r = pl.scan_parquet(str(run / "records.parquet" / "**" / "*.parquet"))
    keys = ["model", "pretrained", "defence", "word", "target_index", "fraction", "placement",
            "font", "fill", "outline", "outline_width", "opacity"]
    if query == "outcomes":
        clean = (r.filter(pl.col("word") == "")
                 .select("model", "pretrained", "defence", "image_id", pl.col("pred_index").alias("c")))
        a = r.filter(pl.col("word") != "").join(clean, on=["model", "pretrained", "defence", "image_id"], how="left")
        c, y, p, t = pl.col("c"), pl.col("true_index"), pl.col("pred_index"), pl.col("target_index")
        result = a.group_by(keys).agg(
            pl.len().alias("n_images"), pl.col("pixel_cover").sum().alias("pixel_cover_sum"),
            (c == y).sum().alias("n_clean_correct"), (p == y).sum().alias("n_attacked_correct"),
            ((c != t) & (p == t)).sum().alias("n_changed_to"), ((c == t) & (p == t)).sum().alias("n_already_target"),
            ((c == t) & (p != t)).sum().alias("n_changed_away"), ((c != t) & (p != t)).sum().alias("n_neither"),
            ((c == y) & (p != y)).sum().alias("n_flipped"),
        ).collect(engine="streaming")
        rows = result.height
        result.write_parquet(out)
    else:
        ckeys = ["model", "pretrained", "defence", "word", "fraction", "placement", "font", "fill", "outline",
                 "outline_width", "opacity", "true_index", "pred_index"]
        r.group_by(ckeys).agg(pl.len().alias("count")).sort(ckeys).sink_parquet(str(out))
        rows = pl.scan_parquet(str(out)).select(pl.len()).collect().item()
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rows": rows,
                  "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
'''


def measure(engine: str, query: str, run: Path, out: Path) -> dict[str, float]:
    """One child process running one query with one engine."""
    proc = subprocess.run([sys.executable, "-c", CHILD, engine, query, str(run), str(out)], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_equal(query: str, duck: Path, polar: Path) -> None:
    """The two engines' results hold the same rows (counts equal, pixel cover sums within 1e-9)."""
    import numpy as np
    import pandas as pd

    a, b = pd.read_parquet(duck), pd.read_parquet(polar)[list(pd.read_parquet(duck).columns)]
    keys = [c for c in a.columns if not (c.startswith("n_") or c in ("count", "pixel_cover_sum"))]
    a, b = (f.sort_values(keys, kind="stable").reset_index(drop=True) for f in (a, b))
    assert len(a) == len(b), (query, len(a), len(b))
    for col in a.columns:
        if col == "pixel_cover_sum":
            assert np.allclose(a[col], b[col], rtol=1e-9), col
        else:
            pd.testing.assert_series_equal(a[col], b[col], check_dtype=False, obj=f"{query}.{col}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="A complete eval run folder (e.g. from benchmarks/scale.py --keep).")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tmp = args.run.parent / "query-engines"
    tmp.mkdir(exist_ok=True)
    for query in ("outcomes", "confusion"):
        outs = {}
        for engine in ("duckdb", "polars"):
            outs[engine] = tmp / f"{engine}-{query}.parquet"
            runs = [measure(engine, query, args.run, outs[engine]) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: r["seconds"])
            print(f"query: {query:9s}  engine: {engine:6s}  rows: {best['rows']}  seconds: {best['seconds']:.1f}  "
                  f"peak RSS: {max(r['peak_gib'] for r in runs):.2f} GiB", flush=True)
        check_equal(query, outs["duckdb"], outs["polars"])


if __name__ == "__main__":
    main()
