"""The run folder as the records: chunks that say what they are (provenance checked on resume and
merge), one writer at a time, nothing deleted outside the folder, a table step that a kill -9
cannot leave unfinishable, and merge as file work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from typoattack.engine.rundir import LOCK_FILE, RunFolder, read_chunk_provenance, read_run_info
from typoattack.errors import OutputError
from typoattack.tasks.synthetic.config import load_synthetic_config
from runs import run_eval

ROOT = Path(__file__).resolve().parents[1]
TABLES = ("per_word.csv", "per_word.md", "confusion.csv")


def _settings(tmp_path: Path, sample_dir: Path, cache_dir: Path, name: str, **overrides) -> dict:
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: iPod}\n")
    return {"model": "typoattack-tiny", "pretrained": "seed:0", "data": str(sample_dir), "vocab": str(vocab),
            "limit": 12, "fractions": [0.07], "placement": ["paper8"], "templates": "simple", "device": "cpu",
            "workers": 0, "cache_dir": str(cache_dir), "out": str(tmp_path / name), "chunk_size": 4, **overrides}


def _run(tmp_path, sample_dir, cache_dir, name, **overrides):
    return run_eval(load_synthetic_config(None, _settings(tmp_path, sample_dir, cache_dir, name, **overrides)))


def _chunks(out: Path) -> list[Path]:
    return sorted((out / "records.parquet").rglob("*.parquet"))


def _assert_same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_parquet(a / "records.parquet"), pd.read_parquet(b / "records.parquet"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, sample_dir, cache_dir) -> Path:
    tmp = tmp_path_factory.mktemp("ref")
    return _run(tmp, sample_dir, cache_dir, "ref").out_dir


def test_records_are_a_folder_of_chunks_with_provenance(reference) -> None:
    chunks = _chunks(reference)
    assert len(chunks) == 3 and (reference / "records.parquet").is_dir()
    info = read_run_info(reference)
    for cell, path in zip(info.cells, chunks):
        prov = read_chunk_provenance(path)
        assert prov is not None and prov.cell_id == cell and prov.fingerprint == info.fingerprint
        assert prov.n_rows == len(pd.read_parquet(path)) == 4 * 3
    assert len(pd.read_parquet(reference / "records.parquet")) == info.n_records == 12 * 3
    assert not (reference / "chunks").exists()


def test_a_chunk_of_another_config_is_recomputed(tmp_path, sample_dir, cache_dir, reference) -> None:
    other = _run(tmp_path, sample_dir, cache_dir, "other", fractions=[0.1]).out_dir
    out = _run(tmp_path, sample_dir, cache_dir, "run").out_dir
    shutil.copyfile(_chunks(other)[1], _chunks(out)[1])  # same cell id, another run
    resumed = _run(tmp_path, sample_dir, cache_dir, "run")
    assert resumed.info.models[0]["images_encoded_this_session"] == 4 * 3  # one cell: 4 images x 3 canvases
    _assert_same_tables(out, reference)


def test_a_truncated_or_foreign_chunk_is_recomputed(tmp_path, sample_dir, cache_dir, reference) -> None:
    out = _run(tmp_path, sample_dir, cache_dir, "run").out_dir
    first, second, _ = _chunks(out)
    first.write_bytes(first.read_bytes()[:200])
    pd.read_parquet(second).to_parquet(second, index=False)  # readable, but says nothing of its provenance
    stray = out / "records.parquet" / "00-stray" / "00000.parquet"
    stray.parent.mkdir()
    shutil.copyfile(second, stray)
    resumed = _run(tmp_path, sample_dir, cache_dir, "run")
    assert resumed.info.models[0]["images_encoded_this_session"] == 2 * 4 * 3
    assert not stray.exists()
    _assert_same_tables(out, reference)


def test_a_second_writer_gets_one_line_naming_the_first(tmp_path, sample_dir, cache_dir) -> None:
    out = tmp_path / "busy"
    holder = RunFolder(out)
    holder.lock()
    try:
        s = _settings(tmp_path, sample_dir, cache_dir, "busy")
        args = ["eval", "--model", s["model"], "--pretrained", s["pretrained"], "--data", s["data"], "--vocab",
                s["vocab"], "--limit", "4", "--templates", "simple", "--device", "cpu", "--workers", "0",
                "--cache-dir", s["cache_dir"], "--out", str(out)]
        proc = subprocess.run([sys.executable, "-c", "from typoattack.cli import app; app()", *args],
                              capture_output=True, text=True, timeout=300)
    finally:
        holder.unlock()
    assert proc.returncode == 1
    assert f"in use by another typoattack process (PID {os.getpid()})" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / LOCK_FILE).is_file()


def test_overwrite_deletes_nothing_outside_the_folder(tmp_path, sample_dir, cache_dir) -> None:
    out = _run(tmp_path, sample_dir, cache_dir, "run").out_dir
    precious, absolute = tmp_path / "precious.txt", tmp_path / "absolute.txt"
    precious.write_text("keep")
    absolute.write_text("keep")
    (out / "link.csv").symlink_to(precious)
    info = json.loads((out / "run.json").read_text())
    info["files"] += ["../precious.txt", str(absolute), "link.csv", "..", "."]
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(OutputError, match="holds a different run"):  # another run needs --overwrite
        _run(tmp_path, sample_dir, cache_dir, "run", fractions=[0.1])
    result = run_eval(load_synthetic_config(None, _settings(tmp_path, sample_dir, cache_dir, "run", fractions=[0.04])),
                      overwrite=True)
    assert result.info.complete
    assert precious.read_text() == "keep" and absolute.read_text() == "keep"
    assert not (out / "link.csv").exists()  # the link itself, inside the folder, is removed


def test_kill_9_during_the_table_step_then_rerun_completes(tmp_path, sample_dir, cache_dir, reference) -> None:
    settings = _settings(tmp_path, sample_dir, cache_dir, "killed")
    script = (
        "import os, signal, json, sys\n"
        "import typoattack.analysis.report as report\n"
        "from typoattack.tasks.synthetic.config import load_synthetic_config\n"
        "from typoattack.engine.run import run_task\n"
        "from typoattack.tasks.registry import get_task\n"
        "def killed(records, parquet_path, csv_path, *a, **k):\n"
        "    parquet_path.write_bytes(b'half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "report.write_confusion = killed\n"
        "run_task(get_task('eval'), load_synthetic_config(None, json.loads(sys.argv[1])))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(settings)], capture_output=True, text=True,
                          timeout=300)
    out = Path(settings["out"])
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert len(_chunks(out)) == 3 and not read_run_info(out).complete
    resumed = _run(tmp_path, sample_dir, cache_dir, "killed")
    assert resumed.info.complete and resumed.info.models[0]["images_encoded_this_session"] == 0
    _assert_same_tables(out, reference)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "confusion.parquet"),
                                  pd.read_parquet(reference / "confusion.parquet"))


def test_merge_links_the_shards_chunks(tmp_path, sample_dir, cache_dir, reference) -> None:
    from typoattack.engine.merge import run_merge
    from typoattack.tasks.registry import get_tasks

    shards = [_run(tmp_path, sample_dir, cache_dir, f"s{k}", shard=f"{k}/2").out_dir for k in (1, 2)]
    result = run_merge(shards, tmp_path / "merged", get_tasks())
    merged = result.out_dir
    assert result.n_records == 36
    _assert_same_tables(merged, reference)
    linked = {p.relative_to(merged / "records.parquet"): p.stat().st_ino for p in _chunks(merged)}
    sources = {p.relative_to(s / "records.parquet"): p.stat().st_ino for s in shards for p in _chunks(s)}
    assert linked == sources  # hard links: no record was read or copied
    # A shard chunk of another run is refused in one line naming it.
    other = _run(tmp_path, sample_dir, cache_dir, "o2", shard="2/2", fractions=[0.1]).out_dir
    shutil.copyfile(_chunks(other)[0], _chunks(shards[1])[0])
    with pytest.raises(OutputError, match="belongs to another run or cell"):
        run_merge(shards, tmp_path / "merged2", get_tasks())


def test_report_out_refuses_another_run(tmp_path, sample_dir, cache_dir, reference) -> None:
    from runs import run_report

    other = _run(tmp_path, sample_dir, cache_dir, "other", fractions=[0.1]).out_dir
    before = {name: (other / name).read_bytes() for name in TABLES}
    with pytest.raises(OutputError, match="holds another run"):
        run_report([reference], other)
    assert {name: (other / name).read_bytes() for name in TABLES} == before
    # A run that another process is writing is not reported (its tables would be rewritten under it).
    holder = RunFolder(other)
    holder.lock()
    try:
        with pytest.raises(OutputError, match="in use by another typoattack process"):
            run_report([other], tmp_path / "rep")
    finally:
        holder.unlock()
    _, folder = run_report([other], tmp_path / "rep")
    assert (folder / "report.html").is_file()


def test_an_image_that_stops_decoding_is_skipped_in_its_own_cell(tmp_path, sample_dir, cache_dir) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = (sample_dir / "labels.csv").read_text().splitlines()
    (data / "labels.csv").write_text("\n".join(rows[:13]) + "\n")
    for row in rows[1:13]:
        shutil.copyfile(sample_dir / row.split(",")[0], data / row.split(",")[0])
    first = _run(tmp_path, data, cache_dir, "run", data=str(data), limit=None)
    out = first.out_dir
    ids = set(pd.read_parquet(out / "records.parquet")["image_id"])
    assert len(ids) == 12 and first.info.n_skipped == 0
    # Between two runs one image stops decoding; the cell that holds it is lost and evaluated again.
    broken = sorted(data.glob("*.JPEG"))[5]
    broken.write_bytes(broken.read_bytes()[:100])
    cells = _chunks(out)
    owner = next(p for p in cells if broken.stem.split("_")[0] in "".join(pd.read_parquet(p)["image_id"]))
    owner.unlink()
    resumed = _run(tmp_path, data, cache_dir, "run", data=str(data), limit=None)
    records = pd.read_parquet(out / "records.parquet")
    skipped = pd.read_csv(out / "skipped.csv", dtype=str)
    assert len(skipped) == 1 and resumed.info.n_skipped == 1
    assert set(records["image_id"]) | set(skipped["image_id"]) == ids
    assert not set(records["image_id"]) & set(skipped["image_id"])
    assert resumed.info.models[0]["images_encoded_this_session"] == 3 * 3  # the other 3 images of its cell
    assert [p.name for p in _chunks(out)] == [p.name for p in cells]


def test_a_checkpoint_replaced_at_the_same_path_is_another_run(tmp_path, sample_dir, cache_dir, tiny_model,
                                                                 tiny_checkpoint) -> None:
    import torch

    weights = tmp_path / "model.pt"
    shutil.copyfile(tiny_checkpoint, weights)
    first = _run(tmp_path, sample_dir, cache_dir, "run", pretrained=str(weights), limit=4)
    assert first.info.complete
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in tiny_model.model.state_dict().items()}
    torch.save(state, weights)  # new weights, same path
    with pytest.raises(OutputError, match="holds a different run"):
        _run(tmp_path, sample_dir, cache_dir, "run", pretrained=str(weights), limit=4)
    # Shards made before and after the swap are shards of different runs: merge refuses them.
    from typoattack.engine.merge import run_merge
    from typoattack.tasks.registry import get_tasks

    shard2 = _run(tmp_path, sample_dir, cache_dir, "s2", pretrained=str(weights), limit=8, shard="2/2").out_dir
    shutil.copyfile(tiny_checkpoint, weights)
    shard1 = _run(tmp_path, sample_dir, cache_dir, "s1", pretrained=str(weights), limit=8, shard="1/2").out_dir
    with pytest.raises(OutputError, match="shards of different runs"):
        run_merge([shard1, shard2], tmp_path / "merged", get_tasks())


def test_report_on_unreadable_records_is_one_line(tmp_path, reference) -> None:
    from typer.testing import CliRunner

    from typoattack.cli import app

    runner = CliRunner()
    broken = tmp_path / "broken"
    shutil.copytree(reference, broken)
    chunk = _chunks(broken)[1]
    chunk.write_bytes(chunk.read_bytes()[:300])
    result = runner.invoke(app, ["report", str(broken)])
    assert result.exit_code == 1 and "cannot read the records" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    lacking = tmp_path / "lacking"
    shutil.copytree(reference, lacking)
    for path in _chunks(lacking):
        pd.read_parquet(path).drop(columns=["pred_index"]).to_parquet(path, index=False)
    result = runner.invoke(app, ["report", str(lacking)])
    assert result.exit_code == 1 and "lack a column" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("key, value", [("cells", 5), ("complete", "yes"), ("n_items", True), ("shard", [1, 2]),
                                        ("files", "per_word.csv")])
def test_run_json_of_the_wrong_types_is_one_line(tmp_path, reference, key, value) -> None:
    from typer.testing import CliRunner

    from typoattack.cli import app

    edited = tmp_path / "edited"
    shutil.copytree(reference, edited)
    info = json.loads((edited / "run.json").read_text())
    info[key] = value
    (edited / "run.json").write_text(json.dumps(info))
    result = CliRunner().invoke(app, ["report", str(edited)])
    assert result.exit_code == 1 and f"`{key}` should be" in result.output, result.output
    assert "Traceback" not in result.output
