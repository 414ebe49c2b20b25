"""Result files and the report: every table is computed from records.parquet (no model code).

Tables are built once as (header, cells), string cells without markup escaping; Markdown
(`format_markdown_table`), HTML (`_html_table`) and the terminal (rich) render the same cells.
`write_report` writes report.md and a self-contained report.html from the same list of blocks.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from typoattack.analysis.labels import (
    format_percent, format_style, get_model_label, is_missing, list_varying_styles,
)
from typoattack.analysis.metrics import (
    HEATMAP_MIN_IMAGES, HEATMAP_MIN_SHARE, LEADERBOARD_RULE, MANY_WORDS, PER_WORD_COLUMNS, RANKING_SIZE,
    TOP_CONFUSIONS_PER_WORD, build_asr_ranking, build_defence_table, count_words, finish_per_word_table,
    with_defence,
)
from typoattack.analysis.query import RecordSet
from typoattack.analysis.tables import query_clean_table, query_outcome_counts, write_confusion
from typoattack.config.types import get_model_warnings
from typoattack.errors import TypoAttackError
from typoattack.files import write_csv, write_text_atomic
from typoattack.records import NO_DEFENCE

PER_WORD_CSV = "per_word.csv"
PER_WORD_MD = "per_word.md"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PARQUET = "confusion.parquet"


PER_WORD_HEADER = ["model", "pretrained", "word", "target", "fraction", "placement", "n", "pixel cover",
                   "clean top-1", "attacked top-1", "ASR [95% CI]", "already target", "changed away",
                   "neither", "flip rate"]
_PER_WORD_PERCENT = ["pixel_cover_mean", "clean_top1", "attacked_top1", "asr", "changed_to",
                     "already_target", "changed_away", "neither", "flip_rate"]


def format_markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table of string cells (pipes in cells escaped), with a trailing newline."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def build_per_word_cells(per_word: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the per-word table (percentages with one decimal, the word as
    `code`)."""
    cells = []
    for r in per_word.to_dict("records"):
        f = {k: ("n/a" if pd.isna(r[k]) else f"{100 * r[k]:.1f}%") for k in _PER_WORD_PERCENT}
        ci = f"{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}"
        cells.append([
            str(r["model"]), str(r["pretrained"]), f"`{r['word']}`", f"{r['target_name']} ({r['target_index']})",
            f"{r['fraction']:g}", str(r["placement"]), str(r["n_images"]), f["pixel_cover_mean"],
            f["clean_top1"], f["attacked_top1"], f"{f['asr']} [{ci}]", f["already_target"],
            f["changed_away"], f["neither"], f["flip_rate"],
        ])
    if has_several_defences(per_word):
        for row, defence in zip(cells, per_word["defence"]):
            row.insert(2, str(defence))
        return [*PER_WORD_HEADER[:2], "defence", *PER_WORD_HEADER[2:]], cells
    return list(PER_WORD_HEADER), cells


def has_several_defences(table: pd.DataFrame) -> bool:
    """True when the table holds more than one defence (its tables then show the defence column)."""
    return "defence" in table.columns and table["defence"].nunique() > 1


def format_per_word_markdown(per_word: pd.DataFrame) -> str:
    """Render the per-word table as a Markdown table with percentages."""
    return format_markdown_table(*build_per_word_cells(per_word))


def build_rich_tables(per_word: pd.DataFrame) -> list[Table]:
    """Build one rich Table of the per-word results per model, for the terminal."""
    tables = []
    keys = ["model", "pretrained", "defence"] if has_several_defences(per_word) else ["model", "pretrained"]
    for key, rows in per_word.groupby(keys, sort=False):
        title = " / ".join(str(k) for k in key[:2]) + (f" (defence {key[2]})" if len(key) > 2 else "")
        table = Table(title=f"Typographic attack success: {title}")
        for col in ("word", "target", "frac", "placement", "n", "cover", "clean", "attacked", "ASR [95% CI]", "flip"):
            table.add_column(col, justify="left" if col in ("word", "target", "placement") else "right")
        for r in rows.to_dict("records"):
            flip = "n/a" if pd.isna(r["flip_rate"]) else f"{100 * r['flip_rate']:.1f}%"
            table.add_row(
                str(r["word"]), str(r["target_name"]), f"{r['fraction']:g}", str(r["placement"]), str(r["n_images"]),
                f"{100 * r['pixel_cover_mean']:.2f}%", f"{100 * r['clean_top1']:.1f}%",
                f"{100 * r['attacked_top1']:.1f}%",
                f"{100 * r['asr']:.1f}% [{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}]", flip,
            )
        tables.append(table)
    return tables


