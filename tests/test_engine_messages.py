"""What a run says and records of itself: one progress line per event ("Evaluating 1 cell", the resume line,
the models' warnings left to the caller), images/s of the evaluation apart from the setup seconds in run.json,
the summaries' pointers and model names, and an unreachable fraction that names the fix."""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from runs import run_eval, run_report
from typoattack.attack.solver import UnreachableFractionError
from typoattack.constants import SAMPLE_DIR
from typoattack.engine.rundir import RUN_FILE, read_run_info
from typoattack.errors import OutputError, RenderError
from typoattack.progress import NullProgress
from typoattack.tasks.registry import get_task
from typoattack.tasks.synthetic.config import load_synthetic_config


class RecordingProgress:
    """A progress display that keeps what it was shown."""

    def __init__(self) -> None:
        self.bars: list[str] = []
        self.lines: list[str] = []

    def start(self, description: str, total: int, unit: str = "") -> Callable[[int], None]:
        self.bars.append(description)
        return lambda n: None

    def log(self, message: str) -> None:
        self.lines.append(message)


def _settings(tmp_path: Path, cache_dir: Path, **overrides: Any) -> dict[str, Any]:
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: iPod}\n")
    return {"model": "typoattack-tiny", "pretrained": "seed:0", "data": str(SAMPLE_DIR), "vocab": str(vocab),
            "limit": 4, "chunk_size": 4, "fractions": [0.07], "placement": ["paper8"], "templates": "simple",
            "device": "cpu", "workers": 0, "cache_dir": str(cache_dir), "out": str(tmp_path / "run"), **overrides}


@pytest.fixture(scope="module")
def one_cell_run(tmp_path_factory, cache_dir) -> tuple[Any, RecordingProgress]:
    tmp = tmp_path_factory.mktemp("one-cell")
    progress = RecordingProgress()
    return run_eval(load_synthetic_config(None, _settings(tmp, cache_dir)), progress=progress), progress


def test_one_cell_is_one_cell_and_the_warnings_are_the_callers(one_cell_run) -> None:
    result, progress = one_cell_run
    assert "Evaluating 1 cell" in progress.bars
    # The untrained model's warning: the CLI prints it beside the numbers, the engine no longer before them.
    assert not any("UNTRAINED MODEL" in line for line in progress.lines)
    assert not any(line.startswith("Resuming") for line in progress.lines)


def test_images_per_second_counts_the_evaluation_and_setup_apart(one_cell_run) -> None:
    result, _ = one_cell_run
    info = result.info
    model = info.models[0]
    assert model["images_encoded_this_session"] == 4 * 3  # each image clean and under 2 words
    evaluating = info.seconds_evaluating_this_session
    assert evaluating is not None and 0 < evaluating == pytest.approx(model["seconds"]["evaluate"], abs=2e-3)
    # run.json rounds seconds to milliseconds: a cell of a few milliseconds moves the rate by that much.
    assert info.images_per_second == pytest.approx(12 / evaluating, rel=0.01 + 1e-3 / evaluating, abs=0.1)
    setup = {k: v for k, v in model["seconds"].items() if k != "evaluate"}
    assert {"load_model", "classifier"} <= set(setup)
    assert info.seconds_setup_this_session == pytest.approx(sum(setup.values()), abs=5e-3)
    assert info.seconds_setup_this_session > 0
    doc = json.loads((result.out_dir / RUN_FILE).read_text())
    assert doc["seconds_setup_this_session"] == info.seconds_setup_this_session
    assert doc["seconds_evaluating_this_session"] == evaluating
    assert read_run_info(result.out_dir).seconds_setup_this_session == info.seconds_setup_this_session


def test_a_rerun_says_it_resumes_and_times_nothing(one_cell_run, cache_dir) -> None:
    result, _ = one_cell_run
    progress = RecordingProgress()
    settings = _settings(result.out_dir.parent, cache_dir)
    again = run_eval(load_synthetic_config(None, settings), progress=progress)
    assert f"Resuming {result.out_dir}: every cell (1) already done; writing the tables" in progress.lines
    assert not any(bar.startswith("Evaluating") for bar in progress.bars)
    assert (again.info.images_per_second, again.info.seconds_evaluating_this_session,
            again.info.seconds_setup_this_session) == (None, None, None)


def test_run_json_without_the_timing_fields_reads(one_cell_run, tmp_path) -> None:
    result, _ = one_cell_run
    doc = json.loads((result.out_dir / RUN_FILE).read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / RUN_FILE).write_text(json.dumps({k: v for k, v in doc.items()
                                            if k not in ("seconds_setup_this_session",
                                                         "seconds_evaluating_this_session")}))
    info = read_run_info(old)
    assert (info.seconds_setup_this_session, info.seconds_evaluating_this_session) == (None, None)
    assert "seconds_setup_this_session" not in info.extra
    (old / RUN_FILE).write_text(json.dumps({**doc, "seconds_setup_this_session": "4 s"}))
    with pytest.raises(OutputError, match="`seconds_setup_this_session` should be int or float or null"):
        read_run_info(old)


