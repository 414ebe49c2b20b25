"""What `typoattack vlm` shows: the end-of-run table for the terminal (80 columns) and the report page over
several vlm runs: the summary, each model's attack words ranked by ASR (`typoattack.tasks.vlm.attack_words`), the
attack-rate figures (`typoattack.tasks.vlm.plots`: against the pixel fraction per prompt for synthetic attacks, per
prompt and variant for real datasets; safe prompts beside plain ones) and a few re-rendered examples with the
questions asked and the answers (`typoattack.tasks.vlm.examples`).

Every table of the page is a query over the runs' records (`typoattack.tasks.vlm.tables`), and the examples are
found with filtered queries: no run's records are loaded whole."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from typoattack.analysis.labels import format_percent, format_style, list_varying_styles
from typoattack.analysis.query import RecordSet, quote_name
from typoattack.analysis.report_page import ReportBlock, build_table_block, write_report_pages
from typoattack.analysis.report_sections import list_run_blocks
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.errors import OutputError
from typoattack.files import write_csv
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.tasks.vlm.attack_words import build_word_blocks, rank_attack_words
from typoattack.tasks.vlm.examples import write_examples
from typoattack.tasks.vlm.plots import plot_attack_rate_by_prompt, plot_attack_rate_vs_fraction
from typoattack.tasks.vlm.tables import (
    GROUP_KEYS, PER_WORD_CSV, REAL_WORD_KEYS, SYNTHETIC_WORD_KEYS, VlmTables, compute_vlm_tables, is_synthetic,
    save_vlm_tables,
)


SYNTHETIC_FIGURE = "vlm_attack_rate.png"
REAL_FIGURE = "vlm_real_attack_rate.png"


SUMMARY_HEADER = ["model", "scoring", "prompt", "images", "n", "object [95% CI]", "attack [95% CI]", "unclear",
                  "order bias"]
_NOTE = ("Each image is asked SCAM's question with option (a) and (b) the true object's name and the attack's target "
         "name, in both orders unless the run chose one. object: share of answers choosing the object; attack: share "
         "choosing the attack (95% Wilson intervals over image x order); unclear: generated answers SCAM's parser "
         "cannot read (none with likelihood scoring); order bias: attack rate with the attack as option (a) minus "
         "with it as option (b), in percentage points. Safe prompts (SCAM's 5 and 7) warn the model about text in "
         "the image. Synthetic attacks: 'clean' is the same question on the image without text.")


def _short(name: str, width: int) -> str:
    """`name` cut to `width` characters, keeping its end (the folder or repository name)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _prompt_label(row: dict[str, Any]) -> str:
    return f"{row['prompt_id']} safe" if bool(row["safe_prompt"]) else str(row["prompt_id"])


def _condition_label(row: dict[str, Any], styles: Sequence[str]) -> str:
    """`clean`, `0.07 paper8` (with the varying style), or the dataset variant."""
    if "variant" in row and isinstance(row["variant"], str):
        return row["variant"]
    if float(row["fraction"]) == 0:
        return "clean"
    label = f"{float(row['fraction']):g} {row['placement']}"
    return f"{label} {format_style(row, styles)}" if styles else label


def _styles(summary: pd.DataFrame) -> list[str]:
    if "fraction" not in summary.columns:
        return []
    return list_varying_styles(summary[summary["fraction"].fillna(0) > 0])


def _bias(value: Any) -> str:
    return "n/a" if pd.isna(value) else f"{100 * float(value):+.1f} pp"


def _with_ci(row: dict[str, Any], name: str) -> str:
    return f"{format_percent(row[name])} [{100 * row[name + '_ci_low']:.1f}–{100 * row[name + '_ci_high']:.1f}]"


