"""Tests of typoattack.analysis.plots: figure files, leaderboard and the Markdown/HTML report."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from typoattack.analysis import plots
from typoattack.constants import RECORD_COLUMNS
from typoattack.analysis.metrics import PER_WORD_COLUMNS, build_per_word_table

CLASS_NAMES = [f"class {i}" for i in range(1000)]
CLASS_NAMES[7] = "a deliberately very long class name"
# (model, pretrained, clean accuracy, attack strength at fraction 0.04, at 0.1)
MODELS = [("ViT-B-32", "openai", 0.7, 0.2, 0.6), ("typoattack-tiny", "seed:0", 0.3, 0.05, 0.1)]
# "$$$" would be mathtext for matplotlib; "<b>&" must be escaped in HTML.
WORDS = {"iPod": 605, "$$$": 719, "<b>&": 963}
FRACTIONS = [0.04, 0.1]
PLACEMENTS = ["paper8", "random"]
N_IMAGES = 30
FONT = "DejaVuSans-Bold.ttf"


def _top5(pred: int) -> list[int]:
    return [pred] + [(pred + k) % 1000 for k in range(1, 5)]


def _make_records(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = rng.choice(np.array([3, 7, 11, 42, 99, 100, 250, 605, 719, 963]), size=N_IMAGES)
    rows = []
    for model, pretrained, clean_acc, s04, s10 in MODELS:
        clean = np.where(rng.random(N_IMAGES) < clean_acc, true, rng.integers(0, 1000, N_IMAGES))
        for i in range(N_IMAGES):
            rows.append((f"img{i:03d}", int(true[i]), model, pretrained, "", -1, 0.0, "", FONT, 0.0, int(clean[i])))
        for word, target in WORDS.items():
            for fraction, strength in zip(FRACTIONS, (s04, s10)):
                for placement in PLACEMENTS:
                    u = rng.random(N_IMAGES)
                    pred = np.where(u < strength, target,
                                    np.where(u < strength + 0.3, rng.integers(0, 1000, N_IMAGES), clean))
                    cover = fraction * (1 - 0.05 * rng.random(N_IMAGES))
                    for i in range(N_IMAGES):
                        rows.append((f"img{i:03d}", int(true[i]), model, pretrained, word, target, fraction,
                                     placement, FONT, float(cover[i]), int(pred[i])))
    frame = pd.DataFrame(rows, columns=["image_id", "true_index", "model", "pretrained", "word", "target_index",
                                        "fraction", "placement", "font", "pixel_cover", "pred_index"])
    frame["pred_top5"] = [_top5(p) for p in frame["pred_index"]]
    frame["p_target"] = 0.1
    frame["p_true"] = 0.2
    # One drawing style throughout (style columns the record schema may carry).
    frame["fill"], frame["outline"], frame["outline_width"], frame["opacity"] = "white", "black", 2.0, 1.0
    return frame.reindex(columns=RECORD_COLUMNS)


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return _make_records()


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


def _with_fills(per_word: pd.DataFrame) -> pd.DataFrame:
    """The table twice, with fill white and red (the second with ASR halved) and a constant outline."""
    white = per_word.assign(fill="white", outline="black", font=FONT)
    red = per_word.assign(fill="red", outline="black", font=FONT, asr=per_word["asr"] / 2,
                          asr_ci_low=per_word["asr_ci_low"] / 2, asr_ci_high=per_word["asr_ci_high"] / 2)
    return pd.concat([white, red], ignore_index=True)


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
    original = plots._save

    def save(fig, path):
        figures.append(fig)
        fig.savefig(path, dpi=plots.DPI, format="png")

    monkeypatch.setattr(plots, "_save", save)
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
    assert shown_cols[0] == plots._truncate(CLASS_NAMES[top_pred])
    # The annotated counts are the cells of the crosstab restricted to the shown classes.
    name_to_idx = {plots._truncate(n): i for i, n in enumerate(CLASS_NAMES)}
    cross = pd.crosstab(first["true_index"], first["pred_index"])
    want = sum(int(cross.loc[name_to_idx[r], name_to_idx[c]]) for r in shown_rows for c in shown_cols)
    assert sum(int(t.get_text()) for t in ax.texts) == want > 0
    assert want <= len(first)


def test_confusion_long_class_name_truncated(records, captured, tmp_path):
    plots.plot_confusion(records, "iPod", CLASS_NAMES, tmp_path / "c.png", top_n=50)
    labels = [t.get_text() for t in captured[0].axes[0].get_yticklabels()]
    assert plots._truncate(CLASS_NAMES[7]) in labels
    assert plots._truncate(CLASS_NAMES[7]).endswith("…") and len(plots._truncate(CLASS_NAMES[7])) == 18


def test_style_columns_add_panels(per_word, tmp_path, captured):
    plain, styled = tmp_path / "plain.png", tmp_path / "styled.png"
    plots.plot_asr_vs_fraction(per_word, plain)
    plots.plot_asr_vs_fraction(_with_fills(per_word), styled)
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
    plots.plot_asr_by_word(_with_fills(per_word), styled)
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


# --------------------------------------------------------------------------- leaderboard


def test_leaderboard_matches_pandas(per_word):
    board = plots.build_leaderboard(per_word)
    assert list(board.columns) == ["model", "pretrained", "n_images", "clean_top1", "attacked_top1", "mean_asr",
                                   "asr@0.04", "asr@0.1"]
    assert len(board) == len(MODELS)
    g = per_word.groupby(["model", "pretrained"])
    for r in board.to_dict("records"):
        rows = g.get_group((r["model"], r["pretrained"]))
        assert r["n_images"] == N_IMAGES
        assert r["mean_asr"] == pytest.approx(rows["asr"].mean())
        assert r["attacked_top1"] == pytest.approx(rows["attacked_top1"].mean())
        assert r["clean_top1"] == pytest.approx(rows["clean_top1"].iloc[0])
        for f in FRACTIONS:
            assert r[f"asr@{f:g}"] == pytest.approx(rows.loc[rows["fraction"] == f, "asr"].mean())
    # The strong attack on the first model makes it the less robust one.
    assert list(board["model"]) == ["typoattack-tiny", "ViT-B-32"]
    assert board["mean_asr"].is_monotonic_increasing


def test_leaderboard_sort_ties_by_clean_top1():
    rows = []
    for model, asr, clean in [("A", 0.2, 0.5), ("B", 0.2, 0.7), ("C", 0.1, 0.1), ("D", 0.3, 0.9)]:
        for f in (0.04, 0.1):
            rows.append({"model": model, "pretrained": "p", "fraction": f, "n_images": 10, "clean_top1": clean,
                         "attacked_top1": clean / 2, "asr": asr + (0.05 if f == 0.1 else -0.05)})
    board = plots.build_leaderboard(pd.DataFrame(rows))
    assert list(board["model"]) == ["C", "B", "A", "D"]
    assert board.loc[0, "asr@0.1"] == pytest.approx(0.15) and board.loc[0, "asr@0.04"] == pytest.approx(0.05)


def test_leaderboard_missing_fraction_is_nan_and_na_in_markdown():
    rows = [{"model": "A", "pretrained": "p", "fraction": 0.04, "n_images": 5, "clean_top1": 0.5,
             "attacked_top1": 0.25, "asr": 0.125},
            {"model": "B", "pretrained": "q", "fraction": 0.1, "n_images": 5, "clean_top1": 0.5,
             "attacked_top1": 0.25, "asr": 0.5}]
    board = plots.build_leaderboard(pd.DataFrame(rows))
    assert np.isnan(board.loc[0, "asr@0.1"])
    md = plots.format_leaderboard_markdown(board)
    assert "| 1 | A | p | 5 | 50.0% | 25.0% | 12.5% | 12.5% | n/a |" in md


def test_leaderboard_markdown_format(per_word):
    board = plots.build_leaderboard(per_word)
    md = plots.format_leaderboard_markdown(board)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| rank | model | pretrained |") and "ASR @ 0.04" in lines[0]
    assert len(lines) == 2 + len(board)
    for rank, r in enumerate(board.to_dict("records"), start=1):
        cells = [c.strip() for c in lines[1 + rank].strip("|").split("|")]
        assert cells[:3] == [str(rank), r["model"], r["pretrained"]]
        assert cells[4] == f"{100 * r['clean_top1']:.1f}%"
        assert cells[6] == f"{100 * r['mean_asr']:.1f}%"
        assert cells[7] == f"{100 * r['asr@0.04']:.1f}%"


def test_leaderboard_empty():
    board = plots.build_leaderboard(pd.DataFrame(columns=PER_WORD_COLUMNS))
    assert board.empty and "mean_asr" in board.columns
    assert plots.format_leaderboard_markdown(board).count("\n") == 2


# --------------------------------------------------------------------------- report


def _run_info(pretrained: str) -> dict:
    return {"complete": True, "device": "cpu", "n_images_selected": N_IMAGES, "seed": 0,
            "versions": {"torch": "2.14.1", "open_clip": "3.3.0"},
            "config": {"models": [{"name": "typoattack-tiny", "pretrained": pretrained}], "fractions": FRACTIONS,
                       "out": "runs/ci", "vocab": "goh2021"},
            "models": [{"name": "typoattack-tiny", "pretrained": pretrained, "n_images": N_IMAGES, "n_skipped": 0}]}


@pytest.fixture(scope="module")
def report(per_word, records, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    figs = out / "figures"
    paths = [figs / "asr_vs_fraction.png", figs / "asr_by_word.png", figs / "accuracy.png", out / "confusion_ipod.png"]
    plots.plot_asr_vs_fraction(per_word, paths[0])
    plots.plot_asr_by_word(per_word, paths[1])
    plots.plot_accuracy(per_word, paths[2])
    plots.plot_confusion(records, "iPod", CLASS_NAMES, paths[3])
    board = plots.build_leaderboard(per_word)
    md_path, html_path = plots.write_report(out, per_word, board, paths, [_run_info("seed:0")], title="Test <report>")
    return out, paths, board, md_path.read_text(), html_path.read_text(), (md_path, html_path)


def test_report_paths(report):
    out, *_, (md_path, html_path) = report
    assert md_path == out / "report.md" and html_path == out / "report.html"


def test_report_markdown(report):
    out, paths, board, md, _, _ = report
    assert "![asr_vs_fraction](figures/asr_vs_fraction.png)" in md
    assert "![confusion_ipod](confusion_ipod.png)" in md
    for p in paths:
        assert p.name in md
    assert plots.format_leaderboard_markdown(board) in md
    for r in board.to_dict("records"):
        assert f"{100 * r['mean_asr']:.1f}%" in md
    # The per-word table (one row per condition) with the words in code spans.
    assert md.count("| `<b>&` |") == len(MODELS) * len(FRACTIONS) * len(PLACEMENTS)
    # The run section: config block, versions, device, images, and the untrained warning.
    assert "```json" in md and '"vocab": "goh2021"' in md
    assert "torch 2.14.1" in md and "- device: cpu" in md and f"- images selected: {N_IMAGES}" in md
    assert re.search(r"^\*\*⚠ UNTRAINED MODEL: typoattack-tiny/seed:0 has random weights.*only check the pipeline.*\*\*$",
                     md, flags=re.MULTILINE)


def test_report_html(report):
    out, paths, board, _, page, _ = report
    assert page.count("data:image/png;base64,") == len(paths)
    assert page.count("<img ") == len(paths)
    assert "<b>&" not in page and "&lt;b&gt;&amp;" in page
    assert "<code>&lt;b&gt;&amp;</code>" in page
    assert "Test <report>" not in page and "<title>Test &lt;report&gt;</title>" in page
    for m, p, *_ in MODELS:
        assert f"<td>{m}</td><td>{p}</td>" in page
    assert page.count('<table class="leaderboard">') == 1 and page.count('<table class="per-word">') == 1
    assert page.count("<tr>") == 1 + len(board) + 1 + len(MODELS) * len(WORDS) * len(FRACTIONS) * len(PLACEMENTS)
    assert '<p class="warn"><strong>⚠ UNTRAINED MODEL' in page
    assert "&quot;vocab&quot;: &quot;goh2021&quot;" in page
    # Images decode back to the PNG files.
    import base64
    first = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(first) == paths[0].read_bytes()


def test_report_without_untrained_model_has_no_warning(per_word, tmp_path):
    trained = per_word[per_word["pretrained"] == "openai"]
    md_path, html_path = plots.write_report(tmp_path, trained, plots.build_leaderboard(trained), [],
                                            [_run_info("laion2b_s34b_b79k")])
    assert "UNTRAINED" not in md_path.read_text() and "UNTRAINED" not in html_path.read_text()
    assert "data:image/png;base64," not in html_path.read_text()


def test_report_style_columns_distinguish_rows(per_word, tmp_path):
    styled = _with_fills(per_word)
    md_path, _ = plots.write_report(tmp_path, styled, plots.build_leaderboard(styled), [], [])
    md = md_path.read_text()
    assert md.count("| paper8 · fill=red |") == len(MODELS) * len(WORDS) * len(FRACTIONS)
    assert md.count("| paper8 · fill=white |") == len(MODELS) * len(WORDS) * len(FRACTIONS)


def test_report_pipe_in_word_keeps_table_shape(per_word, tmp_path):
    piped = per_word.assign(word=per_word["word"].replace({"iPod": "a|b"}))
    _, html_path = plots.write_report(tmp_path, piped, plots.build_leaderboard(piped), [], [])
    page = html_path.read_text()
    assert "<code>a|b</code>" in page
    body = page.split('<table class="per-word">')[1].split("</table>")[0]
    counts = {row.count("<td>") for row in body.split("<tr>")[2:]}
    assert counts == {15}


def test_report_missing_figure(per_word, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        plots.write_report(tmp_path, per_word, plots.build_leaderboard(per_word), [tmp_path / "nope.png"], [])


def test_report_empty_tables(tmp_path):
    empty = pd.DataFrame(columns=PER_WORD_COLUMNS)
    md_path, html_path = plots.write_report(tmp_path, empty, plots.build_leaderboard(empty), [], [])
    assert md_path.read_text().count("No attacked conditions.") == 2
    assert "<table" not in html_path.read_text()


def test_plots_imports_no_model_code():
    import subprocess
    import sys

    code = ("import sys, typoattack.analysis.plots; bad = [m for m in ('torch', 'open_clip', 'typer', 'typoattack.models.loading', "
            "'typoattack.models.classify', 'typoattack.running.runner') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_missing_pretrained_is_blank(per_word, tmp_path):
    hub = per_word.assign(pretrained=per_word["pretrained"].where(per_word["pretrained"] == "openai", None))
    board = plots.build_leaderboard(hub)
    assert len(board) == len(MODELS)
    plots.plot_accuracy(hub, tmp_path / "acc.png")
    md = plots.write_report(tmp_path, hub, board, [tmp_path / "acc.png"], [])[0].read_text()
    assert "nan" not in md.lower() and "None" not in md
    assert "| typoattack-tiny |  | `iPod` |" in md
