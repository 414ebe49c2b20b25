"""Large vocabularies (issue 10): the ASR ranking, the ranked / distribution / word-length figures,
the ranking table of the report and the cap on per-word figures."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from synthetic_tables import (
    CLASS_NAMES, FRACTIONS, make_many_word_per_word, make_many_word_records, make_many_words,
)
from typoattack.analysis import plots, vocab_plots
from typoattack.analysis.metrics import (
    MANY_WORDS, RANKING_SIZE, build_asr_ranking, build_confusion_table, build_leaderboard, build_per_word_table,
    build_top_confusions, count_words, is_large_vocabulary, rank_words, select_heatmap_words,
)
from typoattack.files import build_word_slugs
from typoattack.analysis.report import write_report
from typoattack.analysis.table_cells import build_ranking_cells
from typoattack.tasks.synthetic import report as reporting

MAX_HEIGHT_PX = 4000


@pytest.fixture(scope="module")
def many() -> pd.DataFrame:
    return make_many_word_per_word(1000)


@pytest.fixture(scope="module")
def few() -> pd.DataFrame:
    return make_many_word_per_word(9)


@pytest.fixture
def captured(monkeypatch) -> list:
    """The figures the plot functions save (kept open for inspection)."""
    figures = []

    def save(fig, path):
        figures.append(fig)
        fig.savefig(path, dpi=plots.DPI, format="png")

    monkeypatch.setattr(plots, "save_figure", save)
    monkeypatch.setattr(vocab_plots, "save_figure", save)
    yield figures
    for fig in figures:
        plt.close(fig)


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _expected_order(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.sort_values(["asr", "word"], ascending=[False, True], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- metrics


def test_threshold_and_word_count(many, few):
    assert count_words(many) == 1000 and count_words(few) == 9
    assert is_large_vocabulary(many) and not is_large_vocabulary(few)
    at_threshold = make_many_word_per_word(MANY_WORDS)
    assert not is_large_vocabulary(at_threshold) and is_large_vocabulary(make_many_word_per_word(MANY_WORDS + 1))


def test_ranking_holds_top_and_bottom_twenty_per_condition(many):
    ranking = build_asr_ranking(many)
    assert len(ranking) == len(FRACTIONS) * 2 * RANKING_SIZE
    for fraction in FRACTIONS:
        got = ranking[ranking["fraction"] == fraction]
        want = _expected_order(many[many["fraction"] == fraction])
        top, bottom = got[got["group"] == "top"], got[got["group"] == "bottom"]
        assert len(top) == RANKING_SIZE and len(bottom) == RANKING_SIZE
        assert list(top["word"]) == list(want["word"].iloc[:RANKING_SIZE])
        assert list(bottom["word"]) == list(want["word"].iloc[-RANKING_SIZE:])
        assert (np.diff(top["asr"].to_numpy()) <= 0).all() and (np.diff(bottom["asr"].to_numpy()) <= 0).all()
        assert top["asr"].min() >= want["asr"].iloc[RANKING_SIZE:].max()
        assert bottom["asr"].max() <= want["asr"].iloc[:-RANKING_SIZE].min()
        assert list(top["rank"]) == list(range(1, 21)) and list(bottom["rank"]) == list(range(981, 1001))
        assert set(got["n_words"]) == {1000}
        # The interval travels with its word.
        merged = top.merge(many[many["fraction"] == fraction], on=["word", "target_index"], suffixes=("", "_pw"))
        np.testing.assert_allclose(merged["asr_ci_low"], merged["asr_ci_low_pw"])
        np.testing.assert_allclose(merged["asr_ci_high"], merged["asr_ci_high_pw"])


def test_ranking_of_a_small_vocabulary_lists_no_word_twice(few):
    ranking = build_asr_ranking(few)
    assert (ranking["group"] == "top").sum() == len(FRACTIONS) * 9 and (ranking["group"] == "bottom").sum() == 0
    four = build_asr_ranking(few, n=4)
    for _, rows in four.groupby("fraction"):
        assert list(rows["rank"]) == [1, 2, 3, 4, 6, 7, 8, 9]
        assert rows["word"].is_unique
    with pytest.raises(ValueError, match="n must be at least 1"):
        build_asr_ranking(few, n=0)


def test_rank_words_by_mean_asr(many):
    order = rank_words(many)
    mean = many.groupby("word")["asr"].mean()
    assert len(order) == 1000 and set(order) == set(make_many_words(1000))
    assert (np.diff(mean[order].to_numpy()) <= 0).all()


# --------------------------------------------------------------------------- figures


def test_ranked_figure_bars_labels_and_bounded_size(many, captured, tmp_path):
    path = tmp_path / "asr_ranked.png"
    plots.plot_asr_ranked(many, path)
    slots = 2 * RANKING_SIZE + 1
    want = (round(plots.RANK_PANEL_W * 2 * plots.DPI),
            round(((plots.RANK_BASE_H + plots.RANK_BAR_H * slots) + plots.TITLE_H + plots.LEGEND_ROW_H) * plots.DPI))
    width, height = _size(path)
    assert abs(width - want[0]) <= 3 and abs(height - want[1]) <= 3 and height < MAX_HEIGHT_PX
    ax = captured[0].axes[0]
    ranking = build_asr_ranking(many)
    first = ranking[ranking["fraction"] == min(FRACTIONS)]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{plots.truncate_label(w, plots.RANK_LABEL_MAX)} → {t}" for w, t in zip(first["word"], first["target_name"])]
    widths = [p.get_width() for p in ax.patches]
    np.testing.assert_allclose(widths, 100 * first["asr"].to_numpy())
    assert "top 20 and bottom 20 of 1000 words" in ax.get_title()
    assert any("960 words in between" in t.get_text() for t in ax.texts)
    # The size does not grow with the vocabulary.
    other = tmp_path / "100.png"
    plots.plot_asr_ranked(make_many_word_per_word(100), other)
    assert _size(other) == (width, height)


def test_distribution_figure_is_an_ecdf_per_condition(many, captured, tmp_path):
    path = tmp_path / "asr_distribution.png"
    plots.plot_asr_distribution(many, path)
    assert _size(path)[1] < MAX_HEIGHT_PX
    ax = captured[0].axes[0]
    lines = ax.get_lines()
    assert len(lines) == len(FRACTIONS)
    for line, fraction in zip(lines, sorted(FRACTIONS)):
        asr = 100 * many.loc[many["fraction"] == fraction, "asr"]
        assert line.get_ydata()[-1] == 100 and len(line.get_xdata()) == len(asr) + 2
        assert f"median {np.median(asr):.1f}% (n=1000)" in line.get_label()


def test_word_length_figure_plots_the_mean_per_length(many, captured, tmp_path):
    path = tmp_path / "asr_vs_word_length.png"
    plots.plot_asr_vs_word_length(many, path)
    assert path.is_file() and _size(path)[1] < MAX_HEIGHT_PX
    ax = captured[0].axes[0]
    rows = many[many["fraction"] == min(FRACTIONS)]
    want = (100 * rows["asr"]).groupby(rows["word"].str.len()).mean()
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), want.index.to_numpy(dtype=float))
    np.testing.assert_allclose(line.get_ydata(), want.to_numpy())
    assert len(ax.collections[0].get_offsets()) == 1000


def test_asr_vs_fraction_summarises_many_words(many, captured, tmp_path):
    path = tmp_path / "asr_vs_fraction.png"
    plots.plot_asr_vs_fraction(many, path)
    fig = captured[0]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    # The summary over words, then the words with the highest mean ASR, in rank order.
    top = rank_words(many)[: plots.ASR_VS_FRACTION_TOP_WORDS]
    target = dict(zip(many["word"], many["target_name"]))
    assert labels == ["mean over words", "median", "10–90th percentile of words",
                      *(f"“{w}” → {target[w]}" for w in top)]
    mean_line = fig.axes[0].get_lines()[0]
    want = 100 * many.groupby("fraction")["asr"].mean()
    np.testing.assert_allclose(mean_line.get_ydata(), want.to_numpy())
    width, height = _size(path)
    legend_rows = -(-(3 + plots.ASR_VS_FRACTION_TOP_WORDS) // plots.LEGEND_MAX_COLS)
    assert height == round((plots.PANEL_H + plots.TITLE_H + plots.LEGEND_ROW_H * legend_rows) * plots.DPI)


def test_asr_by_word_switches_to_the_ranked_view(many, few, captured, tmp_path):
    plots.plot_asr_by_word(many, tmp_path / "by_word.png")
    plots.plot_asr_ranked(many, tmp_path / "ranked.png")
    assert _size(tmp_path / "by_word.png") == _size(tmp_path / "ranked.png")
    assert captured[0].get_suptitle() == captured[1].get_suptitle()
    plots.plot_asr_by_word(few, tmp_path / "few.png")
    assert len(captured[2].axes[0].get_xticklabels()) == 9  # one bar group per word, as before


def test_small_vocabulary_keeps_one_line_per_word(few, captured, tmp_path):
    plots.plot_asr_vs_fraction(few, tmp_path / "a.png")
    legend = {t.get_text() for t in captured[0].legends[0].get_texts()}
    assert legend == {f"“{w}” → {CLASS_NAMES[i]}" for i, w in enumerate(make_many_words(9))}


# --------------------------------------------------------------------------- report


def test_report_per_word_section_ranks_a_large_vocabulary(many, tmp_path):
    md_path, html_path = write_report(tmp_path, many, build_leaderboard(many), [], [], notes=["a note"])
    md, page = md_path.read_text(), html_path.read_text()
    # No separate ranking section: the per-word section shows the ranking and links per_word.csv.
    assert "## Words ranked" not in md and "a note" in md
    section = md.split("## Per-word results")[1]
    assert "### ViT-B-32/openai" in section and "[per_word.csv](per_word.csv)" in section
    rows = [line for line in section.splitlines() if line.startswith("| 0.")]  # fraction first
    assert len(rows) == len(FRACTIONS) * 2 * RANKING_SIZE
    first = [r for r in rows if r.startswith("| 0.04 |")]
    top, bottom = first[:RANKING_SIZE], first[RANKING_SIZE:]
    assert len(bottom) == RANKING_SIZE
    asr = [float(re.search(r"\| (\d+\.\d)% \[", r).group(1)) for r in top]
    assert asr == sorted(asr, reverse=True)
    want = _expected_order(many[many["fraction"] == 0.04])
    assert asr == [round(100 * a, 1) for a in want["asr"].iloc[:RANKING_SIZE]]
    assert top[0].split(" | ")[3] == f"`{want['word'].iloc[0]}`" and "| 1 / 1000 |" in top[0]
    assert "| 1000 / 1000 |" in bottom[-1]
    assert page.count('<table class="per-word">') == 1 and '<a href="per_word.csv">per_word.csv</a>' in page
    table = page.split('<table class="per-word">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + len(rows)


def test_ranking_cells_header_and_width(many):
    header, cells = build_ranking_cells(build_asr_ranking(many))
    assert header[:4] == ["model", "pretrained", "fraction", "placement"] and "ASR [95% CI]" in header
    assert {len(row) for row in cells} == {len(header)}


def test_small_vocabulary_report_has_no_ranking(few, tmp_path):
    md_path, html_path = write_report(tmp_path, few, build_leaderboard(few), [], [])
    assert "Words ranked" not in md_path.read_text() and 'class="ranking"' not in html_path.read_text()


# --------------------------------------------------------------------------- report figures


def _confusion_files(records: pd.DataFrame, folder: Path) -> list[Path]:
    """confusion.parquet of the records, as a run writes it (the report reads it a word at a time)."""
    path = folder / "confusion.parquet"
    build_confusion_table(records).to_parquet(path, index=False)
    return [path]


def test_large_vocabulary_caps_per_word_figures(tmp_path):
    records = make_many_word_records(1000, n_images=20)
    per_word = build_per_word_table(records, CLASS_NAMES)
    figures, notes = reporting._plot_figures(per_word, tmp_path)
    assert [f.name for f in figures] == ["asr_vs_fraction.png", "asr_ranked.png", "asr_distribution.png",
                                         "asr_vs_word_length.png", "accuracy.png"]
    assert not (tmp_path / "asr_by_word.png").exists()
    for f in figures:
        assert f.is_file() and _size(f)[1] < MAX_HEIGHT_PX, f.name
    assert len(notes) == 1 and "1000 words" in notes[0] and f"the {reporting.CONFUSION_MAX_WORDS} such words" in notes[0]
    assert reporting.select_figure_words(per_word, reporting.EXAMPLE_MAX_WORDS) == rank_words(per_word)[:8]

    blocks = reporting.write_confusions(_confusion_files(records, tmp_path), per_word, tmp_path)
    # Word i succeeds with probability ~i/1000: hundreds of words move >= 10 of 20 images to their
    # target; only CONFUSION_MAX_WORDS get a heatmap, those that moved the largest share.
    confusion = build_confusion_table(records)
    chosen = select_heatmap_words(confusion, reporting.CONFUSION_MAX_WORDS)
    assert len(chosen) == reporting.CONFUSION_MAX_WORDS
    slugs = build_word_slugs(sorted(set(per_word["word"])))
    heatmaps = sorted(p.name for p in tmp_path.glob("confusion_*.png"))
    assert heatmaps == sorted(f"confusion_{slugs[w]}.png" for w in chosen)
    for name in heatmaps:
        assert _size(tmp_path / name)[1] < MAX_HEIGHT_PX
    assert [b.path.name for b in blocks if b.kind == "figure"] == [f"confusion_{slugs[w]}.png" for w in sorted(chosen)]
    # The report's table shows the words with the highest mean ASR; the CSV every word with a wrong prediction.
    table = next(b for b in blocks if b.kind == "table" and b.text == "confusions")
    shown = {row[0].split("`")[1] for row in table.cells}
    assert shown <= set(rank_words(per_word)[: reporting.CONFUSION_MAX_WORDS]) and len(shown) >= 10
    csv = pd.read_csv(tmp_path / reporting.TOP_CONFUSIONS_CSV, keep_default_na=False)
    assert set(csv["word"]) == set(build_top_confusions(confusion)["word"]) and len(set(csv["word"])) > 900
    assert list(csv.columns[csv.columns.get_loc("true_index"):][:4]) == ["true_index", "true_name", "pred_index",
                                                                         "pred_name"]


def test_small_vocabulary_figures(tmp_path):
    records = make_many_word_records(9, n_images=5)
    per_word = build_per_word_table(records, CLASS_NAMES)
    figures, notes = reporting._plot_figures(per_word, tmp_path)
    assert [f.name for f in figures] == ["asr_vs_fraction.png", "asr_by_word.png", "accuracy.png"]
    assert notes == [] and reporting.select_figure_words(per_word, reporting.EXAMPLE_MAX_WORDS) is None
    assert not (tmp_path / "asr_ranked.png").exists()
    # 5 images per condition: no class can gain 10 images, so no heatmap; the table lists every word.
    blocks = reporting.write_confusions(_confusion_files(records, tmp_path), per_word, tmp_path)
    assert not list(tmp_path.glob("confusion_*.png")) and not [b for b in blocks if b.kind == "figure"]
    files = next(b for b in blocks if b.kind == "table" and b.text == "heatmaps")
    assert {row[1] for row in files.cells} == {"— (no class gained enough)"}