def test_the_report_summary_names_the_report_folders_per_word_table(one_cell_run, tmp_path) -> None:
    result, _ = one_cell_run
    table, folder = run_report(result.out_dir, tmp_path / "report")
    lines = [r for r in get_task("eval").show_summary(table, None) if isinstance(r, str)]
    assert lines == ["Every word: per_word.csv in the report folder (or --table full)"]
    assert (folder / "per_word.csv").is_file() and not (folder / "per_word.md").exists()
    run_lines = [r for r in get_task("eval").show_summary(result.summary, result.info) if isinstance(r, str)]
    assert run_lines == [f"Every word: {result.out_dir}/per_word.md (or --table full)"]
    assert (result.out_dir / "per_word.md").is_file()


def test_stroop_summary_keeps_long_model_names_whole_in_80_columns() -> None:
    long_name = "hf-hub:timm/ViT-SO400M-14-SigLIP-384-with-a-name-longer-than-a-column"
    rows = []
    for model, pretrained in ((long_name, "webli"), ("typoattack-tiny", "seed:0")):
        for condition, word_rate in (("neutral", float("nan")), ("congruent", 0.5), ("incongruent", 0.25)):
            rows.append({"model": model, "pretrained": pretrained, "font": "DejaVuSans.ttf", "background": "white",
                         "condition": condition, "n": 8, "ink_acc": 0.5, "ink_acc_ci_low": 0.2,
                         "ink_acc_ci_high": 0.8, "word_rate": word_rate, "word_rate_ci_low": word_rate / 2,
                         "word_rate_ci_high": word_rate * 2})
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for renderable in get_task("stroop").show_summary(pd.DataFrame(rows), None):
        console.print(renderable)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert f"{long_name}/webli" in re.sub(r"\s*\n\s*", "", text)  # whole, if folded
    assert "typoattack-tiny/seed:0" in text and "…" not in text
    assert text.count("read as ink [95% CI]") == 2  # one table per model


# --- an unreachable fraction -------------------------------------------------------------------------------

def test_an_unreachable_fraction_survives_a_worker_process() -> None:
    error = UnreachableFractionError("fraction 0.0001 cannot be reached", 0.0001, "smallest", 0.00513)
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, RenderError) and str(back) == str(error)
    assert (back.fraction, back.bound, back.limit) == (0.0001, "smallest", 0.00513)
    assert back.suggest_fix("a bigger canvas") == "pass --fraction 0.0052 or more, or a bigger canvas"
    assert UnreachableFractionError("x", 0.9, "largest", 0.41239).suggest_fix("-") == "pass --fraction 0.4123 or less"


def test_eval_names_the_fix_of_an_unreachable_fraction(tmp_path, cache_dir) -> None:
    cfg = load_synthetic_config(None, _settings(tmp_path, cache_dir, fractions=[0.0001], workers=2))
    with pytest.raises(UnreachableFractionError) as caught:
        get_task("eval").plan(cfg, NullProgress())
    message = str(caught.value)
    assert re.search(r"the smallest reachable fraction is (0\.\d{4}); pass --fraction (0\.\d{4}) or more, or a "
                     r"model with a larger input \(--model\)$", message), message
    smallest, suggested = map(float, re.findall(r"0\.\d{4}", message.split("is ", 1)[1]))
    assert suggested >= caught.value.limit > 0.0001 and suggested - smallest <= 1e-4 + 1e-12


def test_vlm_names_the_fix_of_an_unreachable_fraction(monkeypatch, tmp_path, cache_dir) -> None:
    import typoattack.tasks.vlm.task as vlm_task

    monkeypatch.setattr(vlm_task, "check_vlm_models", lambda cfg: [
        {"family": "fake", "weights_id": "fake", "native_image_size": None, "canvas_size": [32, 32],
         "canvas": "--image-size"} for _ in cfg.models])
    task = get_task("vlm")
    vocab = tmp_path / "one.yaml"
    vocab.write_text("name: one\nwords:\n  - {text: pizza, target: pizza}\n")
    cfg = task.load_config(None, {"model": "org/fake", "data": "sample", "vocab": str(vocab), "limit": 2,
                                  "fractions": [0.001], "placement": ["center"], "device": "cpu", "workers": 0,
                                  "image_size": 32, "cache_dir": str(cache_dir), "out": str(tmp_path / "out")})
    with pytest.raises(UnreachableFractionError) as caught:
        task.plan(cfg, NullProgress())
    assert re.search(r"on a 32x32 canvas: the smallest reachable fraction is 0\.\d{4}; pass --fraction 0\.\d{4} or "
                     r"more, or a larger canvas \(--image-size\)$", str(caught.value)), str(caught.value)
