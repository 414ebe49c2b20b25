"""Threshold search against a fixed sweep: `typoattack threshold` (grid 5 + 8 bisection steps) and `typoattack
eval` over 13 log-spaced fractions, on the demo model and the 500 shipped images, the goh2021 words, paper8.

The sweep's fractions are 13 log-spaced points from the smallest fraction every word can be drawn at (paper8
cannot go below about 0.005 at 224 px) to 0.25, and the search runs on the same range, so its 5 grid points
are sweep points 0, 3, 6, 9 and 12. For every (image, word) pair and both outcomes (prediction becomes the
word's target; leaves the true class, on images correct when clean) the sweep's threshold is its first
fraction with the outcome; the search's is within one sweep step of it when |log(f_search / f_sweep)| <=
log(sweep step). Pairs are "monotone" when the outcome, once reached on the sweep, holds at every larger
sweep fraction. Both commands run in this process, each from an empty mask cache (canvases and classifier
cached beforehand) and again with its masks cached; the line the issue asks for uses the cold runs.

The search needs a mask per lattice point it visits (at most 1,025 per word and placement, whatever the
number of images) where the sweep needs 13, and one canvas per visit where the sweep needs 13 per pair:
the fewer the images, the more the masks weigh (`--limit 100`). `--model`/`--pretrained` run it on
another model (a model that reads flickers less with the font size; see benchmarks/README.md).

    python benchmarks/threshold.py [--limit 500] [--workers 2] [--model M --pretrained P --device cuda]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typoattack.backends.registry import get_backend  # noqa: E402
from typoattack.constants import DEMO_MODEL, DEMO_PRETRAINED, SAMPLE_DIR  # noqa: E402
from typoattack.engine.run import run_task  # noqa: E402
from typoattack.tasks.registry import get_task  # noqa: E402
from typoattack.tasks.synthetic.config import load_synthetic_config  # noqa: E402
from typoattack.tasks.threshold.config import load_threshold_config  # noqa: E402
from typoattack.tasks.threshold.masks import find_series_ranges, list_series  # noqa: E402
from typoattack.tasks.threshold.task import read_threshold_words  # noqa: E402

N_SWEEP = 13
GRID, STEPS = 5, 8


def sweep_fractions(common: dict, max_fraction: float) -> np.ndarray:
    """13 log-spaced fractions from the smallest every word of the run reaches on the model's canvas to
    `max_fraction`."""
    cfg = load_threshold_config(None, {**common, "max_fraction": max_fraction})
    spec = cfg.models[0]
    size = get_backend(spec.backend).get_input_size(spec) or (224, 224)
    ranges = find_series_ranges(list_series(cfg, read_threshold_words(cfg)[2]), cfg.min_fraction,
                                max_fraction, size)
    lo = max(r.lo for r in ranges if r.lo is not None)
    return np.geomspace(lo, max_fraction, N_SWEEP)


def timed(task: str, cfg) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = run_task(get_task(task), cfg, overwrite=True)
    return time.perf_counter() - t0, result


def sweep_thresholds(records: pd.DataFrame, fractions: np.ndarray) -> pd.DataFrame:
    """Per (image, word) pair and outcome: the index of the first sweep fraction with the outcome (-1: none),
    whether the outcome holds from there on (monotone), and whether the pair counts (eligible)."""
    clean = records[records["word"] == ""].set_index("image_id")["pred_index"]
    attacked = records[records["word"] != ""].copy()
    attacked["k"] = np.searchsorted(fractions, attacked["fraction"].to_numpy() * (1 - 1e-9))
    attacked["clean"] = attacked["image_id"].map(clean)
    rows = []
    for (image_id, word), g in attacked.sort_values("k").groupby(["image_id", "word"]):
        pred, true, target, c = g["pred_index"].to_numpy(), g["true_index"].iloc[0], g["target_index"].iloc[0], g["clean"].iloc[0]
        for outcome, holds, eligible in (("target", pred == target, c != target), ("flip", pred != true, c == true)):
            first = int(np.argmax(holds)) if holds.any() else -1
            monotone = first < 0 or bool(holds[first:].all())
            rows.append({"image_id": image_id, "word": word, "outcome": outcome, "k": first, "monotone": monotone,
                         "eligible": bool(eligible)})
    return pd.DataFrame(rows)


def compare(search: pd.DataFrame, sweep: pd.DataFrame, fractions: np.ndarray) -> dict[str, float]:
    """The search's thresholds against the sweep's, over the eligible (pair, outcome)s.

    within: share within one sweep step among the pairs monotone on the sweep (both not reached counts as
    agreeing). flicker: of those outside one step, the share whose outcome provably flips back between two
    sweep fractions: the search saw it hold at a fraction below one where the sweep saw it not hold, or not
    hold above one where the sweep saw it hold (eval at the search's bracket predicts what the search saw:
    tests/test_threshold.py)."""
    step = math.log(fractions[1] / fractions[0])
    rows = []
    for outcome in ("target", "flip"):
        s = search[["image_id", "word", f"f_{outcome}", f"{outcome}_lo", f"{outcome}_reason",
                    f"{outcome}_non_monotone"]]
        rows.append(s.set_axis(["image_id", "word", "f", "f_lo", "reason", "grid_nm"], axis=1).assign(outcome=outcome))
    merged = pd.concat(rows).merge(sweep, on=["image_id", "word", "outcome"], validate="one_to_one")
    merged = merged[merged["eligible"]].reset_index(drop=True)
    reached = merged["reason"].isin(["found", "at_min"]).to_numpy()
    k = merged["k"].to_numpy()
    f_sweep = np.where(k >= 0, fractions[np.clip(k, 0, None)], np.nan)
    diff = np.abs(np.log(merged["f"].to_numpy()) - np.log(f_sweep)) / step
    agree = np.where(reached & (k >= 0), diff <= 1 + 1e-9, ~reached & (k < 0))
    # Provable flicker: held at f below the sweep's last miss, or missed at f_lo above the sweep's first hit.
    last_miss = np.where(k > 0, fractions[np.clip(k - 1, 0, None)], np.where(k < 0, fractions[-1], 0.0))
    first_hit = np.where(k >= 0, f_sweep, np.inf)
    flicker = (reached & (merged["f"].to_numpy() < last_miss)) | (merged["f_lo"].fillna(0).to_numpy() > first_hit)
    mono = merged["monotone"].to_numpy()
    outside = mono & ~agree
    both = mono & reached & (k >= 0)
    strict = mono & ~flicker  # monotone at every fraction the sweep or the search evaluated
    return {"pairs": len(merged), "monotone": int(mono.sum()), "within": float(agree[mono].mean()),
            "monotone_strict": int(strict.sum()), "within_strict": float(agree[strict].mean()),
            "outside": int(outside.sum()), "flicker": int((outside & flicker).sum()),
            "lower": int((outside & reached & (merged["f"].to_numpy() < f_sweep)).sum()),
            "reached": int(both.sum()), "within_reached": float(agree[both].mean()) if both.any() else float("nan"),
            "max_diff_steps": float(np.nanmax(diff[both])) if both.any() else float("nan"),
            "non_monotone_sweep": float(1 - mono.mean()), "non_monotone_grid": float(merged["grid_nm"].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=500, help="Shipped images (default: all 500).")
    parser.add_argument("--placement", default="paper8")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--pretrained", default=DEMO_PRETRAINED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="Keep the run folders (printed).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="typoattack-threshold-"))
    cache = work / "cache"
    common = {"model": args.model, "pretrained": args.pretrained, "data": str(SAMPLE_DIR), "limit": args.limit,
              "vocab": "goh2021", "placement": [args.placement], "device": args.device, "workers": args.workers,
              "cache_dir": str(cache)}
    fractions = sweep_fractions(common, 0.25)
    eval_cfg = load_synthetic_config(None, {**common, "fractions": [float(f) for f in fractions],
                                            "out": str(work / "eval")})
    threshold_cfg = load_threshold_config(None, {**common, "min_fraction": float(fractions[0]), "max_fraction": 0.25,
                                                 "grid": GRID, "steps": STEPS, "out": str(work / "threshold")})
    # Canvases and the classifier first, so both commands start from the same caches.
    run_task(get_task("eval"), load_synthetic_config(None, {**common, "fractions": [0.1], "out": str(work / "warmup")}),
             overwrite=True)
    print(f"{args.model}/{args.pretrained}, {args.limit} shipped images x 9 goh2021 words, {args.placement}, "
          f"{args.device}, {args.workers} workers; sweep {N_SWEEP} fractions {fractions[0]:.4f}..{fractions[-1]:.2f} "
          f"(step x{fractions[1] / fractions[0]:.3f}); threshold grid {GRID} + {STEPS} steps on the same range")
    times: dict[tuple[str, str], float] = {}
    results = {}
    # Each command cold (the mask cache emptied first) then warm, eval first: the threshold's cold run empties
    # the cache again, after eval's warm run.
    for task, cfg in (("eval", eval_cfg), ("threshold", threshold_cfg)):
        for cache_state in ("cold", "warm"):
            if cache_state == "cold":
                shutil.rmtree(cache / "masks", ignore_errors=True)
            before = len(list((cache / "masks").glob("*.npz")))
            times[task, cache_state], results[task] = timed(task, cfg)
            solved = len(list((cache / "masks").glob("*.npz"))) - before
            print(f"{cache_state:<5} {task:<10} {times[task, cache_state]:7.1f} s  "
                  f"{results[task].info.models[0]['images_encoded_this_session']:>7,} canvases encoded  "
                  f"{solved:>6,} masks solved", flush=True)
    search = pd.read_parquet(work / "threshold" / "records.parquet")
    sweep = sweep_thresholds(pd.read_parquet(work / "eval" / "records.parquet"), fractions)
    stats = compare(search, sweep, fractions)
    n_pairs = len(search)
    passes = results["threshold"].info.models[0]["images_encoded_this_session"] / n_pairs
    sweep_passes = results["eval"].info.models[0]["images_encoded_this_session"] / n_pairs
    print(f"passes per pair: {passes:.1f}  time vs 13-point sweep: {times['threshold', 'cold'] / times['eval', 'cold']:.2f}x"
          f"  thresholds within one step of the sweep: {100 * stats['within']:.1f}%")
    print(f"(canvases per pair: search {passes:.1f} (at most 1 clean + {GRID} grid + 2 x {STEPS} steps), sweep "
          f"{sweep_passes:.1f}; with a warm mask cache {times['threshold', 'warm'] / times['eval', 'warm']:.2f}x. "
          f"{stats['monotone']:,} of {stats['pairs']:,} eligible (pair, outcome) are monotone on the sweep; "
          f"{stats['reached']:,} of them reached by both: {100 * stats['within_reached']:.1f}% within one step, largest "
          f"difference {stats['max_diff_steps']:.2f} sweep steps. Outside one step: {stats['outside']:,}, "
          f"{stats['lower']:,} of them below the sweep's threshold; {stats['flicker']:,} flip back between two sweep "
          f"fractions (seen by the search). On the {stats['monotone_strict']:,} monotone at every fraction either "
          f"evaluated: {100 * stats['within_strict']:.1f}% within one step. "
          f"Non-monotone: {100 * stats['non_monotone_sweep']:.1f}% on the sweep, "
          f"{100 * stats['non_monotone_grid']:.1f}% on the search's grid.)")
    if args.keep:
        print(f"run folders: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
