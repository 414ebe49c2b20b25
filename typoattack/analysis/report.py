"""Result files and the report: every table is computed from records.parquet (no model code).

`write_tables` writes per_word.csv/.md and the confusion tables of a run; `write_report` writes
report.md and a self-contained report.html from one list of blocks: the leaderboard, defences and
figures here, the per-word, top-confusion and run sections from `typoattack.analysis.report_sections`,
the cells from `typoattack.analysis.table_cells`, the page from `typoattack.analysis.report_page`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from typoattack.analysis.metrics import LEADERBOARD_RULE, build_defence_table, finish_per_word_table
from typoattack.analysis.query import RecordSet, quote_literal
from typoattack.analysis.report_page import ReportBlock, build_table_block, write_report_pages
from typoattack.analysis.report_sections import (
    NO_CONDITIONS, list_model_warnings, list_per_word_blocks, list_run_blocks,
)
from typoattack.analysis.table_cells import (
    build_defence_cells, build_leaderboard_cells, format_per_word_markdown, has_several_defences,
)
from typoattack.analysis.tables import query_clean_table, query_outcome_counts, write_confusion
from typoattack.constants import CLEAN_WORD, RANDOM_CLASS_WORD
from typoattack.errors import TypoAttackError
from typoattack.files import write_csv, write_text_atomic


PER_WORD_CSV = "per_word.csv"
PER_WORD_MD = "per_word.md"
PER_TARGET_CSV = "per_target.csv"
"""The pseudo-word `random-class` per class it showed (its per-word rows, keyed by the drawn target)."""
CONFUSION_CSV = "confusion.csv"
CONFUSION_PARQUET = "confusion.parquet"


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


def format_classes_line(classes: str) -> str:
    """The line that names a run's class set above its tables and in its report."""
    return f"Classes: {classes}"


def write_tables(records: RecordSet, out_dir: str | Path, class_names: Sequence[str],
                 classes: str | None = None) -> EvalTables:
    """Compute per_word.csv/.md, confusion.parquet and confusion.csv from the records (out-of-core
    queries, `typoattack.analysis.tables`) and write them; with the pseudo-word `random-class`, also
    per_target.csv (its rows per class drawn).

    Args:
        records: The run's records.
        out_dir: The run folder.
        class_names: The run's class names, by class index.
        classes: The class set in words ("cifar100 (100 classes)"), written above per_word.md's table;
            None (ImageNet): nothing is added, so those tables are as they were before class sets.
    """
    out_dir = Path(out_dir)
    counts = query_outcome_counts(records)
    per_word = finish_per_word_table(counts, class_names)
    write_csv(per_word, out_dir / PER_WORD_CSV)
    lead = f"{format_classes_line(classes)}\n\n" if classes else ""
    write_text_atomic(out_dir / PER_WORD_MD, lead + format_per_word_markdown(per_word))
    if records.count(f"word = {quote_literal(RANDOM_CLASS_WORD)}"):
        per_target = finish_per_word_table(
            query_outcome_counts(records, f"word IN ({quote_literal(RANDOM_CLASS_WORD)}, {quote_literal(CLEAN_WORD)})",
                                 by_target=True), class_names)
        write_csv(per_target, out_dir / PER_TARGET_CSV)
    else:
        (out_dir / PER_TARGET_CSV).unlink(missing_ok=True)
    confusion = write_confusion(records, out_dir / CONFUSION_PARQUET, out_dir / CONFUSION_CSV)
    return EvalTables(per_word, counts, confusion)


def summarize_clean(records: RecordSet) -> list[dict[str, Any]]:
    """Clean accuracy per model as plain dicts (for run.json)."""
    return query_clean_table(records).to_dict("records")


_LEADERBOARD_NOTE = (f"{LEADERBOARD_RULE} ASR: attack success rate (clean prediction not the target, attacked "
                     "prediction the target); attacked top-1 and ASR are means over words, placements and fractions. "
                     "With defences, Δ clean vs none is the change of clean top-1 from the same model without a "
                     "defence: a negative value is what the defence costs on clean images.")


_DEFENCE_NOTE = ("Each defence on the same images, words, fractions and placements: clean and attacked top-1, "
                 "mean ASR, and their change in percentage points from the row named under 'compared with': no "
                 "defence (`none`, the run's templates), or for a Defense-Prefix vector `templates:photo`, its own "
                 "single prompt \"a photo of a {}.\" without the learned token (so the change is the token's alone, "
                 "not that of leaving the template average). One ASR-vs-fraction figure per defence is in the "
                 "figures below.")


def _list_report_blocks(per_word: pd.DataFrame, leaderboard: pd.DataFrame, figures: list[Path],
                        run_infos: list[dict], title: str, notes: Sequence[str] = (),
                        sections: Sequence[ReportBlock] = ()) -> list[ReportBlock]:
    """The report's content, in order: the key table (leaderboard) first, then a linked list of the
    sections that follow."""
    blocks = [ReportBlock("h1", title)]
    blocks.extend(ReportBlock("warn", w) for w in list_model_warnings(per_word, run_infos))
    blocks += [ReportBlock("h2", "Leaderboard"), ReportBlock("p", _LEADERBOARD_NOTE)]
    blocks.append(ReportBlock("p", NO_CONDITIONS) if leaderboard.empty
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
