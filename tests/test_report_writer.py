"""Tests of typoattack.analysis.report's writer: report.md and report.html from (header, cells) tables."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from synthetic_tables import CLASS_NAMES, FRACTIONS, MODELS, N_IMAGES, PLACEMENTS, WORDS, make_records, with_fills
from typoattack.analysis import plots
from typoattack.analysis.metrics import PER_WORD_COLUMNS, build_leaderboard, build_per_word_table
from typoattack.analysis.report import format_leaderboard_markdown, write_report


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
    plots.plot_confusion(records, "iPod", CLASS_NAMES, paths[3])
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
    assert counts == {15}


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
    assert "| typoattack-tiny |  | `iPod` |" in md
