"""Wall time of the CI config run locally, on a local Ray cluster, and as 2 shards + merge.

Each run is the `typoattack` command in its own process, as a user starts it (the Ray run starts
and stops its local cluster inside its time), after one untimed local run that fills the canvas,
mask and classifier caches. Prints the wall times, the ratio ray/local (target <= 1.5) and the
top-1 prediction agreement of each run's records with the local run's.

    python benchmarks/executors.py                  # the CI config: 500 images, 5 cells of 100
    python benchmarks/executors.py --limit 100 --chunk-size 20
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
KEYS = ["model", "pretrained", "image_id", "word", "fraction", "placement", "font", "fill", "outline", "outline_width",
        "opacity"]


def _typoattack(*args: str) -> float:
    """Run `typoattack ARGS` in a new process; return its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from typoattack.cli import app; app()", *args], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"typoattack {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def _agreement(reference: Path, other: Path) -> tuple[float, int, bool]:
    """(share of records whose prediction equals the reference's, records, records identical)."""
    a, b = pd.read_parquet(reference / "records.parquet"), pd.read_parquet(other / "records.parquet")
    joined = a[KEYS + ["pred_index"]].merge(b[KEYS + ["pred_index"]], on=KEYS, how="outer", suffixes=("", "_o"))
    same = float((joined["pred_index"] == joined["pred_index_o"]).mean())
    return same, len(joined), a.equals(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="Images (default: all 500 of the CI config).")
    parser.add_argument("--chunk-size", type=int, default=None, help="Images per cell (default: the config's 100).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the runs and caches (default: a temp one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="typoattack-executors-"))
    common = ["--config", "ci", "--cache-dir", str(work / "cache"), "--overwrite"]
    if args.limit:
        common += ["--limit", str(args.limit)]
    if args.chunk_size:
        common += ["--chunk-size", str(args.chunk_size)]

    _typoattack("eval", *common, "--out", str(work / "warmup"))
    times = {"local": _typoattack("eval", *common, "--out", str(work / "local"))}
    times["ray"] = _typoattack("eval", *common, "--executor", "ray", "--out", str(work / "ray"))
    shard_times = [_typoattack("eval", *common, "--shard", f"{k}/2", "--out", str(work / f"shard{k}"))
                   for k in (1, 2)]
    merge_time = _typoattack("merge", str(work / "shard1"), str(work / "shard2"), "--out", str(work / "merged"),
                             "--overwrite")

    print(f"CI config ({args.limit or 500} images, chunk size {args.chunk_size or 100}), {os.cpu_count()} CPUs, "
          f"warm caches; runs in {work}")
    print(f"{'run':<38} {'wall s':>8} {'vs local':>9} {'agreement':>12} {'identical':>10}")
    rows = [("local (--executor local)", times["local"], work / "local"),
            ("ray (--executor ray, local cluster)", times["ray"], work / "ray"),
            ("2 shards one after the other + merge", sum(shard_times) + merge_time, work / "merged"),
            ("2 shards in parallel (max) + merge", max(shard_times) + merge_time, work / "merged")]
    for name, seconds, folder in rows:
        same, n, identical = _agreement(work / "local", folder)
        print(f"{name:<38} {seconds:8.1f} {seconds / times['local']:8.2f}x {same:11.2%} {str(identical):>10}"
              f"  ({n} records)")
    print(f"shard walls {shard_times[0]:.1f} s + {shard_times[1]:.1f} s, merge {merge_time:.1f} s")
    ratio = times["ray"] / times["local"]
    print(f"ray/local = {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
