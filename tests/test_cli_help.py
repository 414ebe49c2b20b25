"""The generated commands' help: readable at 80 columns (snapshots), and the `[default: ...]` each
option shows is the value a run takes when the option is not given (parsed back and compared).

Regenerate the snapshots after a deliberate change with `TYPOATTACK_UPDATE_SNAPSHOTS=1 pytest
tests/test_cli_help.py`."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from typoattack.cli import app
from typoattack.config.common import load_config
from typoattack.config.options import NO_DEFAULT, list_options
from typoattack.errors import ConfigError
from typoattack.tasks.registry import get_task_config, list_task_names

runner = CliRunner()
SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"
COMMANDS = [*list_task_names(), "prepare", "render", "report", "models", "merge"]
REQUIRED = {"eval": {"data": "sample"}, "real": {"dataset": "folder", "data": "/data/photos", "model": "RN50", "pretrained": "openai"}, "stroop": {},
            "vlm": {"model": "org/chat-model", "data": "sample"}, "find-heads": {"data": "sample"},
            "threshold": {"data": "sample"}}
"""What each task needs beside its defaults."""
DESCRIBED = {"all", "DATA/labels.csv", "the model's input size", "RAY_ADDRESS, else a local cluster",
             "1000, fewer past 1 M records", "validation (train with --dataset)"}
"""Defaults shown as words (the value is None or depends on another option), checked by eye."""


@pytest.fixture(autouse=True)
def _width_80(monkeypatch) -> None:
    from typer import rich_utils

    monkeypatch.setattr(rich_utils, "MAX_WIDTH", 80)  # conftest widens it for the other tests


def _help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_at_80_columns(command: str) -> None:
    text = _help(command)
    assert max(map(len, text.splitlines())) <= 80
    assert "…" not in text, "a cell of the help is cut"
    snapshot = SNAPSHOTS / f"{command}.txt"
    if os.environ.get("TYPOATTACK_UPDATE_SNAPSHOTS") or not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(text)
    assert text == snapshot.read_text(), f"`typoattack {command} --help` changed; see {snapshot}"


@pytest.mark.parametrize("task", list_task_names())
def test_every_option_of_a_task_is_in_its_help(task: str) -> None:
    text = _help(task)
    for opt in list_options(get_task_config(task)):
        assert re.search(rf"{re.escape(opt.flag)}\b", text), opt.flag


@pytest.mark.parametrize("task", list_task_names())
def test_the_default_in_the_help_is_the_default_a_run_takes(task: str) -> None:
    cls = get_task_config(task)
    base = load_config(None, REQUIRED[task], cls)
    checked = 0
    for opt in list_options(cls):
        if opt.default == NO_DEFAULT or opt.default in DESCRIBED:
            continue
        value = [opt.default] if opt.repeat else opt.default
        try:
            given = load_config(None, {**REQUIRED[task], opt.key: value}, cls)
        except ConfigError as e:
            pytest.fail(f"{task} {opt.flag}: the help's default {opt.default!r} is not a value: {e}")
        assert dataclasses.asdict(given) == dataclasses.asdict(base), (task, opt.flag, opt.default)
        checked += 1
    assert checked >= 5


def test_bool_flags_turn_off_what_a_config_turned_on(tmp_path) -> None:
    from typoattack.cli import _get_overrides

    assert _get_overrides({"compile": None, "compile_off": True}) == {"compile": False}
    assert _get_overrides({"compile": True, "compile_off": None}) == {"compile": True}
    with pytest.raises(ConfigError, match="contradict"):
        _get_overrides({"compile": True, "compile_off": True})
    assert "--no-compile" not in _help("eval")  # hidden: one name per row keeps the help in 80 columns


def test_the_closing_line_gives_the_evaluation_rate_and_the_setup_apart() -> None:
    from types import SimpleNamespace

    from typoattack.cli import format_speed

    assert format_speed(SimpleNamespace(images_per_second=512.6, seconds_setup_this_session=4.24)) == (
        ", 512.6 images/s evaluating, setup 4.2 s")
    assert format_speed(SimpleNamespace(images_per_second=None, seconds_setup_this_session=None)) == ""
