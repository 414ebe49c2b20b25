"""Header and string cells of the eval tables: per-word results (and per_word.md), the leaderboard,
the ranking of words by ASR and the defences (no model code). The report page
(`typoattack.analysis.report_page`), per_word.md and the terminal render the same cells.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.labels import format_percent, format_style, is_missing, list_varying_styles
from typoattack.analysis.report_page import format_markdown_table
from typoattack.records import NO_DEFENCE


PER_WORD_HEADER = ["model", "pretrained", "word", "target", "fraction", "placement", "n", "pixel cover",
                   "clean top-1", "attacked top-1", "ASR [95% CI]", "already target", "changed away",
                   "neither", "flip rate"]
_PER_WORD_PERCENT = ["pixel_cover_mean", "clean_top1", "attacked_top1", "asr", "changed_to",
                     "already_target", "changed_away", "neither", "flip_rate"]


def build_per_word_cells(per_word: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the per-word table (percentages with one decimal, the word as
    `code`)."""
    cells = []
    for r in per_word.to_dict("records"):
        f = {k: ("n/a" if pd.isna(r[k]) else f"{100 * r[k]:.1f}%") for k in _PER_WORD_PERCENT}
        ci = f"{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}"
        cells.append([
            str(r["model"]), str(r["pretrained"]), f"`{r['word']}`", format_target(r),
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


def format_target(row: Any) -> str:
    """A per-word row's target: `name (index)`; the pseudo-word `random-class`'s by its name alone."""
    index = int(row["target_index"])
    return str(row["target_name"]) if index < 0 else f"{row['target_name']} ({index})"


def format_per_word_markdown(per_word: pd.DataFrame) -> str:
    """Render the per-word table as a Markdown table with percentages."""
    return format_markdown_table(*build_per_word_cells(per_word))


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
                      f"`{r['word']}`", format_target(r), str(r["n_images"]),
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
