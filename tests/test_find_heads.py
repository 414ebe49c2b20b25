"""find-heads: the seeded split, the greedy rule, text-attention scores, that no reported number
comes from the images the heads were selected on, and the task on the engine: a run folder with
heads.yaml inside (the heads the search chose before it became a task), one heads file per model,
resume without recomputing, shards merged equal to the single run, and the old `--out FILE.yaml`
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import typoattack.tasks.heads.task
import typoattack.tasks.sweep
from typoattack.cli import app
from typoattack.config.defences import load_heads_file
from typoattack.defences.find_heads import MAX_REJECTED, Accuracy, HeadSearch, search_heads, split_images
from typoattack.engine.rundir import read_run_info
from typoattack.errors import ConfigError, DataError
from typoattack.tasks.heads.config import load_find_heads_config
from typoattack.tasks.heads.tables import HEADS_COLUMNS, build_search_records, to_search

runner = CliRunner()
TINY = ["--templates", "simple", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def pizza(tmp_path_factory) -> Path:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n")
    return vocab


def _invoke(*args: str) -> str:
    result = runner.invoke(app, ["find-heads", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_split_is_seeded_disjoint_and_complete() -> None:
    rows = np.arange(3, 40)
    sel, held = split_images(rows, 0)
    assert not set(sel) & set(held) and sorted([*sel, *held]) == list(rows)
    assert abs(len(sel) - len(held)) <= 1
    again, _ = split_images(rows, 0)
    other, _ = split_images(rows, 1)
    assert np.array_equal(sel, again) and not np.array_equal(sel, other)
    with pytest.raises(DataError, match="at least 2 images"):
        split_images(np.arange(1), 0)


def _fake(gain: dict, clean_cost: dict, heldout_value: float = 0.5):
    """evaluate(half, heads): typographic accuracy 0.2 + sum of the heads' gains, clean 0.8 - costs."""
    calls: list[tuple[str, tuple]] = []

    def evaluate(half, heads):
        calls.append((half, tuple(heads)))
        if half == "heldout":
            return Accuracy(heldout_value, heldout_value)
        return Accuracy(0.8 - sum(clean_cost.get(h, 0) for h in heads), 0.2 + sum(gain.get(h, 0) for h in heads))
    return evaluate, calls


def test_greedy_keeps_gaining_heads_in_score_order_and_stops_on_clean_drop() -> None:
    scores = np.array([[0.9, 0.1], [0.5, 0.7]])  # order: 0.0, 1.1, 1.0, 0.1
    evaluate, calls = _fake({(0, 0): 0.05, (1, 1): 0.0005, (1, 0): 0.02, (0, 1): 0.1},
                            {(1, 0): 0.02})
    search = search_heads(scores, evaluate)
    # 1.1 gains less than 0.001 (rejected); 1.0 gains but drops clean by 0.02: kept, then stop.
    assert search.heads == [(0, 0), (1, 0)]
    assert [h for h, _, kept in search.tried] == [(0, 0), (1, 1), (1, 0)]
    assert "dropped 0.0200" in search.stopped
    assert [s.attacked_top1 for _, s, _ in search.steps] == pytest.approx([0.25, 0.27])
    # Held-out accuracy is measured for the baseline and each kept step, never for rejected heads.
    assert [c for c in calls if c[0] == "heldout"] == [("heldout", ()), ("heldout", ((0, 0),)),
                                                       ("heldout", ((0, 0), (1, 0)))]


def test_greedy_stops_after_too_many_rejections_and_ignores_heldout() -> None:
    scores = np.arange(16, dtype=float).reshape(4, 4)[::-1, ::-1].copy()  # 0.0 first ... 3.3 last
    gains = {(3, 3): 0.5}  # the last head would help, but the search gives up before it
    first, _ = _fake(gains, {}, heldout_value=0.1)
    second, _ = _fake(gains, {}, heldout_value=0.9)
    a, b = search_heads(scores, first), search_heads(scores, second)
    assert a.heads == b.heads == []
    assert len(a.tried) == MAX_REJECTED + 1 and "rejected" in a.stopped


