"""The engine's contract, checked for every task in the registry: a run killed with SIGKILL and
rerun gives the tables of an uninterrupted run; `--shard 1/2` + `--shard 2/2` merged equals the
single run; `--executor ray` equals local; `typoattack report` renders the run.

Tables are compared as data: text and integer columns exactly, floats within FLOAT_TOLERANCE (a Ray
worker computes with one thread, the local run with two: float32 probabilities may differ in
their last bits; predictions never did here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from real_datasets_builders import make_named_folder
from typoattack.backends.open_clip.model import TINY_MODEL
from typoattack.cli import app
from typoattack.engine.rundir import RECORDS_FILE, SKIPPED_CSV, read_run_info
from typoattack.tasks.registry import get_task, list_task_names

runner = CliRunner()
FLOAT_TOLERANCE = 1e-6
"""Largest difference allowed between float values of two runs of the same config (see the module docstring)."""
CSV_STEP = 1e-6
"""CSV tables (and find-heads' YAML) print floats rounded to 6 decimals (files.write_csv), so two values
within FLOAT_TOLERANCE can print up to one such step further apart."""


VARIANTS = [*list_task_names(), "eval+transformers", "eval+classes", "vlm+classes", "threshold+classes"]
"""Every task, eval once more with a model of the second backend (a tiny Hugging Face CLIPModel folder), and eval,
vlm and threshold on a class set of ten names (an hf: dataset's ClassLabel)."""


def _task(variant: str) -> str:
    return variant.split("+")[0]


def _args(task: str, data: dict[str, Path], cache_dir: Path) -> list[str]:
    """A small run of each task with 3 or more cells (a task missing here fails the contract)."""
    common = ["--cache-dir", str(cache_dir), "--device", "cpu", "--workers", "0"]
    if task == "eval":
        return ["eval", "--config", "ci", "--limit", "16", "--chunk-size", "4", "--templates", "simple", *common]
    if task == "eval+transformers":
        return ["eval", "--data", "sample", "--backend", "transformers", "--model", str(data["hf-clip"]),
                "--limit", "12", "--chunk-size", "4", "--vocab", "goh2021", "--fraction", "0.1", "--placement",
                "center", "--templates", "simple", *common]
    if task == "eval+classes":  # one other class's name per image, drawn on (seed, image id)
        return ["eval", "--data", f"hf:{data['hf-ten']}", "--hf-split", "train", "--hf-image-column", "img",
                "--hf-label-column", "fine_label", "--classes", "hf", "--vocab", "random-class", "--model",
                "typoattack-reader-tiny", "--pretrained", "ci500", "--limit", "16", "--chunk-size", "4",
                "--fraction", "0.1", "--fraction", "0.2", "--placement", "center", "--templates", "dataset", *common]
    if task == "vlm+classes":  # the question's options are the class set's names
        return ["vlm", "--data", f"hf:{data['hf-ten']}", "--hf-split", "train", "--hf-image-column", "img",
                "--hf-label-column", "fine_label", "--classes", "hf", "--vocab", "random-class", "--model",
                str(data["tiny-llava"]), "--limit", "6", "--chunk-size", "2", "--fraction", "0.2", "--placement",
                "center", *common]
    if task == "threshold+classes":  # the class set's names as the words, each aimed at its own class
        return ["threshold", "--data", f"hf:{data['hf-ten']}", "--hf-split", "train", "--hf-image-column", "img",
                "--hf-label-column", "fine_label", "--classes", "hf", "--vocab", "classes", "--model",
                "typoattack-reader-tiny", "--pretrained", "ci500", "--limit", "9", "--chunk-size", "3", "--placement", "center", "--templates", "dataset", "--grid", "3", "--steps", "2",
                *common]
    if task == "real":  # a cell per image: 3 cells of 3 tiny images finished inside the kill test's polling
        return ["real", "--dataset", "rta100", "--data", str(data["rta100"]), "--model", TINY_MODEL,
                "--pretrained", "seed:0", "--chunk-size", "1", *common]
    if task == "stroop":
        return ["stroop", "--model", TINY_MODEL, "--pretrained", "seed:0", "--chunk-size", "16", *common]
    if task == "vlm":
        return ["vlm", "--data", "sample", "--model", str(data["tiny-llava"]), "--limit", "8", "--chunk-size", "2",
                "--vocab", str(data["two-words"]), "--fraction", "0.1", "--placement", "center", *common]
    if task == "find-heads":  # a cell per model: three tiny ViTs
        models = [a for seed in ("seed:0", "seed:1", "seed:2") for a in ("--model", TINY_MODEL, "--pretrained", seed)]
        return ["find-heads", "--data", "sample", *models, "--limit", "16", "--seed", "1", "--vocab",
                str(data["two-words"]), "--fraction", "0.1", "--templates", "photo", *common]
    if task == "threshold":
        return ["threshold", "--data", "sample", "--limit", "12", "--chunk-size", "4", "--vocab", str(data["two-words"]),
                "--placement", "center", "--templates", "simple", "--grid", "3", "--steps", "3", *common]
    raise AssertionError(f"the task contract has no small run for task {task!r}; add one to _args")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    from class_sets_builders import build_hf_class_dataset
    from hf_builders import build_clip_folder
    from vlm_builders import save_tiny_llava

    root = tmp_path_factory.mktemp("contract")
    vocab = root / "two-words.yaml"
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: iPod}\n")
    return {"rta100": make_named_folder(root / "rta100"), "hf-clip": build_clip_folder(root / "hf-clip"),
            "tiny-llava": save_tiny_llava(root / "tiny-llava"), "two-words": vocab,
            "hf-ten": build_hf_class_dataset(root)}


class _Runs(dict):
    """Run folders by variant, each made when a test first asks for it (`-k VARIANT` makes only its own)."""

    def __init__(self, make: Callable[[str], Path]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, variant: str) -> Path:
        self[variant] = self.make(variant)
        return self[variant]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data, cache_dir) -> dict[str, Path]:
    """Each task's uninterrupted local run."""

    def run(variant: str) -> Path:
        out = tmp_path_factory.mktemp(f"contract-{variant}") / "local"
        result = runner.invoke(app, [*_args(variant, data, cache_dir), "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert len(read_run_info(out).cells) >= 3
        return out

    return _Runs(run)


def _count_cells(run: Path) -> int:
    return len(read_run_info(run).cells)


def _tables(task: str, run: Path) -> list[str]:
    """The tables of a run folder: the records, skipped.csv and the task's files that the run holds (a
    task may write some only for some runs, e.g. find-heads' heads.yaml for one model); a folder of
    tables without a suffix (find-heads' heads/) stands for the files in it."""
    names = [RECORDS_FILE, SKIPPED_CSV]
    for name in get_task(task).output_files:
        path = run / name
        if path.is_dir() and not path.suffix:
            names += sorted(str(p.relative_to(run)) for p in path.rglob("*") if p.is_file() and p.suffix != ".png")
        elif path.exists() and not name.endswith(".png"):
            names.append(name)
    return names


def _flatten(value: object, key: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _flatten(v, f"{key}/{k}")]
    if isinstance(value, list):
        return [kv for i, v in enumerate(value) for kv in _flatten(v, f"{key}/{i}")]
    return [(key, value)]


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".md":
        return pd.DataFrame({"line": path.read_text().splitlines()})
    if path.suffix == ".yaml":  # every leaf by its path; numbers apart, compared as floats
        leaves = _flatten(yaml.safe_load(path.read_text()))
        return pd.DataFrame({"key": [k for k, _ in leaves],
                             "text": ["" if isinstance(v, float) else str(v) for _, v in leaves],
                             "number": [v if isinstance(v, float) else np.nan for _, v in leaves]})
    return pd.read_csv(path, keep_default_na=False)


def assert_same_tables(task: str, a: Path, b: Path) -> None:
    """Every table of the two run folders equal (floats within FLOAT_TOLERANCE)."""
    names = _tables(task, a)
    assert _tables(task, b) == names and len(names) > 2, names  # the task wrote tables, the same in both
    for name in names:
        left, right = _read(a / name), _read(b / name)
        assert list(left.columns) == list(right.columns) and len(left) == len(right), name
        for column in left.columns:
            x, y = left[column].to_numpy(), right[column].to_numpy()
            if x.dtype.kind == "f":
                atol = FLOAT_TOLERANCE + (CSV_STEP * (1 + 1e-9) if name.endswith((".csv", ".yaml")) else 0)
                assert np.allclose(x, y, rtol=0, atol=atol, equal_nan=True), (name, column, np.abs(x - y).max())
            elif name.endswith(".md"):
                # Markdown shows rounded percentages: equal, or the run's floats straddle a rounding edge.
                assert (x == y).mean() > 0.99, name
            else:
                assert [str(v) for v in x] == [str(v) for v in y], (name, column)


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from typoattack.cli import app; app()", *args]


@pytest.mark.parametrize("task", VARIANTS)
def test_kill_9_mid_run_then_rerun_gives_the_same_tables(task, tmp_path, data, cache_dir, reference) -> None:
    out = tmp_path / "killed"
    args = [*_args(task, data, cache_dir), "--out", str(out)]
    proc = subprocess.Popen(_cli(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((out / "records.parquet").rglob("*.parquet")) and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done, n_cells = len(list((out / "records.parquet").rglob("*.parquet"))), _count_cells(reference[task])
    assert 1 <= done < n_cells, f"the run must be killed part-way ({done} of {n_cells} chunks)"
    assert not read_run_info(out).complete
    rerun = subprocess.run(_cli(args), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    info = read_run_info(out)
    assert info.complete and info.chunks_done == n_cells
    assert_same_tables(_task(task), out, reference[task])


@pytest.mark.parametrize("task", VARIANTS)
def test_two_shards_merged_equal_the_single_run(task, tmp_path, data, cache_dir, reference) -> None:
    shards = [tmp_path / f"shard{k}" for k in (1, 2)]
    for k, folder in enumerate(shards, start=1):
        result = runner.invoke(app, [*_args(task, data, cache_dir), "--out", str(folder), "--shard", f"{k}/2"])
        assert result.exit_code == 0, result.output
        assert read_run_info(folder).shard["cells"] == read_run_info(folder).cells[k - 1::2]
    result = runner.invoke(app, ["merge", *map(str, shards), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert_same_tables(_task(task), tmp_path / "merged", reference[task])
    assert read_run_info(tmp_path / "merged").task == _task(task)


@pytest.mark.parametrize("task", VARIANTS)
def test_a_shard_without_cells_is_finished_and_merges(task, tmp_path, data, cache_dir, reference) -> None:
    n = _count_cells(reference[task]) + 1
    folders = [tmp_path / f"shard{k}" for k in range(1, n + 1)]
    for k, folder in enumerate(folders, start=1):
        result = runner.invoke(app, [*_args(task, data, cache_dir), "--out", str(folder), "--shard", f"{k}/{n}"])
        assert result.exit_code == 0, result.output
    last = read_run_info(folders[-1])
    assert last.complete and last.shard["cells"] == [] and "holds no cell" in result.output
    rerun = runner.invoke(app, [*_args(task, data, cache_dir), "--out", str(folders[-1]), "--shard", f"{n}/{n}"])
    assert rerun.exit_code == 0, rerun.output
    result = runner.invoke(app, ["merge", *map(str, folders), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert_same_tables(_task(task), tmp_path / "merged", reference[task])


@pytest.mark.parametrize("task", VARIANTS)
def test_ray_executor_equals_local(task, ray_cluster, tmp_path, data, cache_dir, reference) -> None:
    out = tmp_path / "ray"
    result = runner.invoke(app, [*_args(task, data, cache_dir), "--out", str(out), "--executor", "ray"])
    assert result.exit_code == 0, result.output
    info = read_run_info(out)
    assert info.executor == "ray" and info.complete
    assert_same_tables(_task(task), out, reference[task])


@pytest.mark.parametrize("task", VARIANTS)
def test_report_renders_the_run(task, tmp_path, reference) -> None:
    result = runner.invoke(app, ["report", str(reference[task]), "--out", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<img" in page
