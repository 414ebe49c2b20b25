"""`typoattack real` beyond one process: cells on a local Ray cluster, `--shard K/N` with
`typoattack merge`, and the same tables either way (a PAINT-format folder of 10 photos with one
unreadable file, two tiny models, cells of 3 photos: 8 cells)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from real_datasets_builders import make_named_folder
from typoattack.tasks.real.tables import PER_ATTACK_WORD_CSV, SUMMARY_CSV
from typoattack.engine.rundir import RECORDS_FILE, SKIPPED_CSV
from typoattack.cli import app
from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.tasks.real.config import load_real_config
from typoattack.config.types import Executor, ShardSpec
from typoattack.errors import ConfigError
from typoattack.backends.open_clip.model import TINY_MODEL
from typoattack.engine import rundir
from typoattack.cluster import RAY_INSTALL_HINT
from runs import run_eval, run_real

CHUNK = 3
N_PHOTOS = 10  # make_named_folder's photos; one more file is unreadable
N_CELLS = 2 * 4  # two models x ceil(10 / 3)
BROKEN = "label=dog_text=broken.png"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    root = make_named_folder(tmp_path_factory.mktemp("real-scale") / "paint",
                             sub="typographic_real_data_from_PAINT/typographic_attacks", numbered=True)
    folder = next(p.parent for p in root.rglob("*.png"))
    (folder / BROKEN).write_bytes(b"")
    return str(root)


def _settings(data: str, out: Path, cache_dir: Path, **extra) -> dict:
    return {"dataset": "paint", "data": data, "protocol": "union", "model": [TINY_MODEL, TINY_MODEL],
            "pretrained": ["seed:0", "seed:1"], "device": "cpu", "workers": 1, "chunk_size": CHUNK,
            "cache_dir": str(cache_dir), "out": str(out), **extra}


def _args(data: str, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["real", "--dataset", "paint", "--data", data, "--model", TINY_MODEL, "--pretrained", "seed:0",
            "--model", TINY_MODEL, "--pretrained", "seed:1", "--device", "cpu", "--workers", "1", "--chunk-size",
            str(CHUNK), "--cache-dir", str(cache_dir), "--out", str(out), *extra]


def _assert_same_tables(a: Path, b: Path, same_skip_reasons: bool = True) -> None:
    """Records identical, and the summary, per-attack-word and skipped tables byte for byte (a
    resumed chunk's skipped photos only by id: their reason was not kept)."""
    pd.testing.assert_frame_equal(pd.read_parquet(a / RECORDS_FILE), pd.read_parquet(b / RECORDS_FILE))
    for name in (SUMMARY_CSV, PER_ATTACK_WORD_CSV) + ((SKIPPED_CSV,) if same_skip_reasons else ()):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    skipped = [list(pd.read_csv(d / SKIPPED_CSV)["image_id"]) for d in (a, b)]
    assert skipped[0] == skipped[1] and len(skipped[0]) == 1 and skipped[0][0].endswith(BROKEN)


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory, cache_dir) -> Path:
    out = tmp_path_factory.mktemp("real-scale-runs") / "local"
    result = run_real(load_real_config(None, _settings(data, out, cache_dir)))
    assert result.info.executor == "local" and len(result.info.cells) == N_CELLS
    assert result.n_records == 2 * N_PHOTOS and result.info.n_skipped == 1
    return out


def test_fingerprint_ignores_executor_and_shard(data, tmp_path, cache_dir) -> None:
    base = load_real_config(None, _settings(data, tmp_path, cache_dir))
    other = load_real_config(None, _settings(data, tmp_path, cache_dir, executor="ray", ray_address="auto",
                                             shard="2/3"))
    assert other.executor is Executor.RAY and other.shard == ShardSpec(2, 3) and other.ray_address == "auto"
    assert base.executor is Executor.LOCAL and base.shard is None
    assert base.fingerprint() == other.fingerprint()
    assert base.fingerprint() != load_real_config(None, _settings(data, tmp_path, cache_dir, seed=1)).fingerprint()
    with pytest.raises(ConfigError, match="executor"):
        load_real_config(None, _settings(data, tmp_path, cache_dir, executor="spark"))
    with pytest.raises(ConfigError, match="shard"):
        load_real_config(None, _settings(data, tmp_path, cache_dir, shard="3/2"))


def test_ray_run_equals_local_run(ray_cluster, data, local_run, tmp_path, cache_dir) -> None:
    result = CliRunner().invoke(app, _args(data, tmp_path / "ray", cache_dir, "--executor", "ray"))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert info["executor"] == "ray" and info["complete"] and info["chunks_done"] == N_CELLS
    assert [m["images_encoded_this_session"] for m in info["models"]] == [N_PHOTOS, N_PHOTOS]
    assert [m["n_images"] for m in info["models"]] == [N_PHOTOS, N_PHOTOS]
    assert all(m["weights_id"] and m["input_size"] == [224, 224] for m in info["models"])
    _assert_same_tables(local_run, tmp_path / "ray")