def test_round_trip_of_the_records() -> None:
    scores = np.array([[0.9, 0.1], [0.5, 0.7]])
    search = HeadSearch([(0, 0), (1, 0)], scores, (Accuracy(0.8, 0.2), Accuracy(0.7, 0.3)),
                        [((0, 0), Accuracy(0.8, 0.25), Accuracy(0.7, 0.35)), ((1, 0), Accuracy(0.78, 0.27),
                                                                              Accuracy(0.6, 0.4))],
                        [((0, 0), Accuracy(0.8, 0.25), True), ((1, 1), Accuracy(0.8, 0.2), False),
                         ((1, 0), Accuracy(0.78, 0.27), True)], "clean top-1 dropped")
    from typoattack.config.types import ModelSpec

    records = build_search_records(ModelSpec("m", None), "w", search, 3, 4, ["a", "b"])
    assert list(records.columns) == list(HEADS_COLUMNS) and len(records) == 1 + scores.size
    assert records["step"].tolist() == [0, 1, 2, 3, 4]
    assert records[["layer", "head"]].values.tolist() == [[-1, -1], [0, 0], [1, 1], [1, 0], [0, 1]]
    assert records["tried"].tolist() == [True, True, True, True, False]
    assert records["n_kept"].tolist() == [0, 1, 1, 2, 2]
    assert records["heldout_images"].tolist() == [["a", "b"], [], [], [], []]
    back = to_search(records)
    assert (back.heads, back.baseline, back.steps, back.tried, back.stopped) == (
        search.heads, search.baseline, search.steps, search.tried, search.stopped)
    assert np.array_equal(back.scores, scores)


def test_find_heads_never_reports_on_selection_images(tmp_path, sample_dir, cache_dir, pizza, monkeypatch) -> None:
    scored: list[set] = []
    evaluated: list[tuple[frozenset, tuple]] = []
    real_score = typoattack.tasks.heads.task.score_heads
    real_eval = typoattack.tasks.sweep.evaluate_shard

    def score(loaded, canvases, rows, *args):
        scored.append({canvases.items[int(r)].image_id for r in rows})
        return real_score(loaded, canvases, rows, *args)

    def shard(loaded, encoder, canvases, rows, *args):
        evaluated.append((frozenset(canvases.items[int(r)].image_id for r in rows),
                          encoder.defences.variants[0].heads))
        return real_eval(loaded, encoder, canvases, rows, *args)

    monkeypatch.setattr(typoattack.tasks.heads.task, "score_heads", score)
    monkeypatch.setattr(typoattack.tasks.sweep, "evaluate_shard", shard)
    out = tmp_path / "run"
    _invoke("--out", str(out), "--model", "typoattack-tiny", "--pretrained", "seed:0", "--data", str(sample_dir),
            "--limit", "8", "--vocab", str(pizza), "--fraction", "0.1", *TINY, "--cache-dir", str(cache_dir))
    doc = yaml.safe_load((out / "heads.yaml").read_text())
    heldout = set(doc["heldout_images"])
    (selection,) = scored
    assert len(selection) == len(heldout) == 4 and not selection & heldout
    # Baseline on each half first; every evaluation sees one half only.
    assert evaluated[0] == (frozenset(selection), ()) and evaluated[1] == (frozenset(heldout), ())
    assert all(ids in (frozenset(selection), frozenset(heldout)) for ids, _ in evaluated)
    # The held-out numbers in heads.yaml are the held-out evaluations of the kept sets.
    kept_sets = [tuple(tuple(int(v) for v in h.split(".")) for h in s["heads"]) for s in doc["steps"]]
    assert [heads for ids, heads in evaluated if ids == frozenset(heldout)] == [(), *kept_sets]
    assert doc["n_selection"] == 4 and doc["n_heldout"] == 4 and len(doc["scores"]) == 4
    assert all(0 <= v <= 1 for v in doc["scores"].values()) and max(doc["scores"].values()) > 0
    assert doc["heads"] == (doc["steps"][-1]["heads"] if doc["steps"] else [])


