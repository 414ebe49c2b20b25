"""The Stroop test's tables, figures and report, as functions of stroop.csv's rows (no model code).

stroop.csv has one row per (model, stimulus): the run's records. `build_stroop_summary` and
`build_stroop_matrix` are views of them, so `typoattack report` recomputes them from the rows alone.
Each has two forms with the same result: a pure pandas function of in-memory rows (the reference,
and what tests call on small frames) and an out-of-core query over a run's records
(`query_stroop_summary`, `query_stroop_matrices`: SQL aggregates over the view `records` of
`typoattack.analysis.query.RecordSet`). Runs and reports use the query form; stroop.csv itself is
streamed from the records in batches (`write_stroop_csv`).

Orders of first appearance (models, inks, words) come from the records' stored order, numbered
with `row_number() OVER ()`, which DuckDB keeps in insertion order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.figure_style import plain_text, save_figure, truncate_label, plt
from typoattack.analysis.labels import format_percent, format_value, get_model_label, is_missing
from typoattack.analysis.metrics import wilson_interval
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.analysis.report_page import ReportBlock, build_table_block, write_report_pages
from typoattack.analysis.report_sections import list_run_blocks
from typoattack.attack.stroop import IMAGE_BACKGROUND_PREFIX
from typoattack.config.types import get_model_warnings
from typoattack.errors import OutputError
from typoattack.files import write_atomic, write_csv

STROOP_CSV = "stroop.csv"
STROOP_SUMMARY_CSV = "stroop_summary.csv"
STROOP_MATRIX_PNG = "stroop_matrix.png"
STROOP_EXAMPLES_PNG = "stroop_examples.png"
IMAGES_GROUP = "images"

CONDITIONS = ("neutral", "congruent", "incongruent")
STYLE_KEYS = ["font", "background"]
STROOP_COLUMNS = ["model", "pretrained", "ink", "word", "condition", "variant", *STYLE_KEYS, "font_size", "x", "y",
                  "pred", "p_ink", "p_word"]
SUMMARY_KEYS = ["model", "pretrained", *STYLE_KEYS, "condition"]
SUMMARY_COLUMNS = [*SUMMARY_KEYS, "n", "ink_acc", "ink_acc_ci_low", "ink_acc_ci_high",
                   "word_rate", "word_rate_ci_low", "word_rate_ci_high"]
SUMMARY_HEADER = ["model", "pretrained", "font", "background", "condition", "n", "read as ink [95% CI]",
                  "read as word [95% CI]"]

# Layout of plot_stroop_matrix: per model a row of two panels (read as ink, read as word), each
# MATRIX_BASE + MATRIX_CELL * n_words wide and MATRIX_BASE + MATRIX_CELL * n_inks high.
MATRIX_CELL = 0.55
MATRIX_BASE = 1.6
# Layout of plot_stroop_examples: EXAMPLE_CELL inches square per image plus EXAMPLE_TITLE_H.
EXAMPLE_CELL = 1.35
EXAMPLE_TITLE_H = 0.7


def check_stroop_rows(rows: pd.DataFrame) -> None:
    """Raise ValueError when stroop rows lack a column or hold an unknown condition."""
    missing = [c for c in STROOP_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"the Stroop rows lack the column(s) {', '.join(missing)}")
    unknown = set(rows["condition"]) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown Stroop condition(s) {sorted(unknown)}; expected {', '.join(CONDITIONS)}")


def get_background_group(background: str) -> str:
    """The summary's background of a row: its colour '#rrggbb', or 'images' for any photo."""
    return IMAGES_GROUP if background.startswith(IMAGE_BACKGROUND_PREFIX) else background


