"""The report page and asr_vs_fraction.png as a new user reads them (issue 26, point 4): readable
lines for few words and a bounded summary for ~1000 words, heatmap file names in words, per-word
tables grouped by model, and a per-word section that does not grow with the vocabulary."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from synthetic_tables import CLASS_NAMES, FONT, make_records
from typoattack.analysis import plots
from typoattack.analysis.metrics import (
    MANY_WORDS, PER_WORD_COLUMNS, RANKING_SIZE, build_confusion_table, build_leaderboard, build_per_word_table,
    build_top_confusions, rank_words, wilson_interval,
)
from typoattack.analysis.report import write_report
from typoattack.analysis.report_sections import list_confusion_blocks
from typoattack.analysis.table_cells import PER_WORD_HEADER, build_per_word_cells, format_per_word_markdown
from typoattack.files import get_word_slug

MODELS = [("ViT-B-32", "openai"), ("ViT-L-14", "laion2b_s32b_b82k")]
FRACTIONS = [0.02, 0.04, 0.08]
PLACEMENTS = ["paper8", "random"]


def make_vocabulary_table(n_words: int, seed: int = 0, defences: tuple[str, ...] = ("none",)) -> pd.DataFrame:
    """A per-word table of two models over `n_words` words, three fractions and two placements,
    with most words' ASR at or near 0 and a few words that succeed (as a real 1000-word run)."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, pretrained in MODELS:
        for defence in defences:
            for fraction in FRACTIONS:
                for placement in PLACEMENTS:
                    strong = rng.random(n_words) < 0.02
                    p = np.where(strong, rng.beta(2, 3, n_words), rng.beta(0.2, 80, n_words)) * fraction / 0.08
                    k = rng.binomial(200, p)
                    lo, hi = wilson_interval(k, np.full(n_words, 200))
                    for i in range(n_words):
                        rows.append({"model": model, "pretrained": pretrained, "defence": defence,
                                     "word": f"word{i:04d}",
                                     "target_index": i % 1000, "target_name": CLASS_NAMES[i % 1000],
                                     "fraction": fraction, "placement": placement, "n_images": 200,
                                     "pixel_cover_mean": fraction * 0.97, "clean_top1": 0.7, "attacked_top1": 0.6,
                                     "asr": k[i] / 200, "asr_ci_low": lo[i], "asr_ci_high": hi[i],
                                     "changed_to": k[i] / 200, "already_target": 0.0, "changed_away": 0.05,
                                     "neither": 0.9, "flip_rate": 0.2})
    return pd.DataFrame(rows)[PER_WORD_COLUMNS].assign(font=FONT)


@pytest.fixture(scope="module")
def large() -> pd.DataFrame:
    return make_vocabulary_table(998)


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return make_records()


@pytest.fixture(scope="module")
def small(records) -> pd.DataFrame:
    return build_per_word_table(records, CLASS_NAMES)


@pytest.fixture
def captured(monkeypatch) -> list:
    """The figures plot_asr_vs_fraction saves (kept open for inspection)."""
    figures = []

    def save(fig, path, palette=False):
        figures.append(fig)
        fig.savefig(path, dpi=plots.DPI, format="png")

    monkeypatch.setattr(plots, "save_figure", save)
    yield figures
    for fig in figures:
        plt.close(fig)


def _section(md: str, heading: str) -> str:
    """The Markdown of one h2 section."""
    rest = md.split(f"## {heading}\n", 1)[1]
    return rest.split("\n## ", 1)[0]


