"""Tests of typoattack.analysis.plots: figure files, sizes, labels and empty input."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from typoattack.analysis import plots
from synthetic_tables import CLASS_NAMES, FRACTIONS, MODELS, PLACEMENTS, WORDS, make_records, with_fills
from typoattack.analysis.metrics import PER_WORD_COLUMNS, build_per_word_table

@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return make_records()


@pytest.fixture(scope="module")
def per_word(records) -> pd.DataFrame:
    return build_per_word_table(records, CLASS_NAMES)


@pytest.fixture
def examples() -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for word, target in WORDS.items():
        for k in range(2):
            out.append({"word": word, "image": rng.integers(0, 256, (64, 48, 3), dtype=np.uint8),
                        "true_name": CLASS_NAMES[3], "clean_pred": CLASS_NAMES[3],
                        "attacked_pred": CLASS_NAMES[target] if k == 0 else CLASS_NAMES[7],
                        "target_name": CLASS_NAMES[target]})
    return out


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def _assert_size_and_not_blank(path: Path, size_inches: tuple[float, float]) -> None:
    pixels = _png(path)
    want_w, want_h = (round(s * plots.DPI) for s in size_inches)
    assert abs(pixels.shape[1] - want_w) <= 3 and abs(pixels.shape[0] - want_h) <= 3, (pixels.shape, want_w, want_h)
    assert pixels.std() > 10
    non_white = (pixels < 200).any(axis=2).mean()
    assert non_white > 0.01


@pytest.fixture
def captured(monkeypatch) -> list:
    """The matplotlib figures the plot functions save (kept open for inspection)."""
    figures = []
    original = plots.save_figure

    def save(fig, path):
        figures.append(fig)
        fig.savefig(path, dpi=plots.DPI, format="png")

    monkeypatch.setattr(plots, "save_figure", save)
    yield figures
    for fig in figures:
        plt.close(fig)
    assert original is not None


# --------------------------------------------------------------------------- figure files


def test_asr_vs_fraction_png(per_word, tmp_path):
    path = tmp_path / "asr_vs_fraction.png"
    plots.plot_asr_vs_fraction(per_word, path)
    n_panels = len(MODELS) * len(PLACEMENTS)
    ncols = min(n_panels, plots.ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(n_panels / ncols)
    legend_rows = math.ceil(len(WORDS) / plots.LEGEND_MAX_COLS)
    _assert_size_and_not_blank(path, (plots.PANEL_W * ncols,
                                      plots.PANEL_H * nrows + plots.TITLE_H + plots.LEGEND_ROW_H * legend_rows))


def test_asr_by_word_png(per_word, tmp_path):
    path = tmp_path / "asr_by_word.png"
    plots.plot_asr_by_word(per_word, path)
    per_word_w = max(plots.BAR_W_PER_WORD_MIN, plots.BAR_W_PER_BAR * len(MODELS))
    panel_w = max(plots.BAR_PANEL_MIN_W, plots.BAR_PANEL_BASE_W + len(WORDS) * per_word_w)
    n_rows = len(FRACTIONS) * len(PLACEMENTS)
    legend_h = plots.LEGEND_ROW_H * (1 + math.ceil(len(MODELS) / plots.BAR_LEGEND_MAX_COLS))
    _assert_size_and_not_blank(path, (2 * panel_w, plots.BAR_PANEL_H * n_rows + plots.TITLE_H + legend_h))


def test_accuracy_png(per_word, tmp_path):
    path = tmp_path / "accuracy.png"
    plots.plot_accuracy(per_word, path)
    n_series = 2 + len(FRACTIONS)
    width = max(plots.ACC_MIN_W, plots.ACC_BASE_W + plots.ACC_W_PER_BAR * len(MODELS) * n_series)
    _assert_size_and_not_blank(path, (width, plots.ACC_H))


@pytest.mark.parametrize("top_n", [15, 4])
def test_confusion_png(records, tmp_path, top_n):
    path = tmp_path / "confusion.png"
    plots.plot_confusion(records, "iPod", CLASS_NAMES, path, top_n=top_n)
    first = records[(records["word"] == "iPod") & (records["model"] == "ViT-B-32")]
    n_cols = min(top_n, first["pred_index"].nunique())
    n_rows = min(top_n, first["true_index"].nunique())
    _assert_size_and_not_blank(path, (plots.CONF_BASE_W + plots.CONF_CELL * n_cols,
                                      plots.CONF_BASE_H + plots.CONF_CELL * n_rows))


def test_examples_png(examples, tmp_path):
    path = tmp_path / "examples.png"
    plots.plot_examples(examples, path)
    _assert_size_and_not_blank(path, (plots.EX_W * 2, plots.EX_H * len(WORDS) + plots.EX_TITLE_H))


def test_examples_ragged_rows_use_widest_word(examples, tmp_path):
    path = tmp_path / "examples.png"
    plots.plot_examples(examples + [dict(examples[0])], path)  # "iPod" now has 3 images
    _assert_size_and_not_blank(path, (plots.EX_W * 3, plots.EX_H * len(WORDS) + plots.EX_TITLE_H))


def test_example_caption_marks_success():
    base = {"word": "iPod", "true_name": "tench", "target_name": "iPod"}
    caption, ok = plots._example_caption({**base, "clean_pred": "tench", "attacked_pred": "iPod"})
    assert ok and "✓" in caption and "true: tench" in caption and "attacked: iPod" in caption
    # Already the target before the attack: not a success.
    caption, ok = plots._example_caption({**base, "clean_pred": "iPod", "attacked_pred": "iPod"})
    assert not ok and "✗" in caption
    _, ok = plots._example_caption({**base, "clean_pred": "tench", "attacked_pred": "goldfish"})
    assert not ok


def test_examples_rejects_bad_image(examples, tmp_path):
    bad = [{**examples[0], "image": np.zeros((8, 8), dtype=np.uint8)}]
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        plots.plot_examples(bad, tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks the key"):
        plots.plot_examples([{"word": "x"}], tmp_path / "x.png")


def test_figures_have_titles_labels_and_legends(per_word, records, captured, tmp_path):
    plots.plot_asr_vs_fraction(per_word, tmp_path / "a.png")
    plots.plot_asr_by_word(per_word, tmp_path / "b.png")
    plots.plot_accuracy(per_word, tmp_path / "c.png")
    for fig in captured:
        axes = [ax for ax in fig.axes if ax.get_visible()]
        assert axes
        for ax in axes:
            assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel()
        legends = list(fig.legends) + [ax.get_legend() for ax in axes if ax.get_legend()]
        assert legends
        labels = {t.get_text() for lg in legends for t in lg.get_texts()}
        assert labels
    asr_fig, bar_fig, acc_fig = captured
    legend_words = {t.get_text() for t in asr_fig.legends[0].get_texts()}
    assert legend_words == {f"“{w}” → {CLASS_NAMES[t]}" for w, t in WORDS.items()}
    assert {t.get_text() for t in bar_fig.legends[0].get_texts()} == {f"{m}/{p}" for m, p, *_ in MODELS}
    # Shared 0-100% y axis on every ASR panel.
    assert all(ax.get_ylim() == (0.0, 100.0) for ax in asr_fig.axes if ax.get_visible())
    # plot_accuracy: value labels equal the table's means.
    acc_ax = acc_fig.axes[0]
    texts = {t.get_text() for t in acc_ax.texts}
    for (m, p), rows in per_word.groupby(["model", "pretrained"]):
        assert f"{100 * rows['clean_top1'].mean():.1f}" in texts
        assert f"{100 * rows['attacked_top1'].mean():.1f}" in texts
        for f in FRACTIONS:
            assert f"{100 * rows.loc[rows['fraction'] == f, 'attacked_top1'].mean():.1f}" in texts


def test_asr_vs_fraction_plots_measured_cover(per_word, captured, tmp_path):
    plots.plot_asr_vs_fraction(per_word, tmp_path / "a.png")
    ax = captured[0].axes[0]  # first panel: first model, first placement
    model, pretrained = sorted((m, p) for m, p, *_ in MODELS)[0]
    rows = per_word[(per_word["model"] == model) & (per_word["pretrained"] == pretrained)
                    & (per_word["placement"] == "paper8") & (per_word["word"] == "iPod")].sort_values("fraction")
    line = next(ln for ln in ax.get_lines() if ln.get_label() == f"“iPod” → {CLASS_NAMES[605]}")
    np.testing.assert_allclose(line.get_xdata(), 100 * rows["pixel_cover_mean"].to_numpy())
    np.testing.assert_allclose(line.get_ydata(), 100 * rows["asr"].to_numpy())
    assert model in ax.get_title() and "paper8" in ax.get_title()


def test_confusion_uses_first_model_and_counts(records, captured, tmp_path):
    plots.plot_confusion(records, "<b>&", CLASS_NAMES, tmp_path / "c.png", top_n=5)
    ax = captured[0].axes[0]
    first = records[(records["word"] == "<b>&") & (records["model"] == "ViT-B-32")]
    assert "ViT-B-32/openai" in ax.get_title() and "first of 2 models" in ax.get_title()
    shown_cols = [t.get_text() for t in ax.get_xticklabels()]
    shown_rows = [t.get_text() for t in ax.get_yticklabels()]
    assert len(shown_cols) == 5 and len(shown_rows) == 5
    assert all(len(s) <= plots.CLASS_NAME_MAX for s in shown_cols + shown_rows)
    counts = first.groupby("pred_index").size()
    top_pred = counts.sort_values(ascending=False, kind="stable").index[0]
    assert shown_cols[0] == plots.truncate_label(CLASS_NAMES[top_pred])
    # The annotated counts are the cells of the crosstab restricted to the shown classes.
    name_to_idx = {plots.truncate_label(n): i for i, n in enumerate(CLASS_NAMES)}
    cross = pd.crosstab(first["true_index"], first["pred_index"])
    want = sum(int(cross.loc[name_to_idx[r], name_to_idx[c]]) for r in shown_rows for c in shown_cols)
    assert sum(int(t.get_text()) for t in ax.texts) == want > 0
    assert want <= len(first)


def test_confusion_long_class_name_truncated(records, captured, tmp_path):
    plots.plot_confusion(records, "iPod", CLASS_NAMES, tmp_path / "c.png", top_n=50)
    labels = [t.get_text() for t in captured[0].axes[0].get_yticklabels()]
    assert plots.truncate_label(CLASS_NAMES[7]) in labels
    assert plots.truncate_label(CLASS_NAMES[7]).endswith("…") and len(plots.truncate_label(CLASS_NAMES[7])) == 18


def test_style_columns_add_panels(per_word, tmp_path, captured):
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    plots.plot_asr_vs_fraction(per_word, plain)
    plots.plot_asr_vs_fraction(with_fills(per_word), styled)
    a, b = _png(plain), _png(styled)
    assert b.shape[0] * b.shape[1] > a.shape[0] * a.shape[1]
    visible = [sum(ax.get_visible() for ax in fig.axes) for fig in captured]
    assert visible == [4, 8]
    titles = [ax.get_title() for ax in captured[1].axes if ax.get_visible()]
    assert sum("fill=red" in t for t in titles) == 4 and sum("fill=white" in t for t in titles) == 4
    assert not any("outline" in t for t in titles)  # constant style columns are not named


def test_style_columns_split_bar_rows(per_word, tmp_path):
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    plots.plot_asr_by_word(per_word, plain)
    plots.plot_asr_by_word(with_fills(per_word), styled)
    assert _png(styled).shape[0] > _png(plain).shape[0]


@pytest.mark.parametrize("function", [plots.plot_asr_vs_fraction, plots.plot_asr_by_word, plots.plot_accuracy])
def test_empty_per_word_raises(function, tmp_path):
    empty = pd.DataFrame(columns=PER_WORD_COLUMNS)
    with pytest.raises(ValueError, match=rf"{function.__name__}: the per-word table is empty"):
        function(empty, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_column_raises(per_word, tmp_path):
    with pytest.raises(ValueError, match="lacks the column"):
        plots.plot_asr_vs_fraction(per_word.drop(columns=["pixel_cover_mean"]), tmp_path / "x.png")


def test_confusion_and_examples_empty_raise(records, tmp_path):
    with pytest.raises(ValueError, match=r"no attacked record of the word 'pizza'.*'iPod'"):
        plots.plot_confusion(records, "pizza", CLASS_NAMES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no attacked record"):
        plots.plot_confusion(records, "", CLASS_NAMES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no examples"):
        plots.plot_examples([], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_analysis_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys, typoattack.analysis.plots, typoattack.analysis.report, typoattack.analysis.metrics; bad = [m for m in ('torch', 'open_clip', 'typer', 'typoattack.backends', "
            "'typoattack.engine', 'typoattack.tasks') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
