"""`typoattack report` over one or several runs: every file, sizes, agreement with per_word.csv."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from typoattack.analysis import plots
from typoattack.analysis.metrics import HEATMAP_MIN_IMAGES, HEATMAP_MIN_SHARE, TOP_CONFUSIONS_PER_WORD
from typoattack.cli import app
from typoattack.analysis.examples import format_condition, select_example_conditions, select_example_images
from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.errors import OutputError
from runs import run_report
from runs import run_eval

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, sample_dir, cache_dir) -> tuple[Path, Path]:
    """Two small complete runs of different weights (seed:0 and seed:1) over a 2-fraction sweep."""
    root = tmp_path_factory.mktemp("runs")
    vocab = root / "vocab.yaml"
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: $$$, target: piggy bank}\n")
    dirs = []
    for seed in (0, 1):
        cfg = load_synthetic_config(None, {
            "data": str(sample_dir), "model": "typoattack-tiny", "pretrained": f"seed:{seed}", "vocab": str(vocab),
            "limit": 12, "fractions": [0.04, 0.1], "placement": ["paper8", "random"], "templates": "simple",
            "device": "cpu", "workers": 0, "cache_dir": str(cache_dir), "out": str(root / f"run{seed}")})
        run_eval(cfg)
        dirs.append(root / f"run{seed}")
    return dirs[0], dirs[1]


EXPECTED = ["asr_vs_fraction.png", "asr_by_word.png", "accuracy.png", "examples.png", "leaderboard.csv",
            "leaderboard.md", "report.md", "report.html", "per_word.csv", "top_confusions.csv"]


def _words_that_moved_images(records: pd.DataFrame) -> set[str]:
    """Words for which, in some model and condition, one class received at least HEATMAP_MIN_IMAGES
    and HEATMAP_MIN_SHARE of the images more from other classes than on the clean images."""
    wrong = records[records["true_index"] != records["pred_index"]]
    clean = wrong[wrong["word"] == ""].groupby(["pretrained", "pred_index"]).size()
    found = set()
    for (pretrained, word, fraction, placement), rows in wrong[wrong["word"] != ""].groupby(
            ["pretrained", "word", "fraction", "placement"]):
        n = int(((records["pretrained"] == pretrained) & (records["word"] == word) & (records["fraction"] == fraction)
                 & (records["placement"] == placement)).sum())
        for pred, count in rows.groupby("pred_index").size().items():
            gain = count - clean.get((pretrained, pred), 0)
            if gain >= HEATMAP_MIN_IMAGES and gain / n >= HEATMAP_MIN_SHARE:
                found.add(word)
    return found


def test_report_of_one_run(two_runs, tmp_path) -> None:
    run0, _ = two_runs
    result = runner.invoke(app, ["report", str(run0), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "rep"
    for name in EXPECTED:
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        with Image.open(png) as img:
            assert img.width >= 500 and img.height >= 300, png.name
            assert np.asarray(img.convert("L")).std() > 5, png.name  # not blank
    # examples.png: 2 words x 1 image, each clean and under the 4 conditions.
    with Image.open(out / "examples.png") as img:
        assert abs(img.width - round(5 * plots.EX_W * plots.DPI)) <= 3
        assert abs(img.height - round((2 * plots.EX_H + plots.EX_TITLE_H) * plots.DPI)) <= 3
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    assert "UNTRAINED MODEL" in html
    # A heatmap exactly for the words whose attack moved images to one class (the stated rule).
    records = pd.read_parquet(run0 / "records.parquet")
    slugs = {"pizza": "pizza", "$$$": "dollar-dollar-dollar"}
    assert sorted(p.name for p in out.glob("confusion_*.png")) == sorted(
        f"confusion_{slugs[w]}.png" for w in _words_that_moved_images(records))
    # The top confusions: at most TOP_CONFUSIONS_PER_WORD rows per word, each a wrong prediction of the records.
    md = (out / "report.md").read_text()
    section = md[md.index("## Top confusions"):md.index("## Per-word results")]
    top = pd.read_csv(out / "top_confusions.csv", keep_default_na=False)
    assert set(top["word"]) == {"pizza", "$$$"} and top.groupby("word").size().max() <= TOP_CONFUSIONS_PER_WORD
    for r in top.itertuples():
        assert r.true_index != r.pred_index
        cell = records[(records["word"] == r.word) & (records["fraction"] == r.fraction)
                       & (records["placement"] == r.placement) & (records["true_index"] == r.true_index)
                       & (records["pred_index"] == r.pred_index)]
        assert len(cell) == r.count and r.share == pytest.approx(r.count / 12, abs=1e-6)
        assert f"| {r.true_name} → {r.pred_name} | {r.count} |" in section
    assert "| `$$$` → piggy bank |" in section and "dollar-dollar-dollar" in section


def test_report_draws_a_heatmap_where_the_attack_moved_images(two_runs, tmp_path) -> None:
    run0, _ = two_runs
    moved = tmp_path / "moved"
    shutil.copytree(run0, moved)
    records = pd.read_parquet(moved / "records.parquet")
    # `$$$` at 0.1 / paper8 now sends every image to piggy bank (719): 12 images, 100% of the condition.
    hit = (records["word"] == "$$$") & (records["fraction"] == 0.1) & (records["placement"] == "paper8")
    records.loc[hit, "pred_index"] = 719
    shutil.rmtree(moved / "records.parquet")
    records.to_parquet(moved / "records.parquet")  # one file, as typoattack before 0.3 wrote it
    assert _words_that_moved_images(records) >= {"$$$"}
    _, out = run_report([moved], tmp_path / "rep")
    assert (out / "confusion_dollar-dollar-dollar.png").is_file()
    assert sorted(p.name for p in out.glob("confusion_*.png")) == sorted(
        f"confusion_{w if w == 'pizza' else 'dollar-dollar-dollar'}.png" for w in _words_that_moved_images(records))
    md = (out / "report.md").read_text()
    assert "| `$$$` → piggy bank | confusion_dollar-dollar-dollar.png |" in md
    assert "![confusion_dollar-dollar-dollar](confusion_dollar-dollar-dollar.png)" in md
    # The table's row of that condition: the largest cell goes to piggy bank, all 12 images into the class.
    top = pd.read_csv(out / "top_confusions.csv", keep_default_na=False)
    row = top[(top["word"] == "$$$") & (top["fraction"] == 0.1) & (top["placement"] == "paper8")].iloc[0]
    assert row["pred_name"] == "piggy bank" and row["into_count"] == 12 and row["rank"] == 1


def test_example_choice_is_seeded_per_word() -> None:
    ids = [f"img{i:03d}" for i in range(500)]
    first = select_example_images(ids, "pizza", 0, 3)
    assert first == select_example_images(list(reversed(ids)), "pizza", 0, 3)  # the same on a rerun
    assert len(set(first)) == 3 and first != ids[:3]
    others = {w: select_example_images(ids, w, 0, 1) for w in ("trash", "iPod", "$$$", "meow", "radio")}
    assert len({tuple(v) for v in others.values()}) == 5  # each word its own image
    assert select_example_images(ids, "pizza", 1, 3) != first  # keyed on the seed too
    # Images shown for an earlier word are avoided while enough others remain.
    assert not set(select_example_images(ids[:4], "pizza", 0, 2, used=set(ids[:2]))) & set(ids[:2])
    assert sorted(select_example_images(ids[:3], "pizza", 0, 3, used=set(ids[:2]))) == ids[:3]
    assert select_example_images([], "pizza", 0, 2) == []


def test_example_conditions_are_evenly_spaced() -> None:
    rows = [{"word": "w", "target_index": 1, "fraction": f, "placement": p, "font": "F", "fill": "#fff",
             "outline": "#000", "outline_width": 1, "opacity": 1.0}
            for p in ("random", "paper8") for f in (0.01, 0.02, 0.04, 0.07, 0.1, 0.15, 0.2)]
    conditions = pd.DataFrame(rows)
    few = select_example_conditions(conditions.iloc[:3], 4)
    assert list(few["fraction"]) == [0.01, 0.02, 0.04]
    many = select_example_conditions(conditions, 4)
    assert [(r.placement, r.fraction) for r in many.itertuples()] == [
        ("paper8", 0.01), ("paper8", 0.1), ("random", 0.04), ("random", 0.2)]  # positions 0, 4, 9, 13 of 14
    assert format_condition(many.iloc[0]) == "fraction 0.01 · paper8"


def test_leaderboard_and_report_agree_with_per_word(two_runs, tmp_path) -> None:
    run0, run1 = two_runs
    per_word, out = run_report([run0, run1], tmp_path / "both")
    leaderboard = pd.read_csv(out / "leaderboard.csv")
    assert sorted(zip(leaderboard["model"], leaderboard["pretrained"])) == [
        ("typoattack-tiny", "seed:0"), ("typoattack-tiny", "seed:1")]
    runs_per_word = pd.concat([pd.read_csv(d / "per_word.csv") for d in (run0, run1)])
    for row in leaderboard.itertuples():
        mine = runs_per_word[runs_per_word["pretrained"] == row.pretrained]
        assert row.mean_asr == pytest.approx(mine["asr"].mean(), abs=1e-6)
        assert row.clean_top1 == pytest.approx(mine["clean_top1"].iloc[0], abs=1e-6)
        assert row.attacked_top1 == pytest.approx(mine["attacked_top1"].mean(), abs=1e-6)
        for f in (0.04, 0.1):
            assert getattr(leaderboard.loc[row.Index], f"asr@{f:g}") == pytest.approx(
                mine.loc[mine["fraction"] == f, "asr"].mean(), abs=1e-6)
    # The rule: accuracy under attack, highest first.
    assert leaderboard["attacked_top1"].is_monotonic_decreasing
    combined = pd.read_csv(out / "per_word.csv")
    assert len(combined) == len(runs_per_word) == 2 * 2 * 2 * 2
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for text in (md, html):
        assert "seed:0" in text and "seed:1" in text
    # Every ASR in the report's per-word table is one of per_word.csv's, as a percentage.
    shown = {float(v) for v in re.findall(r"(\d+\.\d)% \[", md)}
    assert shown == {round(100 * a, 1) for a in runs_per_word["asr"]}


def test_report_refuses_incomplete_or_empty_runs(two_runs, tmp_path) -> None:
    run0, _ = two_runs
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    info = json.loads((run0 / "run.json").read_text())
    info["complete"] = False
    (incomplete / "run.json").write_text(json.dumps(info))
    with pytest.raises(OutputError, match="incomplete"):
        run_report([incomplete])
    result = runner.invoke(app, ["report", str(incomplete)])
    assert result.exit_code == 1 and "rerun the same `typoattack eval` command to resume" in result.output

    empty = tmp_path / "empty"
    empty.mkdir()
    info["complete"] = True
    (empty / "run.json").write_text(json.dumps(info))
    records = pd.read_parquet(run0 / "records.parquet")
    records[records["word"] == ""].to_parquet(empty / "records.parquet")
    result = runner.invoke(app, ["report", str(empty)])
    assert result.exit_code == 1 and "has no attacked records" in result.output


def test_report_refuses_the_same_run_twice(two_runs, tmp_path) -> None:
    run0, _ = two_runs
    with pytest.raises(OutputError, match="same model and condition"):
        run_report([run0, run0], tmp_path / "dup")