def _table_rows(text: str) -> list[str]:
    """The body rows of the Markdown tables in `text` (header and rule rows left out)."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    return [ln for i, ln in enumerate(lines) if not ln.startswith("|---") and
            not (i + 1 < len(lines) and lines[i + 1].startswith("|---"))]


# --------------------------------------------------------------------------- asr_vs_fraction.png


def test_large_vocabulary_asr_vs_fraction_draws_a_bounded_number_of_lines(large, captured, tmp_path):
    plots.plot_asr_vs_fraction(large, tmp_path / "large.png")
    plots.plot_asr_vs_fraction(make_vocabulary_table(200, seed=1), tmp_path / "medium.png")
    most = 2 + plots.ASR_VS_FRACTION_TOP_WORDS  # mean, median and the top words
    for fig in captured:
        panels = [ax for ax in fig.axes if ax.get_visible()]
        assert len(panels) == len(MODELS) * len(PLACEMENTS)
        assert all(len(ax.get_lines()) <= most for ax in panels)
    # The top words are the words of highest mean ASR; the figure does not grow with the vocabulary.
    labels = [t.get_text() for t in captured[0].legends[0].get_texts()]
    assert len(labels) == 3 + plots.ASR_VS_FRACTION_TOP_WORDS
    assert [re.match(r"“(.+)” →", label).group(1) for label in labels[3:]] == \
        rank_words(large)[: plots.ASR_VS_FRACTION_TOP_WORDS]
    assert captured[0].get_size_inches().tolist() == captured[1].get_size_inches().tolist()


def test_few_words_at_the_same_asr_stay_visible(small, captured, tmp_path):
    # Every word at ASR 0 (as the CI demo model): the words' points must not sit on top of each other.
    zero = small.assign(asr=0.0, asr_ci_low=0.0, asr_ci_high=0.0076)
    plots.plot_asr_vs_fraction(zero, tmp_path / "zero.png")
    fig = captured[0]
    n_words = zero[["word", "target_name"]].drop_duplicates().shape[0]
    for ax in (a for a in fig.axes if a.get_visible()):
        lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]  # not the whisker caps
        assert len(lines) == n_words
        points = {(round(float(x), 6), float(y)) for ln in lines for x, y in zip(ln.get_xdata(), ln.get_ydata())}
        assert len(points) == sum(len(ln.get_xdata()) for ln in lines)  # no two points coincide
        # Each word has its own colour, marker and line style; no stacked (opaque) interval bands.
        looks = {(str(ln.get_color()), ln.get_marker(), ln.get_linestyle()) for ln in lines}
        assert len(looks) == n_words
        assert not any(isinstance(c, PolyCollection) for c in ax.collections)
    assert "shifted" in fig.get_suptitle()


def test_few_words_keep_one_line_per_word_up_to_many_words(captured, tmp_path):
    table = make_vocabulary_table(MANY_WORDS)
    plots.plot_asr_vs_fraction(table, tmp_path / "a.png")
    labels = [t.get_text() for t in captured[0].legends[0].get_texts()]
    assert len(labels) == MANY_WORDS and "mean over words" not in labels


# --------------------------------------------------------------------------- the page


def test_large_vocabulary_page_stays_short_and_links_per_word_csv(large, tmp_path):
    md_path, html_path = write_report(tmp_path, large, build_leaderboard(large), [], [])
    md, page = md_path.read_text(), html_path.read_text()
    section = _section(md, "Per-word results")
    rows = _table_rows(section)
    n_conditions = len(FRACTIONS) * len(PLACEMENTS)
    assert len(rows) == len(MODELS) * n_conditions * 2 * RANKING_SIZE  # not 998 words x conditions
    assert "[per_word.csv](per_word.csv)" in section
    assert '<a href="per_word.csv">per_word.csv</a>' in page
    html_section = page.split('id="per-word-results"')[1].split("<h2")[0]
    assert html_section.count("<tr>") == len(rows) + len(MODELS)  # rows and one header per model
    # A smaller vocabulary above MANY_WORDS gives a page of the same length.
    other = make_vocabulary_table(200, seed=3)
    md_other = write_report(tmp_path / "other", other, build_leaderboard(other), [], [])[0].read_text()
    assert len(_table_rows(_section(md_other, "Per-word results"))) == len(rows)
    # The contents list near the top links the section.
    assert md.index("**Contents:**") < md.index("## Per-word results")
    assert "- [Per-word results](#per-word-results)" in md


def test_small_vocabulary_page_keeps_every_row(small, tmp_path):
    md = write_report(tmp_path, small, build_leaderboard(small), [], [])[0].read_text()
    section = _section(md, "Per-word results")
    assert len(_table_rows(section)) == len(small)
    assert "[per_word.csv](per_word.csv)" in section


def test_per_word_rows_are_grouped_by_model(small, tmp_path):
    md_path, html_path = write_report(tmp_path, small, build_leaderboard(small), [], [])
    md, page = md_path.read_text(), html_path.read_text()
    section = _section(md, "Per-word results")
    headings = re.findall(r"^### (.+)$", section, flags=re.MULTILINE)
    assert headings == [f"{m}/{p}" for m, p in small[["model", "pretrained"]].drop_duplicates().itertuples(index=False)]
    header = next(ln for ln in section.splitlines() if ln.startswith("| word |"))
    assert "model" not in header and "pretrained" not in header and "defence" not in header
    names = {str(v) for v in small["model"]} | {str(v) for v in small["pretrained"]}
    for row in _table_rows(section):
        cells = {c.strip() for c in row.strip("|").split("|")}
        assert not cells & names, row
    # The rows under a heading are that model's.
    for (model, pretrained), rows in small.groupby(["model", "pretrained"], sort=False):
        part = section.split(f"### {model}/{pretrained}\n")[1].split("\n### ")[0]
        assert len(_table_rows(part)) == len(rows)
    html_section = page.split('id="per-word-results"')[1].split("<h2")[0]
    assert "<th>model</th>" not in html_section


def test_per_word_tables_split_by_defence(small, tmp_path):
    defended = pd.concat([small, small.assign(defence="prefix", asr=small["asr"] / 2)], ignore_index=True)
    md = write_report(tmp_path, defended, build_leaderboard(defended), [], [])[0].read_text()
    section = _section(md, "Per-word results")
    headings = re.findall(r"^### (.+)$", section, flags=re.MULTILINE)
    assert len(headings) == 2 * small[["model", "pretrained"]].drop_duplicates().shape[0]
    assert all(h.endswith((" — defence none", " — defence prefix")) for h in headings)
    assert len(_table_rows(section)) == len(defended)
    assert "defence" not in next(ln for ln in section.splitlines() if ln.startswith("| word |"))


def test_per_word_md_keeps_model_columns(small):
    # per_word.md (written by write_tables) is unchanged: one table, model and weights on every row.
    header, cells = build_per_word_cells(small)
    assert header == PER_WORD_HEADER and len(cells) == len(small)
    md = format_per_word_markdown(small)
    assert md.startswith("| model | pretrained | word |") and md.count("| ViT-B-32 | openai |") == len(
        small[small["model"] == "ViT-B-32"])


def test_page_names_no_module_and_explains_heatmap_files(small, records, tmp_path):
    confusion = build_confusion_table(records)
    heatmap = tmp_path / "confusion_ipod.png"
    plots.plot_confusion(confusion, "iPod", CLASS_NAMES, heatmap, target_index=605)
    sections = list_confusion_blocks(build_top_confusions(confusion), CLASS_NAMES, {"iPod": 605, "$$$": 719},
                                     {"iPod": heatmap})
    info = {"complete": True, "device": "cpu", "config": {"models": [{"name": "ViT-B-32", "pretrained": "openai"}]}}
    md_path, html_path = write_report(tmp_path, small, build_leaderboard(small), [], [info], sections=sections)
    md, page = md_path.read_text(), html_path.read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    for shown in (md, text):
        assert not re.search(r"typoattack\.[a-z_]", shown), re.search(r".{60}typoattack\.[a-z_].{20}", shown)
    note = next(p for p in md.split("\n\n") if "heatmap of a word" in p)
    # The examples the note gives are the names the report writes.
    for word in ("$$$", "<b>&"):
        assert f"`{word}` → confusion_{get_word_slug(word)}.png" in note
    for word, spelled in (("café", "cafe"), ("中", "u4e2d")):
        assert f"`{word}` → {spelled}" in note and get_word_slug(word) == spelled
    # In the HTML the word is code and the file name text, escaped.
    assert "<code>&lt;b&gt;&amp;</code> → confusion_lt-b-gt-and.png" in page


def test_paragraph_links_and_code_in_html(tmp_path):
    from typoattack.analysis.report_page import ReportBlock, write_report_pages

    blocks = [ReportBlock("h1", "t"), ReportBlock("p", "See [per_word.csv](per_word.csv) and `<x>` here."),
              ReportBlock("p", "Not a link: [x](javascript:alert(1)) and [a](b c)."),
              ReportBlock("p", "Unbalanced ` tick & [f.csv](f.csv)")]
    md_path, html_path = write_report_pages(blocks, tmp_path, "page", "t")
    page = html_path.read_text()
    assert '<p>See <a href="per_word.csv">per_word.csv</a> and <code>&lt;x&gt;</code> here.</p>' in page
    assert "javascript" not in page.split("<body>")[1].split("Not a link")[0]
    assert '<a href="javascript' not in page and "[a](b c)" in page
    assert '<p>Unbalanced ` tick &amp; <a href="f.csv">f.csv</a></p>' in page
    assert "See [per_word.csv](per_word.csv) and `<x>` here." in md_path.read_text()
