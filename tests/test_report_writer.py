"""Tests of typoattack.analysis.report's writer: report.md and report.html from (header, cells) tables."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from synthetic_tables import CLASS_NAMES, FRACTIONS, MODELS, N_IMAGES, PLACEMENTS, WORDS, make_records, with_fills
from typoattack.analysis import plots
from typoattack.analysis.metrics import (
    LEADERBOARD_RULE, PER_WORD_COLUMNS, build_confusion_table, build_leaderboard, build_per_word_table,
    build_top_confusions,
)
from typoattack.analysis.report import write_report
from typoattack.analysis.report_page import get_anchor
from typoattack.analysis.report_sections import list_confusion_blocks
from typoattack.analysis.table_cells import format_leaderboard_markdown


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    return make_records()


@pytest.fixture(scope="module")
def per_word(records) -> pd.DataFrame:
    return build_per_word_table(records, CLASS_NAMES)


def _run_info(pretrained: str) -> dict:
    return {"complete": True, "device": "cpu", "n_items": N_IMAGES,
            "versions": {"torch": "2.14.1", "open_clip": "3.3.0"},
            "config": {"models": [{"name": "typoattack-tiny", "pretrained": pretrained}], "fractions": FRACTIONS, "seed": 0,
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
    plots.plot_confusion(build_confusion_table(records), "iPod", CLASS_NAMES, paths[3], target_index=605)
    board = build_leaderboard(per_word)
    md_path, html_path = write_report(out, per_word, board, paths, [_run_info("seed:0")], title="Test <report>")
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
    assert format_leaderboard_markdown(board) in md
    for r in board.to_dict("records"):
        assert f"{100 * r['mean_asr']:.1f}%" in md
    # The per-word table (one row per condition) with the words in code spans.
    assert md.count("| `<b>&` |") == len(MODELS) * len(FRACTIONS) * len(PLACEMENTS)
    # The run section: config block, versions, device, images, and the untrained warning.
    assert "```json" in md and '"vocab": "goh2021"' in md
    assert "torch 2.14.1" in md and "- device: cpu" in md and f"- items selected: {N_IMAGES}" in md
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
        assert f"<td>{m}</td><td>{p}</td>" in page  # the leaderboard
        assert f"<h3>{m}/{p}</h3>" in page  # the per-word table of the model
    # One per-word table per model (its header row, then one row per word and condition).
    assert page.count('<table class="leaderboard">') == 1 and page.count('<table class="per-word">') == len(MODELS)
    assert page.count("<tr>") == (1 + len(board) + len(MODELS) * (1 + len(WORDS) * len(FRACTIONS) * len(PLACEMENTS)))
    assert '<p class="warn"><strong>⚠ UNTRAINED MODEL' in page
    assert "&quot;vocab&quot;: &quot;goh2021&quot;" in page
    # Images decode back to the PNG files.
    import base64
    first = re.search(r'data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(first) == paths[0].read_bytes()


def test_report_without_untrained_model_has_no_warning(per_word, tmp_path):
    trained = per_word[per_word["pretrained"] == "openai"]
    md_path, html_path = write_report(tmp_path, trained, build_leaderboard(trained), [],
                                            [_run_info("laion2b_s34b_b79k")])
    assert "UNTRAINED" not in md_path.read_text() and "UNTRAINED" not in html_path.read_text()
    assert "data:image/png;base64," not in html_path.read_text()


def test_report_style_columns_distinguish_rows(per_word, tmp_path):
    styled = with_fills(per_word)
    md_path, _ = write_report(tmp_path, styled, build_leaderboard(styled), [], [])
    md = md_path.read_text()
    assert md.count("| paper8 · fill=red |") == len(MODELS) * len(WORDS) * len(FRACTIONS)
    assert md.count("| paper8 · fill=white |") == len(MODELS) * len(WORDS) * len(FRACTIONS)


def test_report_pipe_in_word_keeps_table_shape(per_word, tmp_path):
    piped = per_word.assign(word=per_word["word"].replace({"iPod": "a|b"}))
    _, html_path = write_report(tmp_path, piped, build_leaderboard(piped), [], [])
    page = html_path.read_text()
    assert "<code>a|b</code>" in page
    body = page.split('<table class="per-word">')[1].split("</table>")[0]
    counts = {row.count("<td>") for row in body.split("<tr>")[2:]}
    assert counts == {13}  # the per-word columns less model and pretrained (the table's heading)


def test_report_missing_figure(per_word, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        write_report(tmp_path, per_word, build_leaderboard(per_word), [tmp_path / "nope.png"], [])


def test_report_empty_tables(tmp_path):
    empty = pd.DataFrame(columns=PER_WORD_COLUMNS)
    md_path, html_path = write_report(tmp_path, empty, build_leaderboard(empty), [], [])
    assert md_path.read_text().count("No attacked conditions.") == 2
    assert "<table" not in html_path.read_text()


def test_missing_pretrained_is_blank(per_word, tmp_path):
    hub = per_word.assign(pretrained=per_word["pretrained"].where(per_word["pretrained"] == "openai", None))
    board = build_leaderboard(hub)
    assert len(board) == len(MODELS)
    plots.plot_accuracy(hub, tmp_path / "acc.png")
    md = write_report(tmp_path, hub, board, [tmp_path / "acc.png"], [])[0].read_text()
    assert "nan" not in md.lower() and "None" not in md
    # The model without weights is the heading of its per-word table.
    assert "### typoattack-tiny\n" in md and "### ViT-B-32/openai\n" in md


def test_report_opens_with_the_leaderboard_and_a_linked_contents_list(report):
    _, _, board, md, page, _ = report
    headings = re.findall(r"^## (.+)$", md, flags=re.MULTILINE)
    assert headings[0] == "Leaderboard" and headings[1:] == ["Figures", "Per-word results", "Runs"]
    # The rule above the table, the table, then the contents: every later section, linked.
    top = md[: md.index("## Figures")]
    assert top.index(LEADERBOARD_RULE) < top.index("| rank |") < top.index("**Contents:**")
    assert [f"- [{h}](#{get_anchor(h)})" for h in headings[1:]] == re.findall(r"^- \[.*\]\(#.*\)$", top, re.MULTILINE)
    assert '<nav class="toc">' in page
    for h in headings:
        assert f'<h2 id="{get_anchor(h)}">{h}</h2>' in page
    assert page.index('<table class="leaderboard">') < page.index('<nav class="toc">') < page.index('id="figures"')
    links = re.findall(r'<a href="#([^"]+)">', page)
    assert links == [get_anchor(h) for h in headings[1:]]


def test_get_anchor_matches_github():
    assert get_anchor("Per-word results") == "per-word-results"
    assert get_anchor("Top confusions") == "top-confusions"
    assert get_anchor("Words ranked by attack success rate") == "words-ranked-by-attack-success-rate"


def test_report_sections_follow_the_figures(per_word, records, tmp_path):
    top = build_top_confusions(build_confusion_table(records))
    heatmap = tmp_path / "confusion_ipod.png"
    plots.plot_confusion(build_confusion_table(records), "iPod", CLASS_NAMES, heatmap, target_index=605)
    sections = list_confusion_blocks(top, CLASS_NAMES, {"iPod": 605, "$$$": 719, "<b>&": 963}, {"iPod": heatmap})
    md_path, html_path = write_report(tmp_path, per_word, build_leaderboard(per_word), [], [], sections=sections)
    md, page = md_path.read_text(), html_path.read_text()
    assert re.findall(r"^## (.+)$", md, flags=re.MULTILINE) == ["Leaderboard", "Top confusions", "Per-word results"]
    assert "- [Top confusions](#top-confusions)" in md
    table = md[md.index("## Top confusions"):md.index("## Per-word results")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(top) + 3  # the confusions, then one file row per word
    assert "| `iPod` → class 605 | confusion_ipod.png |" in table
    assert "| `$$$` → class 719 | — (no class gained enough) |" in table
    assert "![confusion_ipod](confusion_ipod.png)" in table
    assert page.count('<table class="confusions">') == 1 and page.count("<img ") == 1
    with pytest.raises(FileNotFoundError, match="gone.png"):
        write_report(tmp_path, per_word, build_leaderboard(per_word), [], [],
                     sections=list_confusion_blocks(top, CLASS_NAMES, {}, {"iPod": tmp_path / "gone.png"}))
