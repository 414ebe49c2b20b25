"""Tests of typoattack.analysis.plots: figure files, sizes, labels and empty input."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from typoattack.analysis import confusion_plots, example_plots, plots, vocab_plots
from synthetic_tables import CLASS_NAMES, FRACTIONS, MODELS, PLACEMENTS, WORDS, make_records, with_fills
from typoattack.analysis.figure_style import ASR_BOTTOM_MARGIN, get_asr_axis
from typoattack.analysis.metrics import PER_WORD_COLUMNS, build_class_gains, build_confusion_table, build_per_word_table

@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return make_records()


@pytest.fixture(scope="module")
def per_word(records) -> pd.DataFrame:
    return build_per_word_table(records, CLASS_NAMES)


@pytest.fixture(scope="module")
def confusion(records) -> pd.DataFrame:
    return build_confusion_table(records)


CONDITIONS = ["fraction 0.04 · paper8", "fraction 0.1 · random"]


@pytest.fixture
def examples() -> list[dict]:
    """One image per word under two conditions (the first attack succeeds, the second does not)."""
    rng = np.random.default_rng(1)
    out = []
    for i, (word, target) in enumerate(WORDS.items()):
        clean = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
        for k, condition in enumerate(CONDITIONS):
            out.append({"word": word, "image_id": f"img{i}", "condition": condition, "clean_image": clean,
                        "image": rng.integers(0, 256, (64, 48, 3), dtype=np.uint8),
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

    def save(fig, path, palette=False):
        figures.append(fig)
        fig.savefig(path, dpi=plots.DPI, format="png")

    monkeypatch.setattr(plots, "save_figure", save)
    monkeypatch.setattr(vocab_plots, "save_figure", save)
    monkeypatch.setattr(confusion_plots, "save_figure", save)
    monkeypatch.setattr(example_plots, "save_figure", save)
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


def _expected_heatmap_shape(records: pd.DataFrame, word: str, target: int, top_n: int) -> tuple[int, int]:
    """Rows: per model the clean images and each condition; columns: the classes that gained images
    (at most top_n), plus the target when it is not among them (recomputed from the records)."""
    rows = records[records["word"] == word]
    n_rows = sum(1 + len(g[["fraction", "placement"]].drop_duplicates()) for _, g in rows.groupby("model"))
    gained: dict[int, int] = {}
    for (model, *_), g in rows.groupby(["model", "fraction", "placement"]):
        clean = records[(records["word"] == "") & (records["model"] == model)]
        for p in set(g["pred_index"]):
            into = int(((g["pred_index"] == p) & (g["true_index"] != p)).sum())
            before = int(((clean["pred_index"] == p) & (clean["true_index"] != p)).sum())
            if into:
                gained[p] = max(gained.get(p, -10**9), into - before)
    chosen = [p for p, _ in sorted(gained.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]]
    return n_rows, len(chosen) + (target not in chosen)


@pytest.mark.parametrize("top_n", [15, 4])
def test_confusion_png(records, confusion, tmp_path, top_n):
    path = tmp_path / "confusion.png"
    plots.plot_confusion(confusion, "iPod", CLASS_NAMES, path, target_index=605, top_n=top_n)
    n_rows, n_cols = _expected_heatmap_shape(records, "iPod", 605, top_n)
    _assert_size_and_not_blank(path, (plots.CONF_BASE_W + plots.CONF_CELL * n_cols,
                                      plots.CONF_BASE_H + plots.CONF_ROW * n_rows))


def test_examples_png(examples, tmp_path):
    path = tmp_path / "examples.png"
    plots.plot_examples(examples, path)
    _assert_size_and_not_blank(path, (plots.EX_W * (1 + len(CONDITIONS)), plots.EX_H * len(WORDS) + plots.EX_TITLE_H))


def test_examples_one_row_per_image_and_a_column_per_condition(examples, captured, tmp_path):
    # A second image of iPod under the first condition only: one more row, its second cell empty.
    extra = {**examples[0], "image_id": "other", "image": examples[1]["image"]}
    plots.plot_examples(examples + [extra], tmp_path / "examples.png")
    fig = captured[0]
    grid = np.array(fig.axes).reshape(len(WORDS) + 1, 1 + len(CONDITIONS))
    assert [ax.get_title() for ax in grid[0]] == ["clean image", *CONDITIONS]
    assert [ax.get_visible() for ax in grid[-1]] == [True, True, False]
    # The clean image sits beside the attacked ones, and the word labels its row.
    np.testing.assert_array_equal(grid[0, 0].get_images()[0].get_array(), examples[0]["clean_image"])
    np.testing.assert_array_equal(grid[0, 1].get_images()[0].get_array(), examples[0]["image"])
    assert "iPod" in grid[0, 0].get_ylabel() and "true: " in grid[0, 0].get_xlabel()
    assert "✓" in grid[0, 1].get_xlabel() and "✗" in grid[0, 2].get_xlabel()
    assert "fraction · placement" in fig.get_suptitle()


def test_example_caption_marks_success():
    base = {"word": "iPod", "true_name": "tench", "target_name": "iPod"}
    caption, ok = example_plots._example_caption({**base, "clean_pred": "tench", "attacked_pred": "iPod"})
    assert ok and "✓" in caption and "attacked: iPod" in caption
    # Already the target before the attack: not a success.
    caption, ok = example_plots._example_caption({**base, "clean_pred": "iPod", "attacked_pred": "iPod"})
    assert not ok and "✗" in caption
    _, ok = example_plots._example_caption({**base, "clean_pred": "tench", "attacked_pred": "goldfish"})
    assert not ok


def test_examples_rejects_bad_image(examples, tmp_path):
    bad = [{**examples[0], "image": np.zeros((8, 8), dtype=np.uint8)}]
    with pytest.raises(ValueError, match="image must be a uint8 HxWx3"):
        plots.plot_examples(bad, tmp_path / "x.png")
    bad = [{**examples[0], "clean_image": np.zeros((8, 8, 3), dtype=np.float32)}]
    with pytest.raises(ValueError, match="clean_image must be a uint8 HxWx3"):
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
    # ASR up to ~80% here: the full 0-100% axis on every panel (a little room below 0), no zoom note.
    assert all(ax.get_ylim() == (-ASR_BOTTOM_MARGIN * 100, 100.0) for ax in asr_fig.axes if ax.get_visible())
    assert "zoomed" not in asr_fig.get_suptitle()
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
    # x: the measured cover, shifted sideways by the word's offset (the same at every point).
    shift = line.get_xdata() - 100 * rows["pixel_cover_mean"].to_numpy()
    assert np.ptp(shift) < 1e-9 and abs(shift[0]) <= plots.ASR_VS_FRACTION_SPREAD * ax.get_xlim()[1] / 2
    np.testing.assert_allclose(line.get_ydata(), 100 * rows["asr"].to_numpy())
    assert model in ax.get_title() and "paper8" in ax.get_title()


def test_confusion_heatmap_counts(records, confusion, captured, tmp_path):
    plots.plot_confusion(confusion, "<b>&", CLASS_NAMES, tmp_path / "c.png", target_index=963, top_n=5)
    ax = captured[0].axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    # Per model: the clean images, then the four conditions.
    conditions = ["0.04 · paper8", "0.04 · random", "0.1 · paper8", "0.1 · random"]
    assert rows == [f"{m}/{p} · {c}" for m, p in sorted((m, p) for m, p, *_ in MODELS)
                    for c in ["clean images", *conditions]]
    # The columns: the 5 classes that gained the most, then the target (bold red).
    gains = build_class_gains(confusion[confusion["word"].isin(["", "<b>&"])])
    best = gains.groupby("pred_index")["gain"].max().reset_index().sort_values(["gain", "pred_index"],
                                                                              ascending=[False, True])
    shown = [int(c) for c in best["pred_index"][:5]]
    shown += [963] if 963 not in shown else []
    assert cols == [plots.truncate_label(CLASS_NAMES[c]) for c in shown]
    target = ax.get_xticklabels()[shown.index(963)]
    assert target.get_color() == "#c0392b" and target.get_fontweight() == "bold"
    # Every annotated number is the count of other-class images predicted as the column's class.
    label_to_model = {f"{m}/{p}": m for m, p, *_ in MODELS}
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    for i, label in enumerate(rows):
        model_label, condition = label.split(" · ", 1)
        mine = records[(records["model"] == label_to_model[model_label])]
        if condition == "clean images":
            cells = mine[mine["word"] == ""]
        else:
            fraction, placement = condition.split(" · ")
            cells = mine[(mine["word"] == "<b>&") & (mine["fraction"] == float(fraction))
                         & (mine["placement"] == placement)]
        for j, c in enumerate(shown):
            want = int(((cells["pred_index"] == c) & (cells["true_index"] != c)).sum())
            assert texts.get((i, j), 0) == want, (label, c)
    assert "largest gain" in ax.get_title()


def test_confusion_long_class_name_truncated(records, confusion, captured, tmp_path):
    plots.plot_confusion(confusion, "iPod", CLASS_NAMES, tmp_path / "c.png", target_index=7, top_n=3)
    labels = [t.get_text() for t in captured[0].axes[0].get_xticklabels()]
    assert plots.truncate_label(CLASS_NAMES[7]) in labels
    assert plots.truncate_label(CLASS_NAMES[7]).endswith("…") and len(plots.truncate_label(CLASS_NAMES[7])) == 18


def test_get_asr_axis():
    def axis(asr, high):
        return get_asr_axis(pd.DataFrame({"asr": [asr], "asr_ci_high": [high]}))

    assert axis(0.6, 0.7).limit == 100 and not axis(0.6, 0.7).zoomed
    assert axis(0.3, 0.5).limit == 100  # the upper bound reaches 50%: full scale
    small = axis(0.002, 0.0112)  # 0.2% with its bound at 1.12%: 1.4% rounds up to 2%
    assert (small.limit, small.zoomed) == (2.0, True)
    assert small.get_note() == "ASR axis zoomed to 0–2%: max shown 0.2% (highest upper 95% bound 1.1%)"
    assert small.get_label() == "attack success rate (%), axis 0–2%"
    assert axis(0.0, 0.0076).limit == 1.0 and axis(0.0, 0.0).limit == 1.0  # at least 1%
    assert axis(0.05, 0.09).limit == 20.0 and axis(0.1, 0.2).limit == 25.0 and axis(0.2, 0.35).limit == 50.0
    # Without interval columns the ASR itself sets the axis; every value fits below the limit.
    assert get_asr_axis(pd.DataFrame({"asr": [0.031]})).limit == 5.0
    for high in np.linspace(0.001, 0.49, 50):
        assert 100 * high < axis(high / 2, high).limit <= 100


def test_small_asr_zooms_every_asr_axis(per_word, captured, tmp_path):
    small = per_word.assign(asr=per_word["asr"] / 50, asr_ci_low=per_word["asr_ci_low"] / 50,
                            asr_ci_high=per_word["asr_ci_high"] / 50)
    limit = get_asr_axis(small).limit
    assert limit < 100 and limit >= 100 * small["asr_ci_high"].max()
    plots.plot_asr_vs_fraction(small, tmp_path / "a.png")
    plots.plot_asr_by_word(small, tmp_path / "b.png")
    plots.plot_asr_ranked(small, tmp_path / "c.png")
    plots.plot_asr_distribution(small, tmp_path / "d.png")
    plots.plot_asr_vs_word_length(small, tmp_path / "e.png")
    line, bars, ranked, dist, length = captured
    for fig in captured:
        assert f"ASR axis zoomed to 0–{limit:g}%: max shown {100 * small['asr'].max():.1f}%" in \
            fig.get_suptitle().replace("\n", " ")
    assert all(ax.get_ylim()[1] == limit and f"axis 0–{limit:g}%" in ax.get_ylabel()
               for ax in line.axes if ax.get_visible())
    asr_axes, flip_axes = bars.axes[0::2], bars.axes[1::2]
    assert all(ax.get_ylim() == (0.0, limit) for ax in asr_axes)
    assert all(ax.get_ylim() == (0.0, 100.0) for ax in flip_axes)  # flip rates are not small
    assert all(ax.get_xlim() == (0.0, limit) for ax in ranked.axes if ax.get_visible())
    assert all(ax.get_xlim() == (0.0, limit) for ax in dist.axes if ax.get_visible())
    assert all(ax.get_ylim() == (0.0, limit) for ax in length.axes if ax.get_visible())


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


def test_confusion_and_examples_empty_raise(confusion, tmp_path):
    with pytest.raises(ValueError, match=r"no attacked cell of the word 'pizza'.*'iPod'"):
        plots.plot_confusion(confusion, "pizza", CLASS_NAMES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no attacked cell"):
        plots.plot_confusion(confusion, "", CLASS_NAMES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="lacks the column"):
        plots.plot_confusion(confusion.drop(columns="count"), "iPod", CLASS_NAMES, tmp_path / "x.png")
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
