"""`typoattack report` over one or several runs: every file, sizes, agreement with per_word.csv."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from typoattack.cli import app
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


EXPECTED = ["asr_vs_fraction.png", "asr_by_word.png", "accuracy.png", "confusion_pizza.png",
            "confusion_x24x24x24.png", "examples.png", "leaderboard.csv", "leaderboard.md", "report.md",
            "report.html", "per_word.csv"]


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
    # examples.png: 2 words x 4 images, one row per word
    with Image.open(out / "examples.png") as img:
        assert img.height > img.width * 0.5
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(list(out.glob("*.png")))
    assert "UNTRAINED MODEL" in html


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