@dataclass
class EvalTables:
    """What `write_tables` wrote of one run.

    Attributes:
        per_word: The per-word table.
        counts: The outcome counts it was finished from (`metrics.OUTCOME_COUNT_COLUMNS` per
            condition: sums, so the counts of several runs add up).
        confusion: What run.json says of confusion.parquet and confusion.csv.
    """

    per_word: pd.DataFrame
    counts: pd.DataFrame
    confusion: dict[str, Any]


def write_tables(records: RecordSet, out_dir: str | Path, class_names: Sequence[str]) -> EvalTables:
    """Compute per_word.csv/.md, confusion.parquet and confusion.csv from the records (out-of-core
    queries, `typoattack.analysis.tables`) and write them."""
    out_dir = Path(out_dir)
    counts = query_outcome_counts(records)
    per_word = finish_per_word_table(counts, class_names)
    write_csv(per_word, out_dir / PER_WORD_CSV)
    write_text_atomic(out_dir / PER_WORD_MD, format_per_word_markdown(per_word))
    confusion = write_confusion(records, out_dir / CONFUSION_PARQUET, out_dir / CONFUSION_CSV)
    return EvalTables(per_word, counts, confusion)


def summarize_clean(records: RecordSet) -> list[dict[str, Any]]:
    """Clean accuracy per model as plain dicts (for run.json)."""
    return query_clean_table(records).to_dict("records")


# --------------------------------------------------------------------------------------------
# Report