def test_the_run_folder_holds_the_heads_the_search_chose_before(tmp_path, sample_dir, cache_dir, pizza) -> None:
    """The demo reader on 32 images (seed 1): the heads `find-heads --out heads.yaml` chose before it
    ran on the engine, in heads.yaml inside the run folder, which `--defence heads:@` reads."""
    out = tmp_path / "run"
    text = _invoke("--out", str(out), "--model", "typoattack-reader-tiny", "--pretrained", "ci500", "--data",
                   str(sample_dir), "--limit", "32", "--seed", "1", "--vocab", str(pizza), "--fraction", "0.1", *TINY,
                   "--cache-dir", str(cache_dir))
    doc = yaml.safe_load((out / "heads.yaml").read_text())
    assert doc["heads"] == ["0.3", "0.1"]
    assert doc["stopped"] == "clean top-1 dropped 0.0625 from the baseline (more than 0.01) with head 0.1"
    assert [(t["head"], t["kept"]) for t in doc["tried"]] == [("0.3", True), ("0.0", False), ("0.1", True)]
    assert list(doc)[:3] == ["heads", "model", "pretrained"] and "seconds" not in doc  # run.json has the timings
    assert load_heads_file(out / "heads.yaml") == ((0, 1), (0, 3))
    assert "Heads: 0.3,0.1 (clean top-1 dropped 0.0625" in text
    assert "  selection: clean top-1 " in text and "  held-out: clean top-1 " in text
    assert f"evaluate with --defence heads:@{out}/heads.yaml" in text
    summary = pd.read_csv(out / "heads_summary.csv", keep_default_na=False)
    assert summary[["model", "heads", "n_heads", "file"]].values.tolist() == [
        ["typoattack-reader-tiny", "0.3,0.1", 2, "heads.yaml"]]
    assert not (out / "heads").exists()


def _args(cache_dir: Path, sample_dir: Path, pizza: Path, *models: str) -> list[str]:
    pairs = [a for seed in models for a in ("--model", "typoattack-tiny", "--pretrained", seed)]
    return [*pairs, "--data", str(sample_dir), "--limit", "16", "--seed", "1", "--vocab", str(pizza),
            "--fraction", "0.1", *TINY, "--cache-dir", str(cache_dir)]