def build_stroop_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pretrained, font, background, condition); photo backgrounds are pooled
    into one background, `images`.

    `ink_acc` is the share of stimuli predicted as their ink colour, `word_rate` the share
    predicted as the written word (NaN for the neutral condition: its word is no class), each
    with a 95% Wilson interval. In the congruent condition the two are the same number.

    Args:
        rows: stroop.csv (STROOP_COLUMNS).

    Returns:
        SUMMARY_COLUMNS, conditions in the order neutral, congruent, incongruent.
    """
    check_stroop_rows(rows)
    frame = rows.assign(_ink=rows["pred"] == rows["ink"], _word=rows["pred"] == rows["word"],
                        _order=rows["condition"].map(CONDITIONS.index),
                        background=[get_background_group(b) for b in rows["background"]])
    out = [_build_summary_row(keys[:-2], keys[-1], len(g), int(g["_ink"].sum()), int(g["_word"].sum()))
           for keys, g in frame.groupby([*SUMMARY_KEYS[:-1], "_order", "condition"], sort=True, dropna=False)]
    return _finish_summary(out, list(zip(rows["model"], rows["pretrained"])))


def _build_summary_row(keys: Sequence[Any], condition: str, n: int, k_ink: int, k_word: int) -> dict[str, Any]:
    """One row of the summary from the counts of its stimuli (`keys`: SUMMARY_KEYS but the condition)."""
    lo, hi = wilson_interval(k_ink, n)
    row: dict[str, Any] = dict(zip(SUMMARY_KEYS[:-1], keys))
    row.update(condition=condition, n=n, ink_acc=k_ink / n, ink_acc_ci_low=float(lo), ink_acc_ci_high=float(hi))
    if condition == "neutral":
        row.update(word_rate=np.nan, word_rate_ci_low=np.nan, word_rate_ci_high=np.nan)
    else:
        lo, hi = wilson_interval(k_word, n)
        row.update(word_rate=k_word / n, word_rate_ci_low=float(lo), word_rate_ci_high=float(hi))
    return row


def _finish_summary(out: list[dict[str, Any]], models: Sequence[tuple[Any, Any]]) -> pd.DataFrame:
    """The summary of rows `out` (in key order), models in the order of `models` (first appearance)."""
    order = {m: i for i, m in enumerate(dict.fromkeys(models))}
    summary = pd.DataFrame(out, columns=SUMMARY_COLUMNS)
    summary["_m"] = [order[(m, p)] for m, p in zip(summary["model"], summary["pretrained"])]
    return summary.sort_values("_m", kind="stable").drop(columns="_m").reset_index(drop=True)


def build_stroop_matrix(rows: pd.DataFrame, inks: Sequence[str], words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Share of stimuli read as the ink and as the word, per (ink, word), over the given rows.

    Args:
        rows: stroop.csv rows of one model (any fonts, backgrounds and variants).
        inks: Row order (colour names).
        words: Column order (the neutral word, then colour words).

    Returns:
        (as_ink, as_word), float64 [len(inks), len(words)] in [0, 1]; NaN where the pair has no
        rows, and `as_word` NaN in columns whose word is no class (the neutral word).
    """
    as_ink = np.full((len(inks), len(words)), np.nan)
    as_word = np.full_like(as_ink, np.nan)
    classes = set(inks)
    for (ink, word), g in rows.groupby(["ink", "word"], sort=False):
        if ink in inks and word in words:
            i, j = inks.index(ink), words.index(word)
            as_ink[i, j] = float((g["pred"] == ink).mean())
            if word in classes:
                as_word[i, j] = float((g["pred"] == word).mean())
    return as_ink, as_word


