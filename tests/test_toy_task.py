"""Adding a task is one folder and one registry line: a toy task (tests/toy_task: a config class and a
Task) registered from this test gets its command, its help and its config parsing from the options its
config declares, and runs, resumes, shards, merges and reports through the engine, with no line of
cli.py written for it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import typoattack.cli
from typoattack.engine.rundir import read_run_info
from typoattack.tasks.registry import register_task, unregister_task

runner = CliRunner()
LETTERS_10 = len("pizza") * sum(range(1, 11))
"""The toy run's total: items 0..9 each count the word's letters times (item + 1)."""


@pytest.fixture
def app():
    register_task("toy", "toy_task")
    try:
        yield typoattack.cli.create_app()
    finally:
        unregister_task("toy")


def _run(app, *args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_names_no_task() -> None:
    source = Path(typoattack.cli.__file__).read_text()
    assert "toy" not in source
    for name in ("synthetic", "stroop", "vlm", "real"):
        assert f"tasks.{name}.task" not in source


def test_the_command_and_its_help_come_from_the_config(app) -> None:
    out = _run(app, "toy", "--help")
    assert "Count the letters of a word" in out
    assert "--word" in out and "[default: (pizza)]" in out
    assert "--n-items" in out and "[default: (10)]" in out
    assert "--model" in out and "--chunk-size" in out and "--overwrite" in out
    assert "--table" not in out  # the toy config declares no TABLE_HELP
    assert "toy" in _run(app, "--help")


def test_yaml_then_flags(app, tmp_path) -> None:
    config = tmp_path / "toy.yaml"
    config.write_text("word: hello\nn_items: 4\nmodel: m\n")
    from typoattack.tasks.registry import get_task

    cfg = get_task("toy").load_config(str(config), {"n_items": 3})
    assert (cfg.word, cfg.n_items, cfg.models[0].name) == ("hello", 3, "m")
    config.write_text("wordd: hello\n")
    result = runner.invoke(app, ["toy", "--config", str(config), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "unknown config key `wordd`" in result.output and "Did you mean 'word'?" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["toy", "--n-items", "many", "--model", "m", "--out", str(tmp_path / "y")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "Invalid value for '--n-items'" in result.output  # the declared type


def test_runs_resumes_shards_merges_and_reports(app, tmp_path) -> None:
    args = ["toy", "--model", "m", "--n-items", "10", "--chunk-size", "3", "--device", "cpu"]
    single = tmp_path / "single"
    out = _run(app, *args, "--out", str(single))
    assert f"m: {LETTERS_10} letters in 10 items" in out
    assert len(read_run_info(single).cells) == 4
    table = pd.read_csv(single / "toy.csv")
    assert table.to_dict("records") == [{"model": "m", "items": 10, "letters": LETTERS_10}]

    _run(app, *args, "--out", str(single))  # a finished run reruns from its chunks
    pd.testing.assert_frame_equal(pd.read_csv(single / "toy.csv"), table)

    shards = [tmp_path / "s1", tmp_path / "s2"]
    for k, shard in enumerate(shards, 1):
        _run(app, *args, "--shard", f"{k}/2", "--out", str(shard))
    merged = tmp_path / "merged"
    _run(app, "merge", *map(str, shards), "--out", str(merged))
    pd.testing.assert_frame_equal(pd.read_csv(merged / "toy.csv"), table)
    pd.testing.assert_frame_equal(pd.read_parquet(merged / "records.parquet"),
                                  pd.read_parquet(single / "records.parquet"))

    report = tmp_path / "report"
    _run(app, "report", str(single), "--out", str(report))
    assert str(LETTERS_10) in (report / "report.html").read_text()