def test_each_model_gets_its_heads_file_and_a_rerun_recomputes_nothing(tmp_path, sample_dir, cache_dir, pizza,
                                                                       monkeypatch) -> None:
    both = tmp_path / "both"
    args = _args(cache_dir, sample_dir, pizza, "seed:0", "seed:2")
    text = _invoke(*args, "--out", str(both))
    files = sorted(p.name for p in (both / "heads").iterdir())
    assert files == ["typoattack-tiny_seed_0.yaml", "typoattack-tiny_seed_2.yaml"]
    assert not (both / "heads.yaml").exists()
    assert "typoattack-tiny/seed:2: Heads: 0.1 (every head was tried)" in text
    assert f"heads:@{both}/heads/typoattack-tiny_seed_2.yaml" in text
    # A model's file is the heads.yaml of a run of that model alone.
    alone = tmp_path / "alone"
    _invoke(*_args(cache_dir, sample_dir, pizza, "seed:2"), "--out", str(alone))
    assert (both / "heads" / "typoattack-tiny_seed_2.yaml").read_text() == (alone / "heads.yaml").read_text()
    assert pd.read_csv(both / "heads_summary.csv", keep_default_na=False)["heads"].tolist() == ["", "0.1"]

    # Rerun: both models are committed; nothing is searched again, the files are rewritten the same.
    chunks = [p for p in both.rglob("*.parquet") if p.is_file()]
    before = {p: p.read_bytes() for p in [*both.rglob("*.yaml"), *chunks, both / "heads_summary.csv"]}
    mtimes = {p: p.stat().st_mtime_ns for p in chunks}

    def fail(*args):
        raise AssertionError("a finished model was searched again")

    monkeypatch.setattr(typoattack.tasks.heads.task, "score_heads", fail)
    _invoke(*args, "--out", str(both))
    info = read_run_info(both)
    assert info.complete and info.chunks_done == info.chunks_total == 2
    assert {p: p.read_bytes() for p in before} == before and {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert json.loads((both / "run.json").read_text())["models"][1]["weights_id"] == "typoattack-tiny|seed:2"


def test_two_shards_merged_equal_the_single_run(tmp_path, sample_dir, cache_dir, pizza) -> None:
    args = _args(cache_dir, sample_dir, pizza, "seed:0", "seed:2")
    single = tmp_path / "single"
    _invoke(*args, "--out", str(single))
    shards = [tmp_path / "s1", tmp_path / "s2"]
    for k, folder in enumerate(shards, start=1):
        _invoke(*args, "--shard", f"{k}/2", "--out", str(folder))
        assert len(read_run_info(folder).shard["cells"]) == 1 and not (folder / "heads").exists()
    result = runner.invoke(app, ["merge", *map(str, shards), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged"
    for name in ("heads/typoattack-tiny_seed_0.yaml", "heads/typoattack-tiny_seed_2.yaml", "heads_summary.csv"):
        assert (merged / name).read_text() == (single / name).read_text(), name
    pd.testing.assert_frame_equal(pd.read_parquet(merged / "records.parquet"),
                                  pd.read_parquet(single / "records.parquet"))


@pytest.mark.parametrize("out", ["heads.yaml", "sub/heads.YML"])
def test_out_naming_a_yaml_file_is_one_line(out, tmp_path, sample_dir, cache_dir, pizza) -> None:
    result = runner.invoke(app, ["find-heads", *_args(cache_dir, sample_dir, pizza, "seed:0"), "--out",
                                 str(tmp_path / out)], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [x for x in result.output.splitlines() if x.strip()]
    assert "writes a run folder" in line and "heads.yaml inside it" in line
    assert not (tmp_path / out).exists()
    (tmp_path / "folder.yaml").mkdir()  # an existing folder is a folder, whatever its name
    cfg = load_find_heads_config(None, {"model": ["m"], "data": str(sample_dir), "out": str(tmp_path / "folder.yaml")})
    assert cfg.out == str(tmp_path / "folder.yaml")


def test_an_eval_config_reads_without_the_keys_find_heads_has_no_use_for(tmp_path) -> None:
    cfg = load_find_heads_config("ci", {"out": str(tmp_path / "run")})  # ci.yaml sets chunk_size
    assert cfg.models[0].name == "typoattack-reader-tiny" and cfg.fractions == (0.04, 0.10)
    assert cfg.chunk_size is None and cfg.defences == ("none",)
    config = tmp_path / "eval.yaml"
    config.write_text("model: m\ndata: sample\ndefences: [none, 'heads:@run/heads.yaml']\ncompile: true\nfill: red\n")
    cfg = load_find_heads_config(str(config), {})
    assert cfg.defences == ("none",) and cfg.compile is False and cfg.style.fill == (255, 0, 0)
    config.write_text("model: m\ndata: sample\nchunksize: 3\n")
    with pytest.raises(ConfigError, match="unknown config key `chunksize`"):
        load_find_heads_config(str(config), {})


def test_find_heads_on_a_resnet_is_one_red_line(tmp_path, sample_dir, pizza) -> None:
    import open_clip

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "typoattack-test-rn2.json").write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / "configs")
    result = runner.invoke(app, ["find-heads", "--out", str(tmp_path / "run"), "--model", "typoattack-test-rn2",
                                 "--pretrained", "seed:0", "--data", str(sample_dir), "--limit", "2", "--vocab",
                                 str(pizza), "--fraction", "0.2", "--device", "cpu", "--workers", "0", "--cache-dir",
                                 str(tmp_path / "c")])
    assert result.exit_code == 1 and "ModifiedResNet" in result.output and "Traceback" not in result.output