def list_inks_and_words(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Ink colours in order of appearance, and words: the neutral word(s) first, then colour words."""
    inks = list(dict.fromkeys(rows["ink"]))
    neutral = list(dict.fromkeys(rows.loc[rows["condition"] == "neutral", "word"]))
    words = neutral + [w for w in dict.fromkeys(rows["word"]) if w not in neutral]
    return inks, words


def plot_stroop_matrix(rows: pd.DataFrame, path: Path) -> None:
    """Heatmaps of ink x written word per model: the share read as the ink (left) and as the word
    (right), values printed in the cells (n/a where the word is no class).

    Layout: per model one row of two panels, MATRIX_BASE + MATRIX_CELL * cells inches each, at DPI.

    Raises:
        ValueError: `rows` is empty or lacks a column.
    """
    check_stroop_rows(rows)
    if rows.empty:
        raise ValueError("plot_stroop_matrix: no Stroop rows; there is nothing to plot")
    inks, words = list_inks_and_words(rows)
    models = list(dict.fromkeys(zip(rows["model"], rows["pretrained"])))
    matrices = [build_stroop_matrix(rows[(rows["model"] == m) & (rows["pretrained"] == p)], inks, words)
                for m, p in models]
    draw_stroop_matrix(models, inks, words, matrices, path)


def draw_stroop_matrix(models: Sequence[tuple[Any, Any]], inks: Sequence[str], words: Sequence[str],
                       matrices: Sequence[tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    """Draw the heatmaps of `plot_stroop_matrix`: per model (model, pretrained) its (as_ink,
    as_word) matrices over `inks` x `words` (`build_stroop_matrix`)."""
    w, h = MATRIX_BASE + MATRIX_CELL * len(words), MATRIX_BASE + MATRIX_CELL * len(inks)
    with plain_text():
        fig, axes = plt.subplots(len(models), 2, figsize=(2 * w, h * len(models) + 0.5), squeeze=False,
                                 layout="constrained")
        for r, ((model, pretrained), matrix) in enumerate(zip(models, matrices)):
            for c, (values, what) in enumerate(zip(matrix, ("ink", "word"))):
                ax = axes[r, c]
                cmap = plt.get_cmap("Greens" if c == 0 else "Reds").with_extremes(bad="#e5e5e5")
                ax.imshow(np.ma.masked_invalid(values), vmin=0, vmax=1, cmap=cmap)
                for i in range(len(inks)):
                    for j in range(len(words)):
                        v = values[i, j]
                        ax.text(j, i, "n/a" if np.isnan(v) else f"{100 * v:.0f}", ha="center", va="center",
                                fontsize=7, color="white" if not np.isnan(v) and v > 0.6 else "black")
                ax.set_xticks(range(len(words)), [truncate_label(x, 10) for x in words], rotation=45, ha="right")
                ax.set_yticks(range(len(inks)), [truncate_label(x, 10) for x in inks])
                ax.set_xlabel("written word")
                ax.set_ylabel("ink colour")
                ax.set_title(f"{truncate_label(get_model_label(model, pretrained), 40)}: % read as the {what}")
        fig.suptitle("Stroop test: share of stimuli classified as the ink colour vs as the written word")
        save_figure(fig, path)


def plot_stroop_examples(examples: list[dict[str, Any]], path: Path) -> None:
    """A grid of stimuli, rows by ink and columns by word, each framed and captioned by what it
    was read as (green: the ink, red: the word, grey: another colour).

    The stimuli are tiled into one mosaic (one axes), which keeps a 64-image grid fast to draw.
    Layout: EXAMPLE_CELL inches per stimulus plus EXAMPLE_TITLE_H, at DPI.

    Args:
        examples: Dicts with `ink`, `word`, `image` (uint8 [H, W, 3], all the same size) and
            `pred` (a colour name).
        path: The PNG file to write.

    Raises:
        ValueError: No examples, an example lacks a key, or the images differ in size.
    """
    if not examples:
        raise ValueError("plot_stroop_examples: no examples given; there is nothing to plot")
    for ex in examples:
        missing = [k for k in ("ink", "word", "image", "pred") if k not in ex]
        if missing:
            raise ValueError(f"plot_stroop_examples: an example lacks {', '.join(missing)}")
    shapes = {np.asarray(ex["image"]).shape for ex in examples}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"plot_stroop_examples: the images must be uint8 [H, W, 3] of one size, got {sorted(shapes)}")
    H, W, _ = next(iter(shapes))
    inks = list(dict.fromkeys(ex["ink"] for ex in examples))
    words = list(dict.fromkeys(ex["word"] for ex in examples))
    frame, gap, cap = max(2, H // 40), max(4, H // 16), max(12, H // 6)
    ch, cw = H + 2 * frame + cap, W + 2 * frame + gap
    mosaic = np.full((len(inks) * ch, len(words) * cw, 3), 255, np.uint8)
    colors = {"ink": (30, 132, 73), "word": (192, 57, 43), "other": (127, 140, 141)}
    captions = []
    for ex in examples:
        r, c = inks.index(ex["ink"]), words.index(ex["word"])
        read = "ink" if ex["pred"] == ex["ink"] else "word" if ex["pred"] == ex["word"] else "other"
        y, x = r * ch, c * cw
        mosaic[y:y + H + 2 * frame, x:x + W + 2 * frame] = colors[read]
        mosaic[y + frame:y + frame + H, x + frame:x + frame + W] = np.asarray(ex["image"], np.uint8)
        captions.append((x + frame + W / 2, y + 2 * frame + H + cap / 2, f"→ {truncate_label(str(ex['pred']), 12)}",
                         np.asarray(colors[read]) / 255))
    with plain_text():
        fig, ax = plt.subplots(figsize=(EXAMPLE_CELL * len(words), EXAMPLE_CELL * len(inks) + EXAMPLE_TITLE_H),
                               layout="constrained")
        ax.imshow(mosaic, interpolation="antialiased")
        for x, y, text, color in captions:
            ax.text(x, y, text, ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks([c * cw + frame + W / 2 for c in range(len(words))], [truncate_label(w, 12) for w in words])
        ax.xaxis.tick_top()
        ax.set_yticks([r * ch + frame + H / 2 for r in range(len(inks))], [f"ink {truncate_label(i, 10)}" for i in inks])
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        fig.suptitle("Stroop stimuli and predictions (green: read as the ink; red: as the word; grey: neither)",
                     fontsize=9)
        save_figure(fig, path, palette=True)


def build_stroop_summary_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the summary: percentages with one decimal and the interval; the
    font and background columns only when they take more than one value."""
    styles = [k for k in STYLE_KEYS if summary[k].nunique(dropna=False) > 1]

    def share(r: dict[str, Any], key: str) -> str:
        if is_missing(r[key]):
            return "n/a"
        return f"{format_percent(r[key])} [{100 * r[key + '_ci_low']:.1f}–{100 * r[key + '_ci_high']:.1f}]"

    header = [h for h in SUMMARY_HEADER if h not in STYLE_KEYS or h in styles]
    cells = [[str(r["model"]), "" if is_missing(r["pretrained"]) else str(r["pretrained"]),
              *(format_value(r[k]) for k in styles), str(r["condition"]), str(r["n"]), share(r, "ink_acc"),
              share(r, "word_rate")]
             for r in summary.to_dict("records")]
    return header, cells


STROOP_NOTE = ("Each stimulus is one word drawn in one ink colour and classified zero-shot among the colour names. "
               "Read as ink: the prediction is the ink colour (the right answer); read as word: the prediction is "
               "the written colour word. Neutral words name no colour (read as word: n/a); in the congruent "
               "condition word and ink agree, so the two shares are equal. A model that reads text rather than "
               "colour has a low ink share and a high word share in the incongruent condition. Intervals: 95% "
               "Wilson intervals over the stimuli of the row (renderings of one (ink, word) pair are not "
               "independent, so they are optimistic when --variants > 1).")


def write_stroop_tables(rows: RecordSet | pd.DataFrame, out_dir: Path, where: str = "true") -> pd.DataFrame:
    """Write stroop.csv's summary, stroop_summary.csv, into `out_dir` (a query over a RecordSet's
    records matching `where`, or the pandas reference over in-memory rows); return it."""
    summary = build_stroop_summary(rows) if isinstance(rows, pd.DataFrame) else query_stroop_summary(rows, where)
    write_csv(summary, Path(out_dir) / STROOP_SUMMARY_CSV)
    return summary


def write_stroop_report(out_dir: Path, summary: pd.DataFrame, figures: Sequence[Path], run_infos: list[dict],
                        stem: str = "report", title: str = "typoattack Stroop test",
                        notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write `{stem}.md` and a self-contained `{stem}.html` (figures embedded) into `out_dir`:
    model warnings, the summary table with its reading note, the figures and one section per run.

    Raises:
        OutputError: A figure file does not exist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in figures:
        if not Path(f).is_file():
            raise OutputError(f"figure {f} does not exist")
    models = [(str(m), None if is_missing(p) or p == "" else str(p))
              for m, p in dict.fromkeys(zip(summary["model"], summary["pretrained"]))]
    blocks = [ReportBlock("h1", title)] + [ReportBlock("warn", w) for w in get_model_warnings(models)]
    blocks += [ReportBlock("p", note) for note in notes]
    blocks += [ReportBlock("h2", "Stroop test"), ReportBlock("p", STROOP_NOTE),
               build_table_block(*build_stroop_summary_cells(summary), "stroop")]
    blocks += [ReportBlock("figure", path=Path(f)) for f in figures]
    if run_infos:
        blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(run_infos, start=1):
        blocks += list_run_blocks(info, index)
    return write_report_pages(blocks, out_dir, stem, title)


def read_stroop_csv(path: Path) -> pd.DataFrame:
    """Read stroop.csv: text columns as written (a word such as 'NA' stays text), empty
    probabilities as NaN."""
    return pd.read_csv(path, keep_default_na=False, na_values={"p_ink": [""], "p_word": [""]},
                       dtype={"model": str, "pretrained": str, "ink": str, "word": str, "condition": str,
                              "font": str, "background": str, "pred": str})


# --------------------------------------------------------------------------------------------
# The same tables as out-of-core queries over a RecordSet (a run's records, or several runs').


def _names(columns: Sequence[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)


def _numbered_sql(columns: Sequence[str], where: str) -> str:
    """`columns` of the records matching `where` with `_ord`, their position in the stored order
    (an empty OVER () numbers rows in insertion order)."""
    return f"SELECT {_names(columns)}, row_number() OVER () AS _ord FROM records WHERE {where}"


def _param(value: Any) -> Any:
    """A query parameter: None for a missing value (which `=` then matches nowhere, as pandas' ==)."""
    return None if is_missing(value) else value


def check_stroop_records(records: RecordSet, where: str = "true") -> None:
    """`check_stroop_rows` of the records matching `where`.

    Raises:
        ValueError: A column is missing or a condition is unknown.
    """
    missing = [c for c in STROOP_COLUMNS if not records.has(c)]
    if missing:
        raise ValueError(f"the Stroop rows lack the column(s) {', '.join(missing)}")
    known = ", ".join(quote_literal(c) for c in CONDITIONS)
    unknown = records.frame(f"SELECT DISTINCT condition FROM records WHERE ({where}) AND (condition IS NULL OR "
                            f"condition NOT IN ({known}))")["condition"]
    if len(unknown):
        raise ValueError(f"unknown Stroop condition(s) {sorted(unknown, key=str)}; expected {', '.join(CONDITIONS)}")


def query_stroop_summary(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """`build_stroop_summary` of the records matching `where`: one SQL aggregate per (model,
    pretrained, font, background group, condition), finished in pandas."""
    check_stroop_records(records, where)
    background = (f"CASE WHEN starts_with(background, {quote_literal(IMAGE_BACKGROUND_PREFIX)}) "
                  f"THEN {quote_literal(IMAGES_GROUP)} ELSE background END")
    source = _numbered_sql(["model", "pretrained", "font", "background", "condition", "pred", "ink", "word"], where)
    counts = records.frame(
        f"SELECT model, pretrained, font, {background} AS background, condition, count(*) AS n, "
        "count(*) FILTER (WHERE pred = ink) AS k_ink, count(*) FILTER (WHERE pred = word) AS k_word, "
        f"min(_ord) AS _first FROM ({source}) GROUP BY ALL")
    counts["_order"] = counts["condition"].map(CONDITIONS.index)
    keys = [*SUMMARY_KEYS[:-1], "_order", "condition"]
    counts = counts.sort_values(keys, kind="stable", na_position="last")
    out = [_build_summary_row([r[k] for k in SUMMARY_KEYS[:-1]], r["condition"], int(r["n"]), int(r["k_ink"]),
                              int(r["k_word"])) for r in counts.to_dict("records")]
    first = counts.sort_values("_first", kind="stable")
    return _finish_summary(out, list(zip(first["model"], first["pretrained"])))


def query_stroop_cells(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """Per (model, pretrained, ink, word, neutral or not) of the records matching `where`: the
    stimuli `n`, those read as the ink `k_ink` and as the word `k_word`, and `_first`, the position
    of the first record. What the matrix figure is drawn from (`query_stroop_matrices`)."""
    source = _numbered_sql(["model", "pretrained", "ink", "word", "condition", "pred"], where)
    counts = records.frame(
        "SELECT model, pretrained, ink, word, condition = 'neutral' AS neutral, count(*) AS n, "
        "count(*) FILTER (WHERE pred = ink) AS k_ink, count(*) FILTER (WHERE pred = word) AS k_word, "
        f"min(_ord) AS _first FROM ({source}) GROUP BY ALL ORDER BY _first")
    for col in ("n", "k_ink", "k_word", "_first"):
        counts[col] = counts[col].to_numpy(dtype=np.int64)
    return counts


def list_cell_inks_and_words(cells: pd.DataFrame) -> tuple[list[str], list[str]]:
    """`list_inks_and_words` from `query_stroop_cells` (rows in order of first appearance)."""
    inks = list(dict.fromkeys(cells["ink"]))
    neutral = list(dict.fromkeys(cells.loc[cells["neutral"].fillna(False).astype(bool), "word"]))
    words = neutral + [w for w in dict.fromkeys(cells["word"]) if w not in neutral]
    return inks, words


def query_stroop_matrices(records: RecordSet, where: str = "true", cells: pd.DataFrame | None = None
                          ) -> tuple[list[tuple[Any, Any]], list[str], list[str], list[tuple[np.ndarray, np.ndarray]]]:
    """The matrix figure's data over the records matching `where` by one SQL aggregate: the models
    (model, pretrained) and the inks and words in order of first appearance (`list_inks_and_words`),
    and per model `build_stroop_matrix` of its records.

    Args:
        records: The records.
        where: A SQL condition on their columns.
        cells: `query_stroop_cells(records, where)` when already computed.
    """
    cells = query_stroop_cells(records, where) if cells is None else cells
    inks, words = list_cell_inks_and_words(cells)
    models = list(dict.fromkeys(zip(cells["model"], cells["pretrained"])))
    known = cells[cells["ink"].notna() & cells["word"].notna()]
    totals = known.groupby(["model", "pretrained", "ink", "word"], sort=False)[["n", "k_ink", "k_word"]].sum()
    classes, row_of, column_of = set(inks), {v: i for i, v in enumerate(inks)}, {v: j for j, v in enumerate(words)}
    matrices = {m: (np.full((len(inks), len(words)), np.nan), np.full((len(inks), len(words)), np.nan)) for m in models}
    for (model, pretrained, ink, word), (n, k_ink, k_word) in zip(totals.index, totals.to_numpy()):
        if ink in row_of and word in column_of and (model, pretrained) in matrices:
            as_ink, as_word = matrices[model, pretrained]
            i, j = row_of[ink], column_of[word]
            as_ink[i, j] = int(k_ink) / int(n)
            if word in classes:
                as_word[i, j] = int(k_word) / int(n)
    return models, inks, words, [matrices[m] for m in models]


def plot_stroop_matrix_records(records: RecordSet, path: Path, where: str = "true") -> None:
    """`plot_stroop_matrix` of the records matching `where`, drawn from SQL aggregates.

    Raises:
        ValueError: No record matches, or a column is missing.
    """
    check_stroop_records(records, where)
    if records.count(where) == 0:
        raise ValueError("plot_stroop_matrix: no Stroop rows; there is nothing to plot")
    draw_stroop_matrix(*query_stroop_matrices(records, where), path)


def query_stroop_example_rows(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """The rows `collect_stroop_examples` draws, by filtered queries instead of all rows: the first
    record matching `where`, then the variant-0 records of its model, font and background (each
    query stops or filters at the scan). `collect_stroop_examples` gives the same examples from
    them as from all the rows.

    Returns:
        STROOP_COLUMNS rows in the records' order (the first record alone when no other matches;
        empty when none does).
    """
    columns = _names(STROOP_COLUMNS)
    first = records.frame(f"SELECT {columns} FROM records WHERE {where} LIMIT 1")
    if first.empty:
        return first
    keys = ["model", "pretrained", "font", "background"]
    params = {k: _param(first[k].iloc[0]) for k in keys}
    same = " AND ".join(f"{quote_name(k)} = ${k}" for k in keys)
    mine = records.frame(f"SELECT {columns} FROM records WHERE ({where}) AND {same} AND variant = 0", params)
    return mine if not mine.empty else first


def write_stroop_csv(records: RecordSet, path: Path, where: str = "true", decimals: int = 6,
                     batch_rows: int | None = None) -> int:
    """Write the records matching `where` as stroop.csv, streamed: batches of rows in the records'
    stored order appended to one file, written atomically. The bytes equal `files.write_csv` of
    the rows loaded whole (floats rounded to `decimals` places, "\n" line ends, one header).

    Returns:
        The rows written.
    """
    sql = f"SELECT {_names(STROOP_COLUMNS)} FROM records WHERE {where}"
    written = 0

    def write(tmp: Path) -> None:
        nonlocal written
        with open(tmp, "w", encoding="utf-8") as f:
            header = True
            batches = records.iter_batches(sql) if batch_rows is None else records.iter_batches(sql, rows=batch_rows)
            for batch in batches:
                f.write(batch.round(decimals).to_csv(index=False, header=header, lineterminator="\n"))
                header, written = False, written + len(batch)
            if header:
                f.write(pd.DataFrame(columns=STROOP_COLUMNS).to_csv(index=False, lineterminator="\n"))

    write_atomic(Path(path), write)
    return written
