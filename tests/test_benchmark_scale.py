"""The scale benchmark's fabricated run (benchmarks/scale.py) is a complete, realistic `eval` run
and its shards are shards of that run, at a small size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd

from typoattack.constants import CLEAN_WORD
from typoattack.engine.merge import check_shard_set
from typoattack.engine.rundir import read_run_info
from typoattack.records import RECORD_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
RECORDS_PER_IMAGE = 3993  # 998 words x 2 fractions x 2 placements, plus the clean record


def load_scale_benchmark() -> ModuleType:
    """benchmarks/scale.py as a module (benchmarks/ is no package)."""
    name = "typoattack_benchmark_scale"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_scale_benchmark_fabricates_a_complete_run_and_its_shards(tmp_path) -> None:
    scale = load_scale_benchmark()
    # 10 images (enough for clean top-1 to be 70% exactly) in 4 cells of at most 3 images, 2 shards.
    made = scale.fabricate(40_000, tmp_path, shards=2, images_per_cell=3)
    assert made.n_records == 10 * RECORDS_PER_IMAGE and made.n_cells == 4

    info = read_run_info(made.run_dir)
    assert info.task == "eval" and info.complete and info.shard is None
    assert info.n_records == made.n_records and info.chunks_done == info.chunks_total == len(info.cells) == 4
    assert info.config["models"][0]["name"] == "typoattack-reader-tiny" and info.config["styles"]

    records = pd.read_parquet(made.run_dir / "records.parquet")
    assert len(records) == made.n_records
    assert list(records.columns) == RECORD_COLUMNS
    assert records["p_target"].dtype == np.float32 and records["p_true"].dtype == np.float32
    clean = records[records["word"] == CLEAN_WORD]
    assert clean["image_id"].is_unique and set(clean["image_id"]) == set(records["image_id"])
    assert clean["image_id"].str.match(r"^ILSVRC2012_val_\d{8}$").all()
    assert 0.6 <= (clean["pred_index"] == clean["true_index"]).mean() <= 0.8
    attacked = records[records["word"] != CLEAN_WORD]
    assert attacked["word"].nunique() == 998 and attacked["pred_index"].nunique() >= 500
    assert 0.05 <= (attacked["pred_index"] == attacked["target_index"]).mean() <= 0.2
    assert ((attacked["pixel_cover"] - attacked["fraction"]).abs() < 0.25 * attacked["fraction"]).all()
    top5 = np.stack(records["pred_top5"].to_numpy()[:1000])
    assert top5.shape == (1000, 5) and (top5[:, 0] == records["pred_index"].to_numpy()[:1000]).all()

    shards = [read_run_info(d) for d in made.shard_dirs]
    assert [(s.shard["index"], s.shard["count"]) for s in shards] == [(1, 2), (2, 2)]
    assert all(s.complete and s.fingerprint == info.fingerprint and s.cells == info.cells for s in shards)
    assert list(check_shard_set(made.shard_dirs, shards)) == info.cells  # what `typoattack merge` checks
    assert sum(s.n_records for s in shards) == made.n_records
