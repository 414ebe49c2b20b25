"""CLI wiring (Typer's CliRunner): the config each command builds, errors as one line, and small
real runs of eval, report and render."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import typoattack.engine.run
from typoattack.cli import app
from typoattack.constants import SAMPLE_DIR, VOCAB_DIR
from typoattack.config.types import ModelSpec, Placement, Precision
from typoattack.engine.rundir import RunInfo
from typoattack.tasks.synthetic.config import SyntheticConfig

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def captured(monkeypatch):
    """Replace the heavy run with a stub that records the config the CLI built."""
    calls: list[tuple[SyntheticConfig, bool]] = []

    def fake_run_task(task, cfg, progress=None, overwrite=False):
        calls.append((cfg, overwrite))
        empty = pd.DataFrame(columns=["model", "pretrained"])
        return typoattack.engine.run.RunResult(Path(cfg.out), 0, empty, RunInfo(task.name, "", {}, n_skipped=0))

    monkeypatch.setattr(typoattack.engine.run, "run_task", fake_run_task)
    return calls


def test_help_lists_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("eval", "render", "report", "models"):
        assert command in result.output
    result = runner.invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "--fraction" in result.output and "--placement" in result.output


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith(f"typoattack {typoattack.__version__}")


def test_eval_builds_config_from_yaml_and_flags(captured, tmp_path) -> None:
    result = runner.invoke(app, [
        "eval", "--config", str(ROOT / "configs/ci.yaml"), "--out", str(tmp_path / "o"),
        "--fraction", "0.05", "--fraction", "0.2", "--placement", "CENTER", "--seed", "7",
        "--model", "ViT-B-32", "--pretrained", "openai", "--batch-size", "64", "--precision", "bf16",
        "--overwrite",
    ])
    assert result.exit_code == 0, result.output
    (cfg, overwrite), = captured
    assert overwrite is True
    assert cfg.models == (ModelSpec("ViT-B-32", "openai"),)
    assert cfg.fractions == (0.05, 0.2)
    assert cfg.placements == (Placement.CENTER,)
    assert cfg.seed == 7 and cfg.batch_size == 64 and cfg.precision is Precision.BF16
    assert cfg.out == str(tmp_path / "o")
    # Keys the flags did not touch come from the YAML file, paths relative to it.
    assert cfg.vocab == str(VOCAB_DIR / "goh2021.yaml")
    assert Path(cfg.data.source).resolve() == SAMPLE_DIR.resolve()
    assert cfg.chunk_size == 100 and cfg.templates == "openai"


def test_eval_without_config_uses_flags_and_defaults(captured, tmp_path) -> None:
    result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--model", "RN50x4", "--pretrained", "openai",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (cfg, _), = captured
    assert cfg.fractions == (0.07,) and cfg.placements == (Placement.PAPER8,) and cfg.templates == "openai"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/no/such/folder", "--model", "typoattack-tiny", "--pretrained", "seed:0"], "data path /no/such/folder does not exist"),
        (["--data", ".", "--fraction", "1.5", "--model", "x"], "fraction 1.5 must be in (0, 1)"),
        (["--data", str(SAMPLE_DIR), "--model", "ViT-B-33", "--pretrained", "openai"], "Did you mean 'ViT-B-32'"),
        (["--data", str(SAMPLE_DIR), "--model", "typoattack-tiny", "--pretrained", "seed:0", "--vocab", "nope"],
         "vocabulary 'nope' is neither a YAML file nor a built-in vocabulary (goh2021, imagenet-classes)"),
        (["--config", "cii"], "'cii' is neither a file nor a built-in config (ci, paper, sweep-fraction). Did you mean 'ci'?"),
        (["--data", "."], "no model given"),
    ],
)
def test_user_errors_are_one_red_line(tmp_path, args, message) -> None:
    result = runner.invoke(app, ["eval", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_enum_is_rejected_by_typer(tmp_path) -> None:
    result = runner.invoke(app, ["eval", "--placement", "diagonal", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Invalid value for '--placement'" in result.output


def test_missing_config_file(tmp_path) -> None:
    result = runner.invoke(app, ["eval", "--config", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and f"config file {tmp_path / 'none.yaml'} does not exist" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_render_previews_one_attack(sample_dir, tmp_path) -> None:
    out = tmp_path / "pizza.png"
    image = sample_dir / "n01440764_tench.JPEG"
    result = runner.invoke(app, ["render", "pizza", str(image), "--fraction", "0.08", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "measured pixel cover" in result.output
    measured = float(result.output.split("measured pixel cover ")[1].split()[0])
    assert abs(measured - 0.08) <= 0.008
    picture = np.asarray(Image.open(out))
    assert picture.shape == (224, 224, 3)
    result = runner.invoke(app, ["render", "pizza", str(image), "--fraction", "0.1", "--size", "288",
                                 "--placement", "random", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert np.asarray(Image.open(out)).shape == (288, 288, 3)


def test_render_unreachable_fraction_names_the_largest(sample_dir, tmp_path) -> None:
    image = sample_dir / "n01440764_tench.JPEG"
    result = runner.invoke(app, ["render", "abcdefghijklmnopqrst", str(image), "--fraction", "0.6",
                                 "--placement", "random", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == 1
    largest = float(result.output.split("largest reachable fraction is ")[1].split()[0])
    assert 0.2 < largest < 0.6  # 8 non-overlapping stamps of a 20-letter word
    assert not (tmp_path / "x.png").exists()


def test_report_on_missing_run(tmp_path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and "not a typoattack run directory" in result.output


def test_models_command() -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0 and "ViT-B-32" in result.output and "typoattack-tiny" in result.output
    result = runner.invoke(app, ["models", "ViT-B-32"])
    assert result.exit_code == 0 and "openai" in result.output and "laion2b_s34b_b79k" in result.output
    result = runner.invoke(app, ["models", "ViT-B-3"])
    assert result.exit_code == 1 and "Did you mean" in result.output


def test_small_real_eval_then_report(sample_dir, cache_dir, tmp_path) -> None:
    vocab = tmp_path / "two.yaml"
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: 605}\n")
    out = tmp_path / "run"
    args = ["eval", "--data", str(sample_dir), "--model", "typoattack-tiny", "--pretrained", "seed:0",
            "--vocab", str(vocab), "--limit", "20", "--fraction", "0.07", "--placement", "paper8",
            "--placement", "random", "--templates", "simple", "--device", "cpu", "--workers", "0",
            "--cache-dir", str(cache_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED MODEL" in result.output
    assert (out / "records.parquet").is_dir()
    for name in ("per_word.csv", "per_word.md", "confusion.csv", "confusion.parquet", "run.json", "skipped.csv"):
        assert (out / name).is_file(), name
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 20 * (1 + 2 * 2)
    per_word = pd.read_csv(out / "per_word.csv")
    assert len(per_word) == 4 and set(per_word["n_images"]) == {20}

    before = (out / "per_word.csv").read_text()
    (out / "per_word.csv").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "per_word.csv").read_text() == before

    # The same command again finds every chunk done and gives the same tables.
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "per_word.csv").read_text() == before
    # A different run into the same folder is refused unless --overwrite.
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 1 and "holds a different run" in result.output


def test_prepare_fills_the_cache_that_eval_reads(sample_dir, tmp_path) -> None:
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["prepare", "--data", str(sample_dir), "--model", "typoattack-tiny", "--pretrained",
                                 "seed:0", "--limit", "10", "--cache-dir", str(cache), "--workers", "0"])
    assert result.exit_code == 0, result.output
    files = sorted((cache / "canvases").glob("*.npy"))
    assert len(files) == 1 and str(files[0]) in result.output.replace("\n", "")
    assert np.load(files[0], mmap_mode="r").shape == (10, 224, 224, 3)
    vocab = tmp_path / "v.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--data", str(sample_dir), "--model", "typoattack-tiny", "--pretrained",
                                 "seed:0", "--limit", "10", "--vocab", str(vocab), "--templates", "simple",
                                 "--cache-dir", str(cache), "--workers", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["models"][0]["canvas_cache"] == str(files[0])
    assert sorted((cache / "canvases").glob("*.npy")) == files  # nothing decoded again
