"""`typoattack stroop`: the stimulus set, exact ink rendering, the colour-set and prompt checks, the
summary against a plain recomputation from stroop.csv, and real runs of the tiny model."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFont
from typer.testing import CliRunner

from typoattack.attack.stroop import (
    Colour, ColourSet, StroopCondition, StroopStimulus, get_base_size, get_layout, list_stimuli, render_stimulus,
)
from typoattack.cli import app
from typoattack.tasks.stroop.config import DEFAULT_PROMPT, COLOURS_DIR, load_colours, load_stroop_config
from typoattack.constants import DEFAULT_FONT, FONTS_DIR
from typoattack.errors import ConfigError

runner = CliRunner()
DISTILL_INKS = ["black", "red", "green", "blue", "purple", "orange", "pink", "yellow"]
DISTILL_WORDS = ["red", "green", "blue", "purple", "orange", "pink", "yellow"]
FONT = str(DEFAULT_FONT)
WHITE = "#ffffff"
CANVAS = (224, 224)


def _distill() -> ColourSet:
    return load_colours(COLOURS_DIR / "distill.yaml")


def test_default_stimuli_are_distills_64() -> None:
    cfg = load_stroop_config(None, {"model": "typoattack-tiny", "pretrained": "seed:0"})
    assert cfg.prompts == ("my favorite word, written in the color {}",) and cfg.variants == 1
    colours = load_colours(cfg.colours)
    assert colours.names == DISTILL_INKS
    stimuli = list_stimuli(colours, cfg.neutral_word, cfg.fonts, cfg.background_colours, cfg.variants)
    assert len(stimuli) == 64 and cfg.backgrounds == ((255, 255, 255),) and {s.background for s in stimuli} == {WHITE}
    by_condition = {c: {(s.ink, s.word) for s in stimuli if s.condition is c} for c in StroopCondition}
    assert by_condition[StroopCondition.NEUTRAL] == {(ink, "example") for ink in DISTILL_INKS}
    assert by_condition[StroopCondition.CONGRUENT] == {(w, w) for w in DISTILL_WORDS}
    assert by_condition[StroopCondition.INCONGRUENT] == {(ink, w) for ink in DISTILL_INKS for w in DISTILL_WORDS
                                                         if ink != w}
    assert [len(v) for v in by_condition.values()] == [8, 7, 49]
    assert "black" not in {s.word for s in stimuli}


def test_variants_fonts_and_backgrounds_multiply_the_set() -> None:
    colours = _distill()
    fonts = [FONT, str(FONTS_DIR / "DejaVuSans.ttf")]
    stimuli = list_stimuli(colours, "example", fonts, [WHITE, "image:a.png"], 3)
    assert len(stimuli) == 64 * 3 * 2 * 2
    pairs = pd.DataFrame([(s.ink, s.word, s.variant, s.font, s.background) for s in stimuli])
    assert not pairs.duplicated().any()
    assert pairs.groupby([0, 1]).size().eq(3 * 2 * 2).all()
    assert sorted(set(pairs[2])) == [0, 1, 2]
    with pytest.raises(ConfigError, match="names no colour"):
        list_stimuli(colours, "red", [FONT], [WHITE], 1)


@pytest.mark.parametrize("variant", [0, 1, 7])
def test_rendered_pixels_are_exactly_the_ink_and_the_background(variant: int) -> None:
    colours = _distill()
    background = (200, 210, 220)
    size = get_base_size(["example", *DISTILL_WORDS], FONT, CANVAS)
    for ink in colours.colours:
        stimulus = StroopStimulus(ink.name, "purple", StroopCondition.INCONGRUENT, variant, FONT, "#c8d2dc")
        image = render_stimulus(stimulus, ink.rgb, size, CANVAS, seed=3)
        assert image.shape == (*CANVAS, 3) and image.dtype == np.uint8
        values, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
        assert {tuple(int(x) for x in v) for v in values} == {ink.rgb, background}
        ink_share = counts[[tuple(v) == ink.rgb for v in values.tolist()]][0] / (CANVAS[0] * CANVAS[1])
        assert 0.01 < ink_share < 0.3
        np.testing.assert_array_equal(image, render_stimulus(stimulus, ink.rgb, size, CANVAS, seed=3))


def test_text_on_a_photo_is_exactly_the_ink_and_the_rest_is_the_photo() -> None:
    photo = np.random.default_rng(0).integers(0, 256, (*CANVAS, 3), dtype=np.uint8)
    size = get_base_size(["example", *DISTILL_WORDS], FONT, CANVAS)
    on_white = StroopStimulus("green", "red", StroopCondition.INCONGRUENT, 2, FONT, WHITE)
    on_photo = StroopStimulus("green", "red", StroopCondition.INCONGRUENT, 2, FONT, "image:n01_x.JPEG")
    text = (render_stimulus(on_white, (0, 128, 0), size, CANVAS, 0) == (0, 128, 0)).all(axis=-1)
    image = render_stimulus(on_photo, (0, 128, 0), size, CANVAS, 0, photo)
    assert text.sum() > 100
    assert (image[text] == (0, 128, 0)).all()
    np.testing.assert_array_equal(image[~text], photo[~text])
    with pytest.raises(ValueError, match="needs a uint8"):
        render_stimulus(on_photo, (0, 128, 0), size, CANVAS, 0)


def _ink_box(image: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int, int, int]:
    ink = np.argwhere((image == rgb).all(axis=-1))
    return int(ink[:, 1].min()), int(ink[:, 0].min()), int(ink[:, 1].max()) + 1, int(ink[:, 0].max()) + 1


def test_base_size_fits_the_longest_word() -> None:
    words = ["example", *DISTILL_WORDS]
    size = get_base_size(words, FONT, CANVAS)

    def widest(s: int) -> int:
        font = ImageFont.truetype(FONT, s)
        return max(font.getbbox(w)[2] - font.getbbox(w)[0] for w in words)

    assert widest(size) <= 0.9 * 224 and (size == round(0.2 * 224) or widest(size + 1) > 0.9 * 224)


def test_jitter_is_seeded_per_stimulus_and_keeps_the_word_whole() -> None:
    size = get_base_size(["example", *DISTILL_WORDS], FONT, CANVAS)
    centred = StroopStimulus("red", "example", StroopCondition.NEUTRAL, 0, FONT, WHITE)
    x0, y0, x1, y1 = _ink_box(render_stimulus(centred, (255, 0, 0), size, CANVAS, seed=0), (255, 0, 0))
    assert abs((x0 + x1) - 224) <= 2 and abs((y0 + y1) - 224) <= 2
    assert get_layout(centred, size, CANVAS, seed=0)[0] == size
    layouts = {}
    for variant in range(1, 30):
        s = StroopStimulus("red", "example", StroopCondition.NEUTRAL, variant, FONT, WHITE)
        font_size, x, y = get_layout(s, size, CANVAS, seed=0)
        box = _ink_box(render_stimulus(s, (255, 0, 0), size, CANVAS, seed=0), (255, 0, 0))
        # The whole word is drawn where the layout says (never clipped by the canvas edge).
        font = ImageFont.truetype(FONT, font_size)
        left, top, right, bottom = font.getbbox("example")
        assert abs(box[0] - x) <= 3 and abs(box[1] - y) <= 3
        assert abs((box[2] - box[0]) - (right - left)) <= 4 and abs((box[3] - box[1]) - (bottom - top)) <= 4
        layouts[variant] = (font_size, x, y)
    assert len(set(layouts.values())) == len(layouts)
    assert len({fs for fs, _, _ in layouts.values()}) > 3
    # Keyed on (seed, ink, word, variant): the same size factor in another font; another seed moves it.
    other_font = StroopStimulus("red", "example", StroopCondition.NEUTRAL, 5, str(FONTS_DIR / "DejaVuSans.ttf"), WHITE)
    assert get_layout(other_font, size, CANVAS, seed=0)[0] == layouts[5][0]
    moved = get_layout(StroopStimulus("red", "example", StroopCondition.NEUTRAL, 5, FONT, WHITE), size, CANVAS, seed=1)
    assert moved != layouts[5]


@pytest.mark.parametrize(("content", "message"), [
    ("colours:\n  - {name: red}\n", "must be a mapping with `name` and `rgb`"),
    ("colours:\n  - {name: red, rgb: '#ff00zz'}\n  - {name: blue, rgb: blue}\n", "is not a colour"),
    ("colours:\n  - {name: red, rgb: [255, 0, 0]}\n  - {name: red, rgb: [0, 0, 255]}\n", "appears twice"),
    ("colours:\n  - {name: red, rgb: [255, 0, 0]}\n  - {name: scarlet, rgb: '#ff0000'}\n", "share the RGB value"),
    ("colours:\n  - {name: red, rgb: [255, 0, 0], wrd: false}\n", "Did you mean 'word'"),
    ("colors:\n  - {name: red, rgb: [255, 0, 0]}\n", "unknown key `colors`"),
    ("colours:\n  - {name: red, rgb: [255, 0, 0]}\n", "at least two colours"),
    ("colours: [unclosed\n", "not valid YAML"),
])
def test_bad_colour_file_is_one_red_line(tmp_path, content: str, message: str) -> None:
    path = tmp_path / "colours.yaml"
    path.write_text(content)
    result = runner.invoke(app, ["stroop", "--model", "typoattack-tiny", "--pretrained", "seed:0",
                                 "--colours", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "a photo of the color red"], "must contain exactly one {}"),
    (["--prompt", DEFAULT_PROMPT, "--prompt", "{} and {}"], "must contain exactly one {}"),
    (["--colours", "distil"], "Did you mean 'distill'"),
    (["--neutral-word", "blue"], "is one of the colours"),
    (["--background", "nocolour"], "is not a colour"),
    (["--variants", "0"], "variants must be"),
    (["--font", "missing.ttf"], "does not exist"),
    (["--neutral-word", "名前"], "has no glyph"),
    (["--precision", "fp16"], "fp16 needs a CUDA device"),
    (["--model", "ViT-B-3"], "unknown open_clip model 'ViT-B-3'"),
    (["--background-data", "/nonexistent/photos"], "does not exist"),
])
def test_user_errors_are_one_red_line(tmp_path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["stroop", "--model", "typoattack-tiny", "--pretrained", "seed:0",
                                 "--out", str(tmp_path / "out"), "--device", "cpu", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0], result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _recompute_summary(path: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    """The summary, recomputed with the csv module from stroop.csv."""
    counts: dict[tuple[str, str, str], list[int]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            c = counts.setdefault((row["model"], row["pretrained"], row["condition"]), [0, 0, 0])
            c[0] += 1
            c[1] += row["pred"] == row["ink"]
            c[2] += row["pred"] == row["word"]
    out = {}
    for key, (n, k_ink, k_word) in counts.items():
        out[key] = {"n": n, "ink_acc": k_ink / n, "ink_acc_ci_low": _wilson(k_ink, n)[0],
                    "ink_acc_ci_high": _wilson(k_ink, n)[1]}
        if key[2] != "neutral":
            out[key].update(word_rate=k_word / n, word_rate_ci_low=_wilson(k_word, n)[0],
                            word_rate_ci_high=_wilson(k_word, n)[1])
    return out


def test_tiny_models_end_to_end_summary_report_and_rerun(tmp_path, cache_dir) -> None:
    config = tmp_path / "stroop.yaml"
    config.write_text("models:\n  - {name: typoattack-tiny, pretrained: 'seed:0'}\n"
                      "  - {name: typoattack-reader-tiny, pretrained: ci500}\nvariants: 2\nseed: 5\n")
    out = tmp_path / "run"
    args = ["stroop", "--config", str(config), "--device", "cpu", "--cache-dir", str(cache_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED MODEL" in result.output and "DEMO MODEL" in result.output
    for name in ("stroop.csv", "stroop_summary.csv", "stroop_matrix.png", "stroop_examples.png", "run.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run.json").read_text())
    assert info["task"] == "stroop" and info["complete"] and info["config"]["seed"] == 5 and info["n_stimuli"] == 128
    assert info["config"]["prompts"] == [DEFAULT_PROMPT] and [m["name"] for m in info["models"]] == [
        "typoattack-tiny", "typoattack-reader-tiny"]
    rows = pd.read_csv(out / "stroop.csv", keep_default_na=False)
    assert len(rows) == 2 * 128
    assert rows.groupby(["model", "condition"]).size().to_dict() == {
        (m, c): n * 2 for m in ("typoattack-tiny", "typoattack-reader-tiny")
        for c, n in (("neutral", 8), ("congruent", 7), ("incongruent", 49))}
    assert set(rows["pred"]) <= set(DISTILL_INKS)
    assert (rows.loc[rows["condition"] == "neutral", "p_word"] == "").all()

    summary = pd.read_csv(out / "stroop_summary.csv", keep_default_na=False, na_values=[""])
    expected = _recompute_summary(out / "stroop.csv")
    assert len(summary) == len(expected) == 6
    assert list(summary["condition"][:3]) == ["neutral", "congruent", "incongruent"]
    for r in summary.to_dict("records"):
        want = expected[(r["model"], r["pretrained"], r["condition"])]
        for key in ("n", "ink_acc", "ink_acc_ci_low", "ink_acc_ci_high", "word_rate", "word_rate_ci_low",
                    "word_rate_ci_high"):
            if key in want:
                assert r[key] == pytest.approx(want[key], abs=1e-6), key
            else:
                assert math.isnan(r[key]), key

    # The report recomputes the summary from stroop.csv alone and writes its own section.
    before = (out / "stroop_summary.csv").read_text()
    (out / "stroop_summary.csv").unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "stroop_summary.csv").read_text() == before
    report = (out / "report" / "report.md").read_text()
    assert "## Stroop test" in report and "UNTRAINED MODEL" in report and "read as ink [95% CI]" in report
    assert (out / "report" / "report.html").is_file() and (out / "report" / "stroop_matrix.png").is_file()

    # The same command again (the batch size is a speed setting: the complete run is kept) gives the same
    # rows; another seed into the same folder is refused.
    first = (out / "stroop.csv").read_text()
    assert runner.invoke(app, [*args, "--batch-size", "9"]).exit_code == 0
    assert (out / "stroop.csv").read_text() == first
    result = runner.invoke(app, [*args, "--seed", "1"])
    assert result.exit_code == 1 and "holds a different run" in result.output


def test_predictions_equal_open_clips_zero_shot(tiny_model, tmp_path, cache_dir) -> None:
    """The run's prediction and probabilities for a stimulus equal a zero-shot classification done
    by hand with open_clip's classifier builder and eval preprocessing."""
    out = tmp_path / "run"
    prompts = ["a {} word", "the colour {}"]
    result = runner.invoke(app, ["stroop", "--model", "typoattack-tiny", "--pretrained", "seed:0", "--device", "cpu",
                                 "--prompt", prompts[0], "--prompt", "the colour {c}", "--background", "#202020",
                                 "--cache-dir", str(cache_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "stroop.csv", keep_default_na=False)
    assert set(rows["background"]) == {"#202020"}
    colours = _distill()
    classifier = open_clip.build_zero_shot_classifier(tiny_model.model, tiny_model.tokenizer, colours.names, prompts,
                                                      device="cpu")
    preprocess = open_clip.image_transform(224, is_train=False, mean=tiny_model.geometry.mean, std=tiny_model.geometry.std)
    size = get_base_size(["example", *DISTILL_WORDS], FONT, CANVAS)
    for r in rows.sample(6, random_state=0).itertuples():
        stimulus = StroopStimulus(r.ink, r.word, StroopCondition(r.condition), 0, FONT, "#202020")
        image = Image.fromarray(render_stimulus(stimulus, colours.get_rgb(r.ink), size, CANVAS, seed=0))
        with torch.no_grad():
            features = tiny_model.model.encode_image(preprocess(image)[None], normalize=True)
            probs = torch.softmax(100 * features @ classifier, dim=1)[0]
        assert colours.names[int(probs.argmax())] == r.pred
        assert float(probs[colours.names.index(r.ink)]) == pytest.approx(float(r.p_ink), abs=2e-6)


def test_stroop_analysis_and_stimuli_import_no_model_code() -> None:
    code = ("import sys, typoattack.tasks.stroop.tables, typoattack.attack.stroop; bad = [m for m in ('torch', 'open_clip', "
            "'typer', 'typoattack.backends.open_clip') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_colour_set_rejects_no_written_word() -> None:
    with pytest.raises(ConfigError, match="writes no colour"):
        ColourSet("x", (Colour("red", (255, 0, 0), False), Colour("blue", (0, 0, 255), False)))


def test_photo_backgrounds_and_a_report_beside_an_eval_run(sample_dir, tmp_path, cache_dir) -> None:
    out = tmp_path / "stroop"
    result = runner.invoke(app, ["stroop", "--model", "typoattack-tiny", "--pretrained", "seed:0", "--device", "cpu",
                                 "--background-data", str(sample_dir), "--background-limit", "2",
                                 "--cache-dir", str(cache_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "stroop.csv", keep_default_na=False)
    photos = sorted(set(rows["background"]))
    # Photos replace the default white background; each is a shipped sample image.
    assert len(rows) == 64 * 2 and len(photos) == 2 and all(p.startswith("image:n") for p in photos)
    assert all((sample_dir / p.removeprefix("image:")).is_file() for p in photos)
    summary = pd.read_csv(out / "stroop_summary.csv", keep_default_na=False, na_values=[""])
    assert list(summary["background"]) == ["images"] * 3 and list(summary["n"]) == [16, 14, 98]

    evaluated = tmp_path / "eval"
    templates = tmp_path / "one.yaml"
    templates.write_text("- a photo of a {}.\n")
    vocab = tmp_path / "one-word.yaml"
    vocab.write_text("name: one\nwords:\n  - {text: pizza, target: pizza}\n")
    result = runner.invoke(app, ["eval", "--data", str(sample_dir), "--model", "typoattack-tiny", "--pretrained",
                                 "seed:0", "--limit", "4", "--templates", str(templates), "--vocab", str(vocab), "--device", "cpu", "--workers", "0",
                                 "--cache-dir", str(cache_dir), "--out", str(evaluated)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "report"
    result = runner.invoke(app, ["report", str(evaluated), str(out), "--out", str(report)])
    assert result.exit_code == 0, result.output
    assert "## Stroop test" not in (report / "report.md").read_text()
    assert "## Stroop test" in (report / "stroop_report.md").read_text()
    for name in ("leaderboard.csv", "examples.png", "stroop_matrix.png", "stroop_examples.png", "stroop_summary.csv"):
        assert (report / name).is_file(), name


def test_config_yaml_is_overridden_by_flags_and_paths_are_relative_to_it(tmp_path) -> None:
    (tmp_path / "fonts").mkdir()
    font = tmp_path / "fonts" / "mine.ttf"
    font.write_bytes(DEFAULT_FONT.read_bytes())
    (tmp_path / "mine.yaml").write_text("colours:\n  - {name: red, rgb: [255, 0, 0]}\n  - {name: blue, rgb: blue}\n")
    config = tmp_path / "stroop.yaml"
    config.write_text("model: typoattack-tiny\npretrained: 'seed:0'\ncolours: mine.yaml\nfont: fonts/mine.ttf\n"
                      "background: [[10, 20, 30], gray]\nprompt: 'a {c} word'\nvariants: 2\nout: runs/x\n")
    cfg = load_stroop_config(config, {"variants": 4, "seed": None})
    assert cfg.variants == 4 and cfg.seed == 0
    assert cfg.colours == str(tmp_path / "mine.yaml") and cfg.fonts == (str(font),)
    assert cfg.backgrounds == ((10, 20, 30), (128, 128, 128)) and cfg.prompts == ("a {} word",)
    assert cfg.out == str(tmp_path / "runs" / "x")
    assert load_colours(cfg.colours).names == ["red", "blue"]
    assert load_stroop_config(config, {"background": ["white"]}).backgrounds == ((255, 255, 255),)
    with pytest.raises(ConfigError, match="unknown config key `variant`"):
        load_stroop_config(None, {"model": "typoattack-tiny", "pretrained": "seed:0", "variant": 2})