def build_leaderboard_cells(leaderboard: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the leaderboard (percentages with one decimal), in its rank order.

    The defence column and `Δ clean vs none` (the change of clean top-1 from the same model's
    undefended row, in points; `n/a` without one) are shown when a row has a defence other than
    `none`.
    """
    asr_cols = [c for c in leaderboard.columns if str(c).startswith("asr@")]
    header = ["rank", "model", "pretrained", "n images", "clean top-1", "attacked top-1", "mean ASR"]
    header += [f"ASR @ {c[4:]}" for c in asr_cols]
    cells = []
    for rank, r in enumerate(leaderboard.to_dict("records"), start=1):
        pretrained = "" if is_missing(r["pretrained"]) else str(r["pretrained"])
        cells.append([str(rank), str(r["model"]), pretrained, str(int(r["n_images"])), format_percent(r["clean_top1"]),
                      format_percent(r["attacked_top1"]), format_percent(r["mean_asr"])] + [format_percent(r[c]) for c in asr_cols])
    defended = "defence" in leaderboard.columns and (leaderboard["defence"] != NO_DEFENCE).any()
    if defended:
        header.insert(3, "defence")
        header.insert(6, "Δ clean vs none")
        changes = leaderboard.get("clean_top1_vs_none", pd.Series(np.nan, index=leaderboard.index))
        for row, defence, change in zip(cells, leaderboard["defence"], changes):
            row.insert(3, str(defence))
            row.insert(6, "" if defence == NO_DEFENCE else format_points(change))
    return header, cells


def format_points(value: Any) -> str:
    """A change of a share in percentage points (`-3.2 pt`), `n/a` when missing."""
    return "n/a" if is_missing(value) else f"{100 * float(value):+.1f} pt"


RANKING_HEADER = ["model", "pretrained", "fraction", "placement", "group", "rank", "word", "target", "n",
                  "ASR [95% CI]"]


def build_ranking_cells(ranking: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of `build_asr_ranking`'s table: rank as `r / n_words`, the word as
    `code`, ASR and its interval as percentages (varying style columns appended to the placement)."""
    styles = list_varying_styles(ranking)
    cells = []
    for r in ranking.to_dict("records"):
        placement = "" if is_missing(r["placement"]) else str(r["placement"])
        if styles:
            placement += f" · {format_style(r, styles)}"
        ci = f"{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}"
        cells.append([str(r["model"]), "" if is_missing(r["pretrained"]) else str(r["pretrained"]),
                      f"{r['fraction']:g}", placement, str(r["group"]), f"{r['rank']} / {r['n_words']}",
                      f"`{r['word']}`", f"{r['target_name']} ({r['target_index']})", str(r["n_images"]),
                      f"{format_percent(r['asr'])} [{ci}]"])
    return list(RANKING_HEADER), cells


def build_defence_cells(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of `build_defence_table` (percentages; changes in points vs `none`)."""
    asr_cols = [c for c in table.columns if str(c).startswith("asr@")]
    header = ["model", "pretrained", "defence", "compared with", "clean top-1", "Δ clean", "attacked top-1",
              "mean ASR", "Δ ASR"]
    header += [f"ASR @ {c[4:]}" for c in asr_cols]

    cells = []
    for r in table.to_dict("records"):
        cells.append([str(r["model"]), "" if is_missing(r["pretrained"]) else str(r["pretrained"]), str(r["defence"]),
                      "" if r["defence"] == r["baseline"] else str(r["baseline"]), format_percent(r["clean_top1"]), format_points(r["clean_top1_change"]),
                      format_percent(r["attacked_top1"]), format_percent(r["mean_asr"]),
                      format_points(r["mean_asr_change"])] + [format_percent(r[c]) for c in asr_cols])
    return header, cells


def format_leaderboard_markdown(leaderboard: pd.DataFrame) -> str:
    """Render the leaderboard as a Markdown table (rank first, percentages with one decimal).

    Args:
        leaderboard: The output of build_leaderboard.

    Returns:
        The table with a trailing newline; only the header when the leaderboard is empty.
    """
    return format_markdown_table(*build_leaderboard_cells(leaderboard))


def _per_word_display(per_word: pd.DataFrame) -> pd.DataFrame:
    """The per-word table prepared for the report: text cells as strings (missing as ''), and
    varying style columns appended to the placement (`paper8 · fill=red`) so rows that differ only
    by style stay distinguishable."""
    shown = per_word.copy()
    styles = list_varying_styles(per_word)
    if styles:
        shown["placement"] = [
            f"{p} · {format_style(dict(zip(styles, vals)), styles)}"
            for p, *vals in zip(shown["placement"], *(shown[c] for c in styles))
        ]
    for col in ("model", "pretrained", "word", "target_name", "placement"):
        shown[col] = ["" if is_missing(v) else str(v) for v in shown[col]]
    return shown[PER_WORD_COLUMNS]


PER_WORD_GROUP_KEYS = ["model", "pretrained", "defence"]
"""The per-word section of the report has one table per value of these columns."""


def list_per_word_blocks(per_word: pd.DataFrame) -> list[ReportBlock]:
    """The report's "Per-word results" section: a note, then per (model, pretrained, defence) an h3
    heading (`model/pretrained`, with ` — defence X` when the table holds several defences) and its
    table, without the model, pretrained and defence columns.

    Up to MANY_WORDS (word, target) pairs the tables hold every row (`build_per_word_group_cells`);
    above, per model, defence and condition only the RANKING_SIZE highest and lowest words by ASR
    (`build_per_word_ranking_cells`), so the page does not grow with the vocabulary; the note links
    per_word.csv for the rest.
    """
    blocks = [ReportBlock("h2", "Per-word results")]
    if per_word.empty:
        return blocks + [ReportBlock("p", _NO_CONDITIONS)]
    shown = _per_word_display(with_defence(per_word))
    several = has_several_defences(shown)
    defence = " and defence" if several else ""
    n_words = count_words(per_word)
    ranked = n_words > MANY_WORDS
    note = (_PER_WORD_RANKED_NOTE.format(n_words=n_words, many=MANY_WORDS, size=RANKING_SIZE, defence=defence)
            if ranked else _PER_WORD_NOTE.format(defence=defence))
    blocks.append(ReportBlock("p", note))
    for (model, pretrained, defence_name), rows in shown.groupby(PER_WORD_GROUP_KEYS, sort=False):
        title = get_model_label(model, pretrained) + (f" — defence {defence_name}" if several else "")
        cells = build_per_word_ranking_cells(rows) if ranked else build_per_word_group_cells(rows)
        blocks += [ReportBlock("h3", title), build_table_block(*cells, "per-word")]
    return blocks


def build_per_word_group_cells(rows: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the per-word rows of one model and defence: the cells of
    `build_per_word_cells` without the model, pretrained and defence columns."""
    header, cells = build_per_word_cells(rows.drop(columns="defence", errors="ignore"))
    return header[2:], [row[2:] for row in cells]


def build_per_word_ranking_cells(rows: pd.DataFrame, n: int = RANKING_SIZE) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the `n` highest and `n` lowest words by ASR in each condition of
    the per-word rows of one model and defence (`metrics.build_asr_ranking`), in rank order: fraction,
    placement, rank (`r / n_words`), then the columns of `build_per_word_group_cells`."""
    keys = ["model", "pretrained", "placement", "fraction"]
    ranking = build_asr_ranking(rows[PER_WORD_COLUMNS].drop(columns="defence"), n)
    chosen = ranking[[*keys, "word", "target_index", "rank", "n_words"]].merge(
        rows, on=[*keys, "word", "target_index"], how="left", validate="one_to_one")
    header, cells = build_per_word_group_cells(chosen)
    first = [header.index("fraction"), header.index("placement")]
    rest = [i for i in range(len(header)) if i not in first]
    ranks = [f"{r} / {k}" for r, k in zip(chosen["rank"], chosen["n_words"])]
    header = [header[first[0]], header[first[1]], "rank"] + [header[i] for i in rest]
    cells = [[row[first[0]], row[first[1]], rank] + [row[i] for i in rest] for row, rank in zip(cells, ranks)]
    return header, cells


_LINK = re.compile(r"\[([^\]`]+)\]\(([^()\s`]+)\)")


def _html_inline(text: str) -> str:
    """HTML of a paragraph: escaped text with `code` spans and Markdown links `[text](href)`
    (relative or http(s) targets only; others stay text)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: no code spans
        parts = [text]
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        pos = 0
        for m in _LINK.finditer(part):
            href = m.group(2)
            if ":" in href.split("/")[0] and not href.startswith(("http://", "https://")):
                continue
            out.append(html.escape(part[pos:m.start()]))
            out.append(f'<a href="{html.escape(href)}">{html.escape(m.group(1))}</a>')
            pos = m.end()
        out.append(html.escape(part[pos:]))
    return "".join(out)


def _html_cell(text: str) -> str:
    """HTML of one table cell: escaped text with `code` spans."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # unbalanced backticks: all text
        return html.escape(text)
    return "".join(html.escape(p) if i % 2 == 0 else f"<code>{html.escape(p)}</code>" for i, p in enumerate(parts))


def _html_table(header: list[str], rows: list[list[str]], css_class: str) -> str:
    """An HTML table from string cells (escaped; Markdown code spans kept as <code>)."""
    head = "".join(f"<th>{_html_cell(h)}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>'


def _model_warnings(per_word: pd.DataFrame, run_infos: Sequence[dict]) -> list[str]:
    """Warnings about the models in the table or the run infos (random weights, the demo model)."""
    found: dict[tuple[str, str | None], None] = {}
    if {"model", "pretrained"} <= set(per_word.columns):
        for m, p in per_word[["model", "pretrained"]].drop_duplicates().itertuples(index=False):
            found[(str(m), None if is_missing(p) or p == "" else str(p))] = None
    for info in run_infos:
        for m, p in _run_models(info):
            found[(m, p or None)] = None
    return get_model_warnings(found)


def _run_models(info: dict) -> list[tuple[str, str]]:
    """(name, pretrained) of every model a run.json names (config and per-model entries)."""
    out: list[tuple[str, str]] = []
    config = info.get("config") or {}
    entries = list(config.get("models") or []) + list(info.get("models") or [])
    if config.get("model"):
        entries.append({"name": config.get("model"), "pretrained": config.get("pretrained")})
    for e in entries:
        if isinstance(e, dict):
            out.append((str(e.get("name", "?")), "" if e.get("pretrained") is None else str(e.get("pretrained"))))
    return list(dict.fromkeys(out))


def _run_facts(info: dict) -> list[tuple[str, str]]:
    """(label, value) lines summarising one run.json."""
    facts: list[tuple[str, str]] = []
    config = info.get("config") or {}
    if config.get("out"):
        facts.append(("output folder", str(config["out"])))
    facts.append(("complete", "yes" if info.get("complete") else "no"))
    facts.append(("device", str(info.get("device", "unknown"))))
    if "n_items" in info:
        facts.append(("items selected", str(info["n_items"])))
    for m in info.get("models") or []:
        if isinstance(m, dict):
            label = get_model_label(m.get("name", "?"), m.get("pretrained"))
            n = m.get("n_images", "?")
            skipped = m.get("n_skipped")
            facts.append((f"images evaluated ({label})", f"{n}" + (f" ({skipped} skipped)" if skipped else "")))
    if config.get("seed") is not None:
        facts.append(("seed", str(config["seed"])))
    versions = info.get("versions") or {}
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    for key in ("started", "finished"):
        if info.get(key):
            facts.append((key, str(info[key])))
    return facts


def _run_title(info: dict, index: int) -> str:
    """A heading for one run."""
    config = info.get("config") or {}
    names = [get_model_label(m, p) for m, p in _run_models(info)]
    where = f" ({config['out']})" if config.get("out") else ""
    return f"Run {index}: {', '.join(names) or 'unknown model'}{where}"


REPORT_CSS = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
    "th,td{border:1px solid #ccc;padding:0.25em 0.5em;text-align:right}"
    "th{background:#f0f0f0}td:nth-child(-n+4){text-align:left}"
    "tbody tr:nth-child(even){background:#fafafa}"
    "figure{margin:1.5em 0}img{max-width:100%;height:auto;border:1px solid #eee}"
    "figcaption{color:#666;font-size:0.85em}"
    "pre{background:#f6f8fa;padding:0.8em;overflow-x:auto;font-size:0.8em}"
    ".warn{background:#fff3cd;border:1px solid #e0b252;padding:0.6em 0.8em}"
    ".toc ul{margin-top:0}"
)


_LEADERBOARD_NOTE = (f"{LEADERBOARD_RULE} ASR: attack success rate (clean prediction not the target, attacked "
                     "prediction the target); attacked top-1 and ASR are means over words, placements and fractions. "
                     "With defences, Δ clean vs none is the change of clean top-1 from the same model without a "
                     "defence: a negative value is what the defence costs on clean images.")
_NO_CONDITIONS = "No attacked conditions."
_PER_WORD_NOTE = ("One table per model{defence}, one row per word and condition (fraction, placement). The same rows, "
                  "with model and weights on each, are in [per_word.csv](per_word.csv) beside this page.")
_PER_WORD_RANKED_NOTE = (
    "The vocabulary has {n_words} words (more than {many}): per model{defence} and condition (fraction, placement), "
    "the {size} words with the highest and the {size} with the lowest attack success rate (rank 1: highest; ties "
    "by word, then target class), with the 95% Wilson interval. Every word's rows are in "
    "[per_word.csv](per_word.csv) beside this page.")


@dataclass(frozen=True)
class ReportBlock:
    """One element of the report: `kind` is h1, h2, h3, p, warn, table, figure, facts, config or toc
    (a linked list of the h2 headings that follow it)."""

    kind: str
    text: str = ""
    header: tuple[str, ...] = ()
    cells: tuple[tuple[str, ...], ...] = ()
    path: Path | None = None


def build_table_block(header: list[str], cells: list[list[str]], css_class: str) -> ReportBlock:
    return ReportBlock("table", css_class, tuple(header), tuple(tuple(r) for r in cells))


def list_run_blocks(info: dict, index: int) -> list[ReportBlock]:
    """Heading, untrained warning, facts and config of one run."""
    blocks = [ReportBlock("h3", _run_title(info, index))]
    blocks.extend(ReportBlock("warn", w) for w in get_model_warnings((m, p or None) for m, p in _run_models(info)))
    blocks.append(ReportBlock("facts", cells=tuple((k, v) for k, v in _run_facts(info))))
    blocks.append(ReportBlock("config", json.dumps(info.get("config") or {}, indent=2, sort_keys=True, default=str)))
    return blocks


_DEFENCE_NOTE = ("Each defence on the same images, words, fractions and placements: clean and attacked top-1, "
                 "mean ASR, and their change in percentage points from the row named under 'compared with': no "
                 "defence (`none`, the run's templates), or for a Defense-Prefix vector `templates:photo`, its own "
                 "single prompt \"a photo of a {}.\" without the learned token (so the change is the token's alone, "
                 "not that of leaving the template average). One ASR-vs-fraction figure per defence is in the "
                 "figures below.")


TOP_CONFUSION_HEADER = ["word → target", "fraction", "placement", "true class → predicted class", "n", "share",
                        "n clean", "into class", "into class clean"]
_TOP_CONFUSION_NOTE = (
    "The most frequent confusions of each word (true class → predicted class, wrong predictions only): in each "
    "condition the cell with the most images (ties: the predicted class that gained the most images over the clean "
    "images, then class index), and of these the {n} with the most images, so each row of a word is another "
    "condition. n: the cell's images; share: of the condition's images; n clean: the same cell on the clean images; "
    "into class: all images of other true classes predicted as that class under the condition; into class clean: "
    "the same on the clean images. Every word's rows are in top_confusions.csv.")
_HEATMAP_NOTE = (
    "A heatmap (where the attack sent the images: the clean images and each condition against the classes that "
    "gained the most) is drawn for a word only when, in one of its conditions, one class gained at least "
    "{images} images and {share:.0%} of the condition's images over the clean images; otherwise it would show single "
    "images scattered over classes. The heatmap of a word is the file `confusion_<word>.png` beside this page, the word "
    "spelled with lower-case letters, digits and hyphens only: accents are dropped (`café` → cafe), symbols are "
    "named (`$$$` → confusion_dollar-dollar-dollar.png, `<b>&` → confusion_lt-b-gt-and.png), any other character "
    "is written as u and its code point (`中` → u4e2d), and a word whose name is taken by another (`a b` and `A-B`) "
    "gets -2, -3, …. The table below lists each word beside its file.")


def format_class_name(index: Any, class_names: Sequence[str]) -> str:
    """The class name, with its index when another class has the same name (ImageNet's two cranes)."""
    name = str(class_names[int(index)])
    return f"{name} ({int(index)})" if sum(1 for n in class_names if n == name) > 1 else name


def build_top_confusion_cells(top: pd.DataFrame, class_names: Sequence[str],
                              targets: dict[str, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of `metrics.build_top_confusions` (TOP_CONFUSION_HEADER; a model
    column when the table holds several models, a defence column with several defences; varying
    style columns appended to the placement).

    Args:
        top: The output of `build_top_confusions`.
        class_names: Class names indexed by class index.
        targets: word -> target class index, shown beside the word.
    """
    styles = list_varying_styles(top)
    targets = targets or {}
    several_models = top[["model", "pretrained"]].astype(str).drop_duplicates().shape[0] > 1
    several_defences = has_several_defences(top)
    header = list(TOP_CONFUSION_HEADER)
    cells = []
    for r in top.to_dict("records"):
        word = f"`{r['word']}`"
        if r["word"] in targets:
            word += f" → {format_class_name(targets[r['word']], class_names)}"
        placement = str(r["placement"]) + (f" · {format_style(r, styles)}" if styles else "")
        row = [word, f"{r['fraction']:g}", placement,
               f"{format_class_name(r['true_index'], class_names)} → {format_class_name(r['pred_index'], class_names)}",
               str(int(r["count"])), format_percent(r["share"]), str(int(r["clean_count"])), str(int(r["into_count"])),
               str(int(r["into_clean"]))]
        if several_defences:
            row.insert(1, str(r["defence"]))
        if several_models:
            row.insert(1, get_model_label(r["model"], r["pretrained"]))
        cells.append(row)
    if several_defences:
        header.insert(1, "defence")
    if several_models:
        header.insert(1, "model")
    return header, cells


def list_confusion_blocks(top: pd.DataFrame, class_names: Sequence[str], targets: dict[str, int],
                          heatmaps: dict[str, Path], notes: Sequence[str] = ()) -> list[ReportBlock]:
    """The report's "Top confusions" section: the rule, the table, the words with their heatmap
    files, and the heatmaps.

    Args:
        top: The output of `build_top_confusions` (the rows to show).
        class_names: Class names indexed by class index.
        targets: word -> target class index.
        heatmaps: word -> heatmap PNG, for the words that got one (in the order shown).
        notes: Extra paragraphs (e.g. which words and defence the table shows).
    """
    blocks = [ReportBlock("h2", "Top confusions"), ReportBlock("p", _TOP_CONFUSION_NOTE.format(n=TOP_CONFUSIONS_PER_WORD))]
    blocks += [ReportBlock("p", n) for n in notes]
    blocks.append(ReportBlock("p", "No word has a wrong prediction.") if top.empty
                  else build_table_block(*build_top_confusion_cells(top, class_names, targets), "confusions"))
    blocks.append(ReportBlock("p", _HEATMAP_NOTE.format(images=HEATMAP_MIN_IMAGES, share=HEATMAP_MIN_SHARE)))
    words = list(dict.fromkeys(str(w) for w in top["word"])) if not top.empty else []
    words += [w for w in heatmaps if w not in words]
    if words:
        rows = [[f"`{w}`" + (f" → {format_class_name(targets[w], class_names)}" if w in targets else ""),
                 heatmaps[w].name if w in heatmaps else "— (no class gained enough)"] for w in words]
        blocks.append(build_table_block(["word → target", "heatmap file"], rows, "heatmaps"))
    blocks += [ReportBlock("figure", path=p) for p in heatmaps.values()]
    return blocks


def _list_report_blocks(per_word: pd.DataFrame, leaderboard: pd.DataFrame, figures: list[Path],
                        run_infos: list[dict], title: str, notes: Sequence[str] = (),
                        sections: Sequence[ReportBlock] = ()) -> list[ReportBlock]:
    """The report's content, in order: the key table (leaderboard) first, then a linked list of the
    sections that follow."""
    blocks = [ReportBlock("h1", title)]
    blocks.extend(ReportBlock("warn", w) for w in _model_warnings(per_word, run_infos))
    blocks += [ReportBlock("h2", "Leaderboard"), ReportBlock("p", _LEADERBOARD_NOTE)]
    blocks.append(ReportBlock("p", _NO_CONDITIONS) if leaderboard.empty
                  else build_table_block(*build_leaderboard_cells(leaderboard), "leaderboard"))
    blocks.append(ReportBlock("toc", "Contents"))
    if has_several_defences(per_word):
        blocks += [ReportBlock("h2", "Defences"), ReportBlock("p", _DEFENCE_NOTE),
                   build_table_block(*build_defence_cells(build_defence_table(per_word)), "defences")]
    if figures or notes:
        blocks.append(ReportBlock("h2", "Figures"))
        blocks += [ReportBlock("p", n) for n in notes] + [ReportBlock("figure", path=f) for f in figures]
    blocks += list(sections)
    blocks += list_per_word_blocks(per_word)
    if run_infos:
        blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(run_infos, start=1):
        blocks += list_run_blocks(info, index)
    return blocks


def get_anchor(heading: str) -> str:
    """The link target of a heading, as GitHub spells it in Markdown: lower case, characters other
    than letters, digits, spaces and `-` dropped, spaces as `-` (`Per-word results` -> `per-word-results`)."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -")
    return kept.replace(" ", "-")


def list_contents(blocks: Sequence[ReportBlock], toc: ReportBlock) -> list[str]:
    """The h2 headings that follow `toc` in `blocks` (the entries of its linked list)."""
    after = list(blocks)[next(i for i, b in enumerate(blocks) if b is toc) + 1:]
    return [b.text for b in after if b.kind == "h2"]


def format_markdown_block(block: ReportBlock, out_dir: Path, contents: Sequence[str] = ()) -> list[str]:
    """Lines of one block in report.md (figures linked by their path relative to `out_dir`; a toc
    block lists `contents`, each heading linked)."""
    if block.kind == "toc":
        return [f"**{block.text}:**", ""] + [f"- [{h}](#{get_anchor(h)})" for h in contents] + [""]
    if block.kind in ("h1", "h2", "h3"):
        return ["#" * int(block.kind[1]) + f" {block.text}", ""]
    if block.kind == "warn":
        return [f"**⚠ {block.text}**", ""]
    if block.kind == "table":
        return [format_markdown_table(block.header, block.cells)]
    if block.kind == "figure":
        assert block.path is not None
        rel = Path(os.path.relpath(block.path.resolve(), out_dir.resolve())).as_posix()
        return [f"![{block.path.stem}]({rel})", ""]
    if block.kind == "facts":
        return [f"- {k}: {v}" for k, v in block.cells] + [""]
    if block.kind == "config":
        return ["Config:", "", "```json", block.text, "```", ""]
    return [block.text, ""]


def format_html_block(block: ReportBlock, contents: Sequence[str] = ()) -> str:
    """HTML of one block in report.html (every string escaped, figures embedded as data URIs, h2
    headings with the `id` a toc block links to)."""
    text = html.escape(block.text)
    if block.kind == "toc":
        items = "".join(f'<li><a href="#{get_anchor(h)}">{html.escape(h)}</a></li>' for h in contents)
        return f'<nav class="toc"><p><strong>{text}:</strong></p><ul>{items}</ul></nav>'
    if block.kind == "h2":
        return f'<h2 id="{get_anchor(block.text)}">{text}</h2>'
    if block.kind in ("h1", "h2", "h3"):
        return f"<{block.kind}>{text}</{block.kind}>"
    if block.kind == "warn":
        return f'<p class="warn"><strong>⚠ {text}</strong></p>'
    if block.kind == "table":
        return _html_table(list(block.header), [list(r) for r in block.cells], block.text)
    if block.kind == "figure":
        assert block.path is not None
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.path.stem)}">'
                f"<figcaption>{html.escape(block.path.name)}</figcaption></figure>")
    if block.kind == "facts":
        return "<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in block.cells) + "</ul>"
    if block.kind == "config":
        return f"<p>Config:</p><pre><code>{text}</code></pre>"
    return f"<p>{_html_inline(block.text)}</p>"


def write_report(out_dir: Path, per_word: pd.DataFrame, leaderboard: pd.DataFrame, figures: list[Path],
                 run_infos: list[dict], title: str = "typoattack report",
                 notes: Sequence[str] = (), stem: str = "report",
                 sections: Sequence[ReportBlock] = ()) -> tuple[Path, Path]:
    """Write `{stem}`.md and a self-contained `{stem}`.html (report.md / report.html) into `out_dir`.

    Both hold the same content: a warning when a model is untrained (pretrained `seed:N`), the
    leaderboard (the key numbers, with its ranking rule), a linked list of the sections below, the
    defences table when there are several, the notes and every figure, the `sections` (e.g. the
    top confusions), the per-word results (`list_per_word_blocks`: one table per model and
    defence, without those columns; every row up to MANY_WORDS (word, target) pairs, else the top
    and bottom RANKING_SIZE words by ASR per condition; a link to per_word.csv, which the caller
    writes beside the page; varying style columns are appended to the placement), and one section
    per run with its device, image counts, versions, a bold untrained-model warning where it
    applies, and its config as a JSON block. report.md links the figures by their path relative to
    `out_dir`; report.html embeds them as base64 PNG data URIs, renders tables as HTML tables,
    renders the `code` spans and `[text](file)` links of paragraphs, and escapes every string.

    Args:
        out_dir: The folder to write into (created if missing).
        per_word: The per-word table (may be empty).
        leaderboard: The output of `typoattack.analysis.metrics.build_leaderboard`.
        figures: PNG files to include, in order.
        run_infos: run.json contents of the runs the tables come from.
        title: The report title.
        notes: Paragraphs shown above the figures (e.g. which words got per-word figures).
        stem: File name of the pages without the suffix.
        sections: Further blocks, placed after the figures (each section led by an h2 block).

    Returns:
        (path of the .md, path of the .html).

    Raises:
        FileNotFoundError: A figure file does not exist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [Path(f) for f in figures]
    for f in figures:
        if not f.is_file():
            raise FileNotFoundError(f"write_report: figure {f} does not exist")
    for block in sections:
        if block.kind == "figure" and block.path is not None and not Path(block.path).is_file():
            raise FileNotFoundError(f"write_report: figure {block.path} does not exist")
    blocks = _list_report_blocks(per_word, leaderboard, figures, run_infos, title, notes, sections)
    return write_report_pages(blocks, out_dir, stem, title)


def write_report_pages(blocks: Sequence[ReportBlock], out_dir: Path, stem: str, title: str) -> tuple[Path, Path]:
    """Write `blocks` as `{stem}.md` (figures linked by relative path) and a self-contained
    `{stem}.html` (figures embedded, every string escaped) into `out_dir`.

    Returns:
        (path of the .md, path of the .html).
    """
    contents = {id(b): list_contents(blocks, b) for b in blocks if b.kind == "toc"}
    md = [line for block in blocks for line in format_markdown_block(block, out_dir, contents.get(id(block), ()))]
    md_path, html_path = out_dir / f"{stem}.md", out_dir / f"{stem}.html"
    write_text_atomic(md_path, "\n".join(md).rstrip("\n") + "\n")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(format_html_block(b, contents.get(id(b), ())) for b in blocks) + "\n</body>\n</html>\n"
    )
    write_text_atomic(html_path, page)
    return md_path, html_path


def add_optional_figure(figures: list[Path], path: Path, collect: Callable[[], Any],
                        plot: Callable[[Any, Path], None], log: Callable[[str], None], what: str) -> None:
    """Draw a figure whose inputs may be out of reach here (the run's images on another machine):
    `plot(collect(), path)` and append `path` to `figures`, or log one line saying why it was skipped.

    Args:
        figures: The report's figures so far.
        path: The PNG to write.
        collect: Gathers the figure's inputs; raises TypoAttackError when they cannot be read.
        plot: Draws them into `path`.
        log: Shows a message.
        what: What `collect` reads, for the message ("the photos").
    """
    try:
        data = collect()
    except TypoAttackError as e:
        log(f"[yellow]{path.name} skipped: {what} cannot be read here ({e})[/]")
        return
    plot(data, path)
    figures.append(path)
