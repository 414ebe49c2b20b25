"""Whole-vocabulary benchmark: every ImageNet class name as an attack word, from an empty cache and
again with a warm one.

Runs `typoattack eval` in this process with the tiny model (random weights: speed does not depend
on them), 20 shipped images, `--vocab imagenet-classes` (998 words), fraction 0.07, paper8: 20 x 999
encoder passes and 998 text masks. The issue's target: the cold run takes at most 120 s on the
2-core machine, the warm run less.

    python benchmarks/vocab.py [--images 20] [--placement paper8] [--templates openai]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typoattack.constants import SAMPLE_DIR  # noqa: E402
from typoattack.engine.run import run_task  # noqa: E402
from typoattack.tasks.registry import get_task  # noqa: E402
from typoattack.tasks.synthetic.config import load_synthetic_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--placement", default="paper8")
    parser.add_argument("--fraction", type=float, default=0.07)
    parser.add_argument("--templates", default="openai")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="typoattack-vocab-"))
    settings = {"model": "typoattack-tiny", "pretrained": "seed:0", "data": str(SAMPLE_DIR), "limit": args.images,
                "vocab": "imagenet-classes", "fractions": [args.fraction], "placement": [args.placement],
                "templates": args.templates, "device": "cpu", "workers": args.workers,
                "cache_dir": str(work / "cache"), "out": str(work / "run")}
    cfg = load_synthetic_config(None, settings)
    print(f"tiny model, {args.images} images x 998 words (imagenet-classes), fraction {args.fraction}, "
          f"{args.placement}, {args.templates} templates, {args.workers} workers")
    print(f"{'cache':<6} {'wall s':>7} {'records':>8} {'masks s':>8} {'eval s':>7} {'classifier s':>12}")
    for label in ("cold", "warm"):
        t0 = time.perf_counter()
        result = run_task(get_task("eval"), cfg, overwrite=True)
        wall = time.perf_counter() - t0
        seconds = result.info.models[0]["seconds"]
        print(f"{label:<6} {wall:>7.1f} {len(result.records):>8} {result.info.extra['seconds_planning']['masks']:>8.1f} "
              f"{seconds['evaluate']:>7.1f} {seconds['classifier']:>12.1f}", flush=True)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
