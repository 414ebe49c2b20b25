"""stroop.csv does not depend on the machine: a bundled font is recorded by its file name (another
font by the path given), and what reads the column back (the examples re-rendering, `report`)
still finds the font, for new tables and for tables written with absolute paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from typoattack.tasks.stroop.tables import read_stroop_csv
from typoattack.attack.stroop import (
    StroopCondition, StroopStimulus, get_base_size, get_font_label, render_stimulus, resolve_font_label,
)
from typoattack.cli import app
from typoattack.constants import FONTS_DIR
from typoattack.tasks.stroop.task import collect_stroop_examples

runner = CliRunner()
BUNDLED = "DejaVuSans-Bold.ttf"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stroop-font")
    mine = root / "fonts" / "mine.ttf"
    mine.parent.mkdir()
    shutil.copy(FONTS_DIR / "DejaVuSans.ttf", mine)
    out = root / "out"
    result = runner.invoke(app, ["stroop", "--model", "typoattack-tiny", "--pretrained", "seed:0", "--device", "cpu",
                                 "--font", BUNDLED, "--font", str(mine), "--cache-dir", str(cache_dir),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"out": out, "mine": mine}


def test_font_column_names_bundled_fonts_by_file_name(run) -> None:
    rows = pd.read_csv(run["out"] / "stroop.csv", keep_default_na=False)
    assert list(dict.fromkeys(rows["font"])) == [BUNDLED, str(run["mine"])]
    for name in ("stroop.csv", "stroop_summary.csv"):
        assert str(FONTS_DIR) not in (run["out"] / name).read_text(), name
    info = json.loads((run["out"] / "run.json").read_text())
    assert sorted(info["models"][0]["base_font_sizes"]) == sorted([BUNDLED, str(run["mine"])])


def test_labels_round_trip() -> None:
    assert get_font_label(str(FONTS_DIR / BUNDLED)) == BUNDLED
    assert resolve_font_label(BUNDLED) == str(FONTS_DIR / BUNDLED)
    assert get_font_label("/elsewhere/DejaVuSans-Bold.ttf") == "/elsewhere/DejaVuSans-Bold.ttf"
    assert resolve_font_label("/elsewhere/DejaVuSans-Bold.ttf") == "/elsewhere/DejaVuSans-Bold.ttf"
    assert resolve_font_label("no-such-font.ttf") == "no-such-font.ttf"


def _render_by_path(rows: pd.DataFrame, info: dict) -> list[np.ndarray]:
    """The examples drawn directly with the bundled font's path in this installation."""
    model, config = info["models"][0], info["config"]
    canvas = tuple(model["input_size"])
    path = str(FONTS_DIR / BUNDLED)
    words = list(dict.fromkeys(rows["word"]))
    size = get_base_size(words, path, canvas)
    assert size == model["base_font_sizes"][BUNDLED]
    colours = {c["name"]: c["rgb"] for c in info["colours"]["colours"]}
    mine = rows[(rows["font"] == BUNDLED) & (rows["background"] == rows["background"].iloc[0]) & (rows["variant"] == 0)]
    return [render_stimulus(StroopStimulus(r.ink, r.word, StroopCondition(r.condition), 0, path, r.background),
                            tuple(int(colours[r.ink][i:i + 2], 16) for i in (1, 3, 5)), size, canvas,
                            int(config["seed"])) for r in mine.itertuples()]


def test_examples_are_re_rendered_from_the_column(run) -> None:
    rows = read_stroop_csv(run["out"] / "stroop.csv")
    info = json.loads((run["out"] / "run.json").read_text())
    examples = collect_stroop_examples(rows, info)
    expected = _render_by_path(rows, info)
    assert len(examples) == len(expected) == 64
    for got, want in zip(examples, expected):
        assert np.array_equal(got["image"], want)

    # A table written before fonts were recorded by name (absolute path in the column and keys) still works.
    absolute = str(FONTS_DIR / BUNDLED)
    old_rows = rows.assign(font=rows["font"].replace({BUNDLED: absolute}))
    old_info = json.loads(json.dumps(info))
    sizes = old_info["models"][0]["base_font_sizes"]
    sizes[absolute] = sizes.pop(BUNDLED)
    for got, want in zip(collect_stroop_examples(old_rows, old_info), expected):
        assert np.array_equal(got["image"], want)


def test_report_reads_the_table_back(run) -> None:
    result = runner.invoke(app, ["report", str(run["out"])])
    assert result.exit_code == 0, result.output
    assert (run["out"] / "report" / "stroop_examples.png").is_file()
