"""The first hour of a new user: one model rule on every command, built-in configs valid per
command, the demo model where no weights are needed, the shipped sample by name, an end-of-run
summary that fits 80 columns, and --help that reads."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

import typoattack.engine.run
from typoattack.analysis.summary import build_summary
from typoattack.cli import app
from typoattack.config.types import ModelSpec
from typoattack.constants import DEMO_MODEL, DEMO_PRETRAINED, SAMPLE_DIR
from typoattack.engine.rundir import RunInfo

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SNAPSHOTS = Path(__file__).parent / "snapshots"


@pytest.fixture
def captured(monkeypatch):
    """Replace the heavy run with a stub that records the task and config the CLI built."""
    calls: list[tuple[str, object]] = []

    def fake_run_task(task, cfg, progress=None, overwrite=False):
        calls.append((task.name, cfg))
        empty = pd.DataFrame()
        return typoattack.engine.run.RunResult(Path(cfg.out), 0, empty, RunInfo(task.name, "", {}, n_skipped=0))

    monkeypatch.setattr(typoattack.engine.run, "run_task", fake_run_task)
    return calls


TWO_MODELS = ["--model", "typoattack-tiny", "--pretrained", "seed:0", "--model", "typoattack-reader-tiny",
              "--pretrained", "ci500"]


@pytest.mark.parametrize("command", [
    ["eval", "--config", "ci"],
    ["real", "--dataset", "rta100", "--data", str(SAMPLE_DIR)],
    ["stroop"],
])
def test_every_command_takes_several_models_the_same_way(command, captured, tmp_path) -> None:
    result = runner.invoke(app, [*command, *TWO_MODELS, "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (_, cfg), = captured
    assert cfg.models == (ModelSpec("typoattack-tiny", "seed:0"), ModelSpec("typoattack-reader-tiny", "ci500"))
    # One --pretrained for all models.
    result = runner.invoke(app, [*command, "--model", "typoattack-tiny", "--model", "typoattack-tiny",
                                 "--pretrained", "seed:1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "listed twice" in result.output
    # As many --pretrained as --model, or one: anything else is one line.
    result = runner.invoke(app, [*command, *TWO_MODELS, "--pretrained", "seed:2", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "`pretrained` has 3 entries for 2 models" in result.output


def test_builtin_configs_belong_to_their_command(tmp_path) -> None:
    result = runner.invoke(app, ["stroop", "--config", "ci", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "'ci' is neither a file nor a built-in config (this command has none)" in result.output
    assert "ci, paper" not in runner.invoke(app, ["stroop", "--help"]).output


def test_the_demo_model_runs_where_no_weights_are_needed(captured, tmp_path) -> None:
    assert runner.invoke(app, ["stroop", "--out", str(tmp_path / "s")]).exit_code == 0
    assert runner.invoke(app, ["eval", "--data", "sample", "--out", str(tmp_path / "e")]).exit_code == 0
    (_, stroop), (_, ev) = captured
    demo = (ModelSpec(DEMO_MODEL, DEMO_PRETRAINED),)
    assert stroop.models == demo and ev.models == demo and ev.data.source == str(SAMPLE_DIR)
    assert any("DEMO MODEL" in w for w in ev.model_warnings)
    # Elsewhere no model is an error that names the demo model.
    result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and f"--model {DEMO_MODEL} --pretrained {DEMO_PRETRAINED}" in result.output


def test_shipped_images_by_name(tmp_path) -> None:
    out = tmp_path / "p.png"
    result = runner.invoke(app, ["render", "pizza", "sample:tench", "-o", str(out)])
    assert result.exit_code == 0, result.output and out.is_file()
    result = runner.invoke(app, ["render", "pizza", "sample:dog", "-o", str(out)])
    assert result.exit_code == 1 and "names 4 shipped images" in result.output


def test_the_end_of_run_summary_fits_80_columns_snapshot() -> None:
    per_word = pd.read_csv(ROOT / "results" / "ci" / "per_word.csv", keep_default_na=False,
                           na_values={"flip_rate": [""]})
    console = Console(width=80, record=True, force_terminal=False, color_system=None)
    for renderable in build_summary(per_word):
        console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text == (SNAPSHOTS / "summary_ci_80.txt").read_text()


def test_help_groups_options_with_readable_metavars_and_defaults() -> None:
    text = runner.invoke(app, ["eval", "--help"], terminal_width=100).output
    for panel in ("Config and output", "Model", "Data", "Attack", "Defences", "Execution"):
        assert re.search(rf"╭─ {panel} ─", text), panel
    assert "<list[" not in text and "<bool>" not in text and "<str>" not in text
    assert "FLOAT" in text and "PATH" in text and "[default: (0.07)]" in text