def build_summary_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text) of a vlm summary (one row per model, scoring, prompt and condition)."""
    styles = _styles(summary)
    rows = [[str(r["model"]), str(r["scoring"]), _prompt_label(r), _condition_label(r, styles), str(int(r["n"])),
             _with_ci(r, "object_acc"), _with_ci(r, "attack_rate"), format_percent(r["unclear_rate"]),
             _bias(r["order_bias"])] for r in summary.to_dict("records")]
    return SUMMARY_HEADER, rows


def build_summary_rich_tables(summary: pd.DataFrame, full: bool = False) -> list[RenderableType]:
    """The summary for the terminal: one table per model and scoring, with each prompt under each condition
    (clean, fraction and placement, or variant): the share of answers choosing the object and the attack,
    unclear answers (generate scoring) and the order bias; each at most 80 columns wide. `full`: one table with
    every column and the 95% intervals."""
    if full:
        header, cells = build_summary_cells(summary)
        table = Table(title="Vision-language models: which option each image was read as", box=box.SIMPLE_HEAD)
        for name in header:
            table.add_column(name, justify="left" if name in ("model", "scoring", "prompt", "images") else "right")
        for row in cells:
            table.add_row(*row)
        return [table]
    styles = _styles(summary)
    tables = []
    for (model, scoring), rows in summary.groupby(["model", "scoring"], sort=False):
        generate = scoring == "generate"
        title = Text(f"{_short(str(model), 64)}: {scoring} scoring", style="bold", no_wrap=True, overflow="ellipsis")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for name, justify in (("prompt", "left"), ("images", "left"), ("n", "right"), ("object", "right"),
                              ("attack", "right"), *([("unclear", "right")] if generate else []),
                              ("order bias", "right")):
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                             max_width=24 if name == "images" else None)
        for r in rows.to_dict("records"):
            table.add_row(_prompt_label(r), _condition_label(r, styles), str(int(r["n"])),
                          format_percent(r["object_acc"]), format_percent(r["attack_rate"]),
                          *([format_percent(r["unclear_rate"])] if generate else []), _bias(r["order_bias"]))
        tables.append(Group(title, table))
    return tables


def _prompt_cells(infos: Sequence[dict[str, Any]]) -> list[list[str]]:
    seen: dict[str, list[str]] = {}
    for info in infos:
        for p in info.get("prompts", []):
            seen.setdefault(p["id"], [p["id"], "yes" if p["safe"] else "", p["text"].replace("\n", " / ")])
    return list(seen.values())


def check_distinct_runs(records: RecordSet, synthetic: bool) -> None:
    """Raise OutputError when two runs of `records` hold a record of the same question (model, scoring, prompt,
    order, image and condition): first over the runs' distinct questions without images (small), then, only
    where two runs share one, over the records."""
    keys = [*GROUP_KEYS, "order", *(SYNTHETIC_WORD_KEYS if synthetic else REAL_WORD_KEYS)]
    shared = records.scalar(f"SELECT count(*) FROM (SELECT {_names(keys)} FROM (SELECT DISTINCT run, {_names(keys)} "
                            f"FROM records) GROUP BY ALL HAVING count(*) > 1)")
    if shared and records.scalar(f"SELECT count(*) FROM (SELECT {_names([*keys, 'image_id'])} FROM records "
                                 f"GROUP BY ALL HAVING count(*) > 1)"):
        raise OutputError("two of the vlm runs hold the same model, scoring, prompt and images; report runs of "
                          "different models, prompts or inputs")


def _names(columns: Sequence[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)


def write_vlm_report_page(run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                          notes: Sequence[str], progress: ProgressReporter | None = None) -> ReportPart:
    """Rewrite each vlm run's tables from its records (queries), then write into `out` the summary and per-word
    tables over all runs (vlm_summary.csv, vlm_per_word.csv; synthetic and real runs each their own rows), the
    per-word ASR section, the figures, a few re-rendered examples (synthetic input) and `{stem}.md` /
    `{stem}.html`. No run's records are loaded whole: every table and example is a query.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model, scoring, prompt and images.
    """
    progress = progress or NullProgress()
    dirs = [Path(d) for d in run_dirs]
    kinds: dict[bool, list[int]] = {}
    own: dict[int, VlmTables] = {}
    for k, (d, info) in enumerate(zip(dirs, infos)):
        with open_run_records([d], [info]) as records:
            own[k] = compute_vlm_tables(records)
            save_vlm_tables(own[k], d)
            kinds.setdefault(is_synthetic(records), []).append(k)
    out.mkdir(parents=True, exist_ok=True)
    raw = [i.to_dict() for i in infos]
    summaries, per_words, figures, word_blocks, example_blocks = [], [], [], [], []
    for synthetic, members in sorted(kinds.items(), reverse=True):
        with open_run_records([dirs[k] for k in members], [infos[k] for k in members]) as records:
            if len(members) > 1:
                check_distinct_runs(records, synthetic)
                tables = compute_vlm_tables(records)
            else:
                tables = own[members[0]]
            summary = tables.summary
            summaries.append(summary)
            per_words.append(tables.per_word)
            figure = out / (SYNTHETIC_FIGURE if synthetic else REAL_FIGURE)
            if synthetic and (summary["fraction"] > 0).any():
                plot_attack_rate_vs_fraction(summary, figure)
                figures.append(figure)
            elif not synthetic:
                plot_attack_rate_by_prompt(summary, figure)
                figures.append(figure)
            word_blocks += build_word_blocks(tables.word_counts, synthetic, "vlm_per_word.csv (and each run's "
                                             f"{PER_WORD_CSV})")
            if synthetic:
                example_blocks = write_examples(records, raw[members[0]], rank_attack_words(tables.word_counts, True),
                                                out, progress.log)
    summary = pd.concat(summaries, ignore_index=True)
    write_csv(summary, out / "vlm_summary.csv")
    write_csv(pd.concat(per_words, ignore_index=True), out / "vlm_per_word.csv")
    title = "typoattack report: vision-language models"
    blocks = [ReportBlock("h1", title), *(ReportBlock("p", n) for n in notes),
              ReportBlock("h2", "Answers per prompt and condition"), ReportBlock("p", _NOTE),
              build_table_block(*build_summary_cells(summary), "per-word")]
    if word_blocks:
        blocks += [ReportBlock("h2", "Attack words"), *word_blocks]
    blocks += [ReportBlock("h2", "Prompts"), build_table_block(["id", "safe", "text"], _prompt_cells(raw), "prompts")]
    if figures:
        blocks += [ReportBlock("h2", "Figures"), *(ReportBlock("figure", path=f) for f in figures)]
    blocks += example_blocks
    blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(raw, start=1):
        blocks += list_run_blocks(info, index)
    _, html_path = write_report_pages(blocks, out, stem, title)
    return ReportPart(html_path, summary)
