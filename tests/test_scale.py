"""Beyond one process: cells on a local Ray cluster, `--shard K/N` with `typoattack merge`, and the
same tables either way (the CI config on 40 of its images, 4 cells of 10, simple templates)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from typoattack.analysis.report import CONFUSION_CSV, PER_WORD_CSV, PER_WORD_MD
from typoattack.engine.rundir import RECORDS_FILE, SKIPPED_CSV
from typoattack.cli import app
from typoattack.config.parsing import parse_shard
from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.config.types import Executor, ShardSpec
from typoattack.errors import ConfigError
from typoattack.engine import rundir
from typoattack.cluster import RAY_INSTALL_HINT
from typoattack.engine.executors import FAULT_MARKER_ENV
from runs import run_eval

LIMIT, CHUNK = 40, 10
N_CELLS = LIMIT // CHUNK


def _config(out: Path, cache_dir: Path, **overrides):
    # The 7 simple templates: a cold classifier cache costs seconds instead of half a minute.
    return load_synthetic_config("ci", {"limit": LIMIT, "chunk_size": CHUNK, "templates": "simple", "out": str(out),
                                  "cache_dir": str(cache_dir), **overrides})


def _assert_same_tables(a: Path, b: Path) -> None:
    """Records, per_word, confusion and skipped identical (no near-tie flip allowed: the tiny model's
    logits come out bit-identical whatever the worker's thread count, measured 0 of 1,480 differing)."""
    pd.testing.assert_frame_equal(pd.read_parquet(a / RECORDS_FILE), pd.read_parquet(b / RECORDS_FILE))
    for name in (PER_WORD_CSV, PER_WORD_MD, CONFUSION_CSV, SKIPPED_CSV):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("scale") / "local"
    result = run_eval(_config(out, cache_dir))
    assert len(result.info.cells) == N_CELLS
    return out


@pytest.fixture(scope="module")
def fault_marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fault") / "kill-next-task"


@pytest.fixture(scope="module")
def ray_cluster(fault_marker):
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Workers inherit the driver's environment: the fault hook is armed by creating the file.
    os.environ[FAULT_MARKER_ENV] = str(fault_marker)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop(FAULT_MARKER_ENV, None)


def test_shard_is_parsed_and_validated() -> None:
    assert parse_shard("2/4") == ShardSpec(2, 4)
    assert parse_shard(None) is None
    for bad in ("0/2", "3/2", "1/0", "a/b", "2", "1/2/3"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)


def test_fingerprint_ignores_executor_and_shard(tmp_path, cache_dir) -> None:
    base = _config(tmp_path, cache_dir)
    other = _config(tmp_path, cache_dir, executor="ray", ray_address="auto", shard="2/3")
    assert other.executor is Executor.RAY and other.shard == ShardSpec(2, 3)
    assert base.fingerprint() == other.fingerprint()
    assert base.fingerprint() != _config(tmp_path, cache_dir, seed=1).fingerprint()
    with pytest.raises(ConfigError, match="executor"):
        _config(tmp_path, cache_dir, executor="spark")


def test_shards_partition_the_cells() -> None:
    cells = [f"c{i}" for i in range(11)]
    for n in (1, 2, 3, 11, 12):
        parts = [rundir.select_shard(cells, ShardSpec(k, n)) for k in range(1, n + 1)]
        assert sorted(c for p in parts for c in p) == sorted(cells)
    assert rundir.select_shard(cells, None) == cells


def test_ray_run_equals_local_run(ray_cluster, local_run, tmp_path, cache_dir) -> None:
    result = run_eval(_config(tmp_path / "ray", cache_dir, executor="ray"))
    assert result.info.executor == "ray" and result.info.chunks_done == N_CELLS
    _assert_same_tables(local_run, tmp_path / "ray")


def test_killed_worker_is_retried(ray_cluster, fault_marker, local_run, tmp_path, cache_dir) -> None:
    fault_marker.touch()
    result = run_eval(_config(tmp_path / "ray", cache_dir, executor="ray"))
    assert not fault_marker.exists(), "no worker took the fault"
    assert result.info.complete
    _assert_same_tables(local_run, tmp_path / "ray")


def test_ray_run_resumes_from_chunks(ray_cluster, local_run, tmp_path, cache_dir) -> None:
    out = tmp_path / "ray"
    shutil.copytree(local_run, out)
    cells = json.loads((out / "run.json").read_text())["cells"]
    rundir.RunFolder(out).get_chunk_path(cells[1]).unlink()  # as if the driver had been killed before committing it
    result = run_eval(_config(out, cache_dir, executor="ray"))
    assert result.info.models[0]["images_encoded_this_session"] == CHUNK * (1 + 36)
    _assert_same_tables(local_run, out)


def test_shards_merged_equal_local_run(local_run, tmp_path, cache_dir) -> None:
    shards = [tmp_path / f"shard{k}" for k in (1, 2)]
    for k, out in enumerate(shards, 1):
        result = run_eval(_config(out, cache_dir, shard=f"{k}/2"))
        assert result.info.shard["cells"] == result.info.cells[k - 1::2]
        assert not (out / PER_WORD_CSV).exists()
    merged = CliRunner().invoke(app, ["merge", *map(str, shards), "--out", str(tmp_path / "merged")])
    assert merged.exit_code == 0, merged.output
    _assert_same_tables(local_run, tmp_path / "merged")

    def refused(*dirs: Path, match: str) -> None:
        r = CliRunner().invoke(app, ["merge", *map(str, dirs), "--out", str(tmp_path / "bad")])
        assert r.exit_code == 1, r.output
        assert r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1 and match in r.output, r.output

    refused(shards[0], match="cells are missing")
    shutil.copytree(shards[0], tmp_path / "copy")
    refused(shards[0], shards[1], tmp_path / "copy", match="is in both")
    run_eval(_config(tmp_path / "other", cache_dir, shard="2/2", seed=1))
    refused(shards[0], tmp_path / "other", match="shards of different runs")
    refused(shards[0], local_run, match="not a shard")
    reported = CliRunner().invoke(app, ["report", str(shards[0])])
    assert reported.exit_code == 1 and "is shard 1/2 of a run" in reported.output, reported.output


def test_shard_folder_resumes_and_refuses_another_shard(tmp_path, cache_dir) -> None:
    out = tmp_path / "s"
    run_eval(_config(out, cache_dir, shard="1/4"))
    resumed = run_eval(_config(out, cache_dir, shard="1/4"))
    assert resumed.info.shard["cells"] == resumed.info.cells[:1]
    assert resumed.info.models[0]["images_encoded_this_session"] == 0
    r = CliRunner().invoke(app, ["eval", "--config", "ci", "--limit", str(LIMIT), "--chunk-size", str(CHUNK),
                                 "--templates", "simple", "--cache-dir", str(cache_dir), "--out", str(out),
                                 "--shard", "2/4"])
    assert r.exit_code == 1 and "holds shard 1/4 of this run, not shard 2/4" in r.output, r.output


def test_ray_missing_gives_install_hint(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = CliRunner().invoke(app, ["eval", "--config", "ci", "--out", str(tmp_path / "o"), "--executor", "ray"])
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"Error: {RAY_INSTALL_HINT}"
    assert not (tmp_path / "o").exists()