def test_ray_run_resumes_from_chunks(ray_cluster, data, local_run, tmp_path, cache_dir) -> None:
    out = tmp_path / "ray"
    shutil.copytree(local_run, out)
    cells = json.loads((out / "run.json").read_text())["cells"]
    rundir.RunFolder(out).get_chunk_path(cells[5]).unlink()  # model 1's second cell
    result = run_real(load_real_config(None, _settings(data, out, cache_dir, executor="ray")))
    assert [m["images_encoded_this_session"] for m in result.info.models] == [0, CHUNK]
    _assert_same_tables(local_run, out, same_skip_reasons=False)


def test_shards_merged_equal_local_run(data, local_run, tmp_path, cache_dir) -> None:
    shards = [tmp_path / f"shard{k}" for k in (1, 2)]
    for k, out in enumerate(shards, 1):
        result = CliRunner().invoke(app, _args(data, out, cache_dir, "--shard", f"{k}/2"))
        assert result.exit_code == 0, result.output
        assert f"Shard {k}/2: {N_CELLS // 2} of {N_CELLS} cells" in " ".join(result.output.split()), result.output
        info = json.loads((out / "run.json").read_text())
        assert info["shard"]["cells"] == info["cells"][k - 1::2] and info["complete"]
        assert not (out / SUMMARY_CSV).exists() and not (out / PER_ATTACK_WORD_CSV).exists()
    merged = CliRunner().invoke(app, ["merge", *map(str, shards), "--out", str(tmp_path / "merged")])
    assert merged.exit_code == 0, merged.output
    text = " ".join(merged.output.split())
    assert "Real typographic attacks: paint" in text and f"({2 * N_PHOTOS} records, {N_CELLS} cells)" in text, text
    _assert_same_tables(local_run, tmp_path / "merged")
    info = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert info["task"] == "real" and info["complete"] and info["shard"] is None and info["n_skipped"] == 1
    assert info["config"]["shard"] is None and len(info["merged_from"]) == 2
    assert [m["images_encoded_this_session"] for m in info["models"]] == [N_PHOTOS, N_PHOTOS]
    reported = CliRunner().invoke(app, ["report", str(tmp_path / "merged"), "--out", str(tmp_path / "report")])
    assert reported.exit_code == 0, reported.output

    def refused(*dirs: Path, match: str) -> None:
        r = CliRunner().invoke(app, ["merge", *map(str, dirs), "--out", str(tmp_path / "bad")])
        assert r.exit_code == 1, r.output
        assert r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1 and match in r.output, r.output

    refused(shards[0], match="cells are missing")
    refused(shards[0], local_run, match="not a shard")
    eval_shard = tmp_path / "eval-shard"
    run_eval(load_synthetic_config("ci", {"limit": 4, "chunk_size": 2, "templates": "simple", "shard": "2/2",
                                           "out": str(eval_shard), "cache_dir": str(cache_dir)}))
    refused(shards[0], eval_shard, match="is a shard of `typoattack real` and")
    refused(eval_shard, shards[1], match="is a shard of `typoattack eval` and")
    reported = CliRunner().invoke(app, ["report", str(shards[0])])
    assert reported.exit_code == 1 and "is shard 1/2 of a run" in reported.output, reported.output


def test_shard_folder_resumes_and_refuses_another_shard(data, tmp_path, cache_dir) -> None:
    out = tmp_path / "s"
    first = run_real(load_real_config(None, _settings(data, out, cache_dir, shard="1/8")))
    assert first.info.shard["cells"] == first.info.cells[:1] and first.n_records == CHUNK
    records = pd.read_parquet(out / RECORDS_FILE)
    resumed = run_real(load_real_config(None, _settings(data, out, cache_dir, shard="1/8")))
    assert [m["images_encoded_this_session"] for m in resumed.info.models] == [0, 0]
    pd.testing.assert_frame_equal(records, pd.read_parquet(out / RECORDS_FILE))
    r = CliRunner().invoke(app, _args(data, out, cache_dir, "--shard", "2/8"))
    assert r.exit_code == 1 and "holds shard 1/8 of this run, not shard 2/8" in r.output, r.output


def test_ray_missing_gives_install_hint(monkeypatch, data, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    r = CliRunner().invoke(app, _args(data, tmp_path / "o", tmp_path / "cache", "--executor", "ray"))
    assert r.exit_code == 1, r.output
    assert r.output.strip() == f"Error: {RAY_INSTALL_HINT}"
    assert not (tmp_path / "o").exists()
