"""Figures from the per-word table and the records (no model code): figures only; the leaderboard
is in `typoattack.analysis.metrics`, the report in `typoattack.analysis.report`.

Every function here is a pure function of DataFrames (the per-word table of
`typoattack.analysis.metrics.build_per_word_table` and, for the confusion heatmap, the per-image record
table) plus the path it writes to. Nothing here imports torch, open_clip or Typer.

Conditions. A row of the per-word table is one condition: (model, pretrained, word, fraction,
placement). The table MAY also carry the style columns `font, fill, outline, outline_width,
opacity` (`STYLE_COLUMNS`); those present are treated as part of the condition. A style column
whose value varies across the table splits panels (plot_asr_vs_fraction) and rows of panels
(plot_asr_by_word), and is named in titles and labels; a style column with one value (or an absent
one) is ignored.

Empty input. Every plot function raises ValueError with a message naming the function and the
reason when it is given nothing to plot (an empty per-word table, no attacked record of the word,
no examples).

Large vocabularies. With more than `MANY_WORDS` (word, target) pairs, per-word views switch to
views whose size does not grow with the vocabulary: plot_asr_vs_fraction draws the mean, median
and 10–90th percentile over words instead of one line per word, and plot_asr_by_word draws the
ranked view of plot_asr_ranked. plot_asr_ranked, plot_asr_distribution and plot_asr_vs_word_length
suit any vocabulary.

Text. Strings are drawn with matplotlib's mathtext disabled, so a word such as `$$$` is drawn
literally. Figures are written at `DPI` dots per inch with the figure sizes described in each
function's docstring (no tight bounding box: the PNG is exactly figure size x DPI).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from typoattack.analysis.labels import (  # noqa: E402
    format_style, get_model_label, iter_groups, list_varying_styles,
)
# The layout constants are re-exported: figure sizes are documented in terms of plots.NAME.
from typoattack.analysis.figure_style import (  # noqa: E402, F401
    RECORD_REQUIRED, PER_WORD_REQUIRED, ACC_BASE_W, ACC_H, ACC_LEGEND_MAX_COLS, ACC_MIN_W, ACC_W_PER_BAR,
    ASR_VS_FRACTION_MAX_COLS, BAR_LEGEND_MAX_COLS, BAR_PANEL_BASE_W, BAR_PANEL_H, BAR_PANEL_MIN_W, BAR_W_PER_BAR,
    BAR_W_PER_WORD_MIN, CLASS_NAME_MAX, CONF_BASE_H, CONF_BASE_W, CONF_CELL, DPI, EX_H, EX_TITLE_H, EX_W,
    LEGEND_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, RANK_BAR_H, RANK_BASE_H, RANK_LABEL_MAX, RANK_MAX_COLS,
    RANK_PANEL_W, TITLE_H, check_table, get_colors, plain_text, select_equal, save_figure, truncate_label, format_word_label,
)
from typoattack.analysis.vocab_plots import (  # noqa: E402
    plot_asr_distribution, plot_asr_ranked, plot_asr_vs_word_length,
)
from typoattack.analysis.metrics import (  # noqa: E402
    MANY_WORDS, count_words,
)
from typoattack.constants import CLEAN_WORD  # noqa: E402

__all__ = [
    "DPI",
    "plot_accuracy",
    "plot_asr_by_word",
    "plot_asr_distribution",
    "plot_asr_ranked",
    "plot_asr_vs_fraction",
    "plot_asr_vs_word_length",
    "plot_confusion",
    "plot_examples",
]


# --------------------------------------------------------------------------------------------
# Figures


def plot_asr_vs_fraction(per_word: pd.DataFrame, path: Path) -> None:
    """Plot attack success rate against the measured pixel cover, one line per word.

    One panel per (model, pretrained, placement) and, when style columns vary, per style (named in
    the panel title). In each panel every word is a line with a marker at each fraction: x is the
    measured `pixel_cover_mean` (%), y the ASR (%), with a shaded 95% Wilson band
    (asr_ci_low..asr_ci_high); a word measured at one fraction only gets an error bar instead of a
    band. Words keep their colour across panels; the legend is shared below the panels. The y axis
    is 0–100% on every panel.

    With more than MANY_WORDS (word, target) pairs, each panel instead shows, per fraction, the
    mean ASR over words (line), the median (dashed) and the 10–90th percentile of words (shaded),
    at the mean measured cover; the legend then has those three entries.

    Layout: min(n_panels, ASR_VS_FRACTION_MAX_COLS) columns of PANEL_W x PANEL_H inches, plus
    TITLE_H and LEGEND_ROW_H per legend row (LEGEND_MAX_COLS words per row; one row with more than
    MANY_WORDS words), at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    check_table(per_word, "plot_asr_vs_fraction", PER_WORD_REQUIRED["plot_asr_vs_fraction"])
    styles = list_varying_styles(per_word)
    panel_keys = ["model", "pretrained", "placement", *styles]
    panels = list(iter_groups(per_word, panel_keys))
    words = list(iter_groups(per_word, ["word", "target_name"]))
    color = {(k["word"], k["target_name"]): c for (k, _), c in zip(words, get_colors(len(words)))}

    many = len(words) > MANY_WORDS
    ncols = min(len(panels), ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = 1 if many else math.ceil(len(words) / LEGEND_MAX_COLS)
    size = (PANEL_W * ncols, PANEL_H * nrows + TITLE_H + LEGEND_ROW_H * legend_rows)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, sharey=True, squeeze=False, layout="constrained")
        handles: dict[str, Any] = {}
        x_max = 100 * float(per_word["pixel_cover_mean"].max())
        for ax, (keys, rows) in zip(axes.flat, panels):
            if many:
                _draw_word_summary(ax, rows, handles)
            else:
                _draw_word_lines(ax, rows, color, handles)
            title = f"{get_model_label(keys['model'], keys['pretrained'])} — {keys['placement']}"
            if styles:
                title += f"\n{format_style(keys, styles)}"
            ax.set_title(title)
            ax.set_xlabel("measured pixel cover (%)")
            ax.set_ylabel("attack success rate (%)")
            ax.set_ylim(0, 100)
            ax.set_xlim(0, max(x_max * 1.08, 1.0))
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelleft=True)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        if many:
            fig.suptitle(f"Typographic attack success vs measured pixel cover, {len(words)} words\n"
                         "line: mean; dashed: median; shaded: 10–90th percentile of words", fontsize=10)
        else:
            fig.suptitle("Typographic attack success vs measured pixel cover (shaded: 95% Wilson interval)")
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncols=min(len(handles), LEGEND_MAX_COLS),
                   title=f"{len(words)} words" if many else "word → target class", frameon=False)
        save_figure(fig, path)


def _draw_word_lines(ax: Any, rows: pd.DataFrame, color: dict[tuple[Any, Any], Any], handles: dict[str, Any]) -> None:
    """One line per word of a panel: ASR (%) against measured cover (%), with its 95% band (or
    error bar at a single fraction); adds each word's line to `handles` for the shared legend."""
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    for wkeys, wrows in iter_groups(rows, ["word", "target_name"]):
        wrows = wrows.sort_values(["fraction", "pixel_cover_mean"])
        x = 100 * wrows["pixel_cover_mean"].to_numpy(dtype=float)
        y = 100 * wrows["asr"].to_numpy(dtype=float)
        lo = 100 * wrows["asr_ci_low"].to_numpy(dtype=float)
        hi = 100 * wrows["asr_ci_high"].to_numpy(dtype=float)
        c = color[(wkeys["word"], wkeys["target_name"])]
        label = format_word_label(wkeys["word"], wkeys["target_name"])
        marker = markers[list(color).index((wkeys["word"], wkeys["target_name"])) // 10 % len(markers)]
        (line,) = ax.plot(x, y, marker=marker, color=c, lw=1.6, ms=5, label=label)
        if len(x) > 1:
            ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
        else:
            ax.errorbar(x, y, yerr=np.clip([y - lo, hi - y], 0, None), color=c, capsize=3, lw=1, fmt="none")
        handles.setdefault(label, line)


def _draw_word_summary(ax: Any, rows: pd.DataFrame, handles: dict[str, Any]) -> None:
    """Per fraction of a panel: mean ASR (%) over words, the median and the 10–90th percentile
    band, at the mean measured cover (%); adds the three entries to `handles`."""
    by_fraction = rows.groupby("fraction", sort=True)
    x = 100 * by_fraction["pixel_cover_mean"].mean().to_numpy(dtype=float)
    asr = by_fraction["asr"]
    mean = 100 * asr.mean().to_numpy(dtype=float)
    median = 100 * asr.median().to_numpy(dtype=float)
    lo = 100 * asr.quantile(0.1).to_numpy(dtype=float)
    hi = 100 * asr.quantile(0.9).to_numpy(dtype=float)
    color = "#d62728"
    (line,) = ax.plot(x, mean, marker="o", color=color, lw=1.8, ms=5)
    (med,) = ax.plot(x, median, marker="s", color="#7f0000", ls="--", lw=1.2, ms=4)
    if len(x) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    else:
        ax.errorbar(x, median, yerr=np.clip([median - lo, hi - median], 0, None), color=color, capsize=4, lw=1.2,
                    fmt="none")
    handles.setdefault("mean over words", line)
    handles.setdefault("median", med)
    handles.setdefault("10–90th percentile of words", Patch(color=color, alpha=0.18))


def plot_asr_by_word(per_word: pd.DataFrame, path: Path) -> None:
    """Plot grouped bars of ASR and flip rate per word, models side by side.

    One row of panels per (fraction, placement) and, when style columns vary, per style; the left
    panel of a row shows the ASR (%) with 95% Wilson error bars, the right one the flip rate (%)
    (no bar where the flip rate is undefined: no clean-correct image). On the x axis are the words
    (with their target class); within a word, one bar per model/pretrained.

    With more than MANY_WORDS (word, target) pairs, this draws `plot_asr_ranked` instead (one bar
    per word would not be readable).

    Layout: two panels per row, each max(BAR_PANEL_MIN_W, BAR_PANEL_BASE_W + n_words *
    max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_models)) x BAR_PANEL_H inches, plus TITLE_H and LEGEND_ROW_H * (1 +
    ceil(n_models / BAR_LEGEND_MAX_COLS)) for the model legend below the panels, at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    check_table(per_word, "plot_asr_by_word", PER_WORD_REQUIRED["plot_asr_by_word"])
    if count_words(per_word) > MANY_WORDS:
        plot_asr_ranked(per_word, path)
        return
    styles = list_varying_styles(per_word)
    row_groups = list(iter_groups(per_word, ["fraction", "placement", *styles]))
    models = [k for k, _ in iter_groups(per_word, ["model", "pretrained"])]
    words = [k for k, _ in iter_groups(per_word, ["word", "target_name"])]
    n_m, n_w = len(models), len(words)
    panel_w = max(BAR_PANEL_MIN_W, BAR_PANEL_BASE_W + n_w * max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_m))
    legend_rows = 1 + math.ceil(n_m / BAR_LEGEND_MAX_COLS)  # legend title + entries
    size = (2 * panel_w, BAR_PANEL_H * len(row_groups) + TITLE_H + LEGEND_ROW_H * legend_rows)
    x = np.arange(n_w)
    colors = get_colors(n_m)
    rotate = n_w > 4
    sep = " " if rotate else "\n"  # rotated labels read best on one line
    tick_labels = [f"{truncate_label(str(w['word']), 14)}{sep}→ {truncate_label(str(w['target_name']), 16)}" for w in words]
    with plain_text():
        fig, axes = plt.subplots(len(row_groups), 2, figsize=size, squeeze=False, sharey=True, layout="constrained")
        for r, (keys, rows) in enumerate(row_groups):
            _draw_model_bars(axes[r], rows, models, words, colors)
            condition = f"fraction {keys['fraction']:g}, {keys['placement']}"
            if styles:
                condition += f", {format_style(keys, styles)}"
            for c, (ax, metric) in enumerate(zip(axes[r], ("attack success rate", "flip rate"))):
                ax.set_title(f"{metric} — {condition}" + (" (whiskers: 95% CI)" if c == 0 else ""))
                ax.set_ylabel(f"{metric} (%)")
                ax.set_xlabel("word → target class")
                ax.set_xticks(x, tick_labels, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                              rotation_mode="anchor" if rotate else "default")
                ax.set_ylim(0, 100)
                ax.tick_params(labelleft=True)
                ax.grid(True, axis="y", alpha=0.3)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), BAR_LEGEND_MAX_COLS), title="model", frameon=False)
        fig.suptitle("Attack success rate and flip rate per word (flip rate n/a: no clean-correct image)")
        save_figure(fig, path)


def _draw_model_bars(axes_row: Sequence[Any], rows: pd.DataFrame, models: list[dict[str, Any]],
                     words: list[dict[str, Any]], colors: list[Any]) -> None:
    """Grouped bars of one row: per word, one bar per model of ASR (left, with 95% CI whiskers)
    and flip rate (right, `n/a` where undefined)."""
    n_m, x = len(models), np.arange(len(words))
    width = 0.8 / n_m
    for m_index, mk in enumerate(models):
        mrows = rows[(rows["model"] == mk["model"]) & select_equal(rows["pretrained"], mk["pretrained"])]
        by_word = {(k["word"], k["target_name"]): g.iloc[0] for k, g in iter_groups(mrows, ["word", "target_name"])}
        vals = [by_word.get((w["word"], w["target_name"])) for w in words]
        asr = np.array([np.nan if v is None else 100 * v["asr"] for v in vals], dtype=float)
        lo = np.array([np.nan if v is None else 100 * v["asr_ci_low"] for v in vals], dtype=float)
        hi = np.array([np.nan if v is None else 100 * v["asr_ci_high"] for v in vals], dtype=float)
        flip = np.array([np.nan if v is None else 100 * v["flip_rate"] for v in vals], dtype=float)
        offset = (m_index - (n_m - 1) / 2) * width
        label = get_model_label(mk["model"], mk["pretrained"])
        axes_row[0].bar(x + offset, asr, width, color=colors[m_index], label=label,
                        yerr=np.clip(np.nan_to_num([asr - lo, hi - asr]), 0, None), capsize=2,
                        error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
        axes_row[1].bar(x + offset, np.nan_to_num(flip), width, color=colors[m_index], label=label)
        for xi in np.flatnonzero(np.isnan(flip) & ~np.isnan(asr)):
            axes_row[1].text(x[xi] + offset, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)


def plot_accuracy(per_word: pd.DataFrame, path: Path) -> None:
    """Plot clean vs attacked top-1 accuracy per model, with value labels.

    Per model/pretrained (x axis) the bars are: clean top-1; attacked top-1 averaged over all that
    model's conditions (words, fractions, placements, styles); and attacked top-1 averaged over the
    conditions at each fraction. Clean top-1 is the mean of `clean_top1` over the model's rows
    (the same value on every row of a model). Each bar is labelled with its value (%).

    Layout: max(ACC_MIN_W, ACC_BASE_W + ACC_W_PER_BAR * n_models * n_series) x ACC_H inches at DPI,
    where n_series = 2 + the number of fractions.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    check_table(per_word, "plot_accuracy", PER_WORD_REQUIRED["plot_accuracy"])
    fractions = sorted(per_word["fraction"].unique())
    models = list(iter_groups(per_word, ["model", "pretrained"]))
    series = ["clean", "attacked (all conditions)"] + [f"attacked @ fraction {f:g}" for f in fractions]
    values = np.full((len(series), len(models)), np.nan)
    for m, (_, rows) in enumerate(models):
        values[0, m] = rows["clean_top1"].mean()
        values[1, m] = rows["attacked_top1"].mean()
        for f_index, f in enumerate(fractions):
            at = rows[rows["fraction"] == f]
            if not at.empty:
                values[2 + f_index, m] = at["attacked_top1"].mean()
    values *= 100
    n_s, n_m = len(series), len(models)
    size = (max(ACC_MIN_W, ACC_BASE_W + ACC_W_PER_BAR * n_m * n_s), ACC_H)
    width = 0.8 / n_s
    x = np.arange(n_m)
    oranges = plt.get_cmap("Oranges")
    colors = ["#2b7bba", "#d62728"] + [oranges(0.35 + 0.5 * i / max(len(fractions) - 1, 1)) for i in range(len(fractions))]
    with plain_text():
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        for s in range(n_s):
            bars = ax.bar(x + (s - (n_s - 1) / 2) * width, values[s], width, label=series[s], color=colors[s],
                          edgecolor="white", linewidth=0.5)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in values[s]], fontsize=7, padding=2)
        ax.set_xticks(x, [get_model_label(k["model"], k["pretrained"]) for k, _ in models],
                      rotation=20 if n_m > 3 else 0, ha="right" if n_m > 3 else "center")
        ax.set_xlabel("model / pretrained weights")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(0, 110)
        ax.set_yticks(np.arange(0, 101, 20))
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title("Zero-shot top-1 accuracy: clean vs attacked images\n"
                     "(attacked: mean over words and placements, all fractions or one)")
        fig.legend(loc="outside lower center", ncols=min(n_s, ACC_LEGEND_MAX_COLS), title="images", frameon=False)
        save_figure(fig, path)


def plot_confusion(records: pd.DataFrame, word: str, class_names: Sequence[str], path: Path, top_n: int = 15) -> None:
    """Plot a heatmap of the most frequent (true class → attacked prediction) cells for one word.

    Uses the attacked records of `word`, pooled over fractions, placements and styles. When the
    records hold several models, only the first (sorted by model, pretrained) is used, since pooling
    different classifiers would mix their confusions; the title names the model and says so.
    Columns are the `top_n` most frequent predicted classes (by count); rows are the `top_n` true
    classes with the most records in those columns (ties: the largest single cell, then class
    index). Cells are annotated with their counts (empty cells blank); tick labels are class names
    cut to CLASS_NAME_MAX characters; the word's target class is drawn in bold red.

    Layout: (CONF_BASE_W + CONF_CELL * n_cols) x (CONF_BASE_H + CONF_CELL * n_rows) inches at DPI,
    where n_cols/n_rows are the numbers of classes shown (at most `top_n`).

    Args:
        records: The per-image record table (RECORD_COLUMNS).
        word: The attack word.
        class_names: Class names indexed by class index.
        path: The PNG file to write.
        top_n: The most rows and columns shown.

    Raises:
        ValueError: `top_n` < 1, `records` lacks a needed column, or holds no attacked record of `word`.
    """
    if top_n < 1:
        raise ValueError(f"plot_confusion: top_n must be at least 1, got {top_n}")
    rows, models = _select_confusion_rows(records, word)
    first = models[0]
    target = int(rows["target_index"].iloc[0]) if "target_index" in rows.columns else None
    matrix = _build_confusion_matrix(rows, top_n)
    data = matrix.to_numpy(dtype=float)

    n_r, n_c = data.shape
    size = (CONF_BASE_W + CONF_CELL * n_c, CONF_BASE_H + CONF_CELL * n_r)
    label = get_model_label(first["model"], first["pretrained"])
    scope = f"model {label}" + (f" (first of {len(models)} models)" if len(models) > 1 else "")
    with plain_text():
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        im = ax.imshow(np.where(data > 0, data, np.nan), cmap="Blues", vmin=0, vmax=max(data.max(), 1), aspect="auto")
        ax.set_facecolor("#f7f7f7")
        vmax = max(data.max(), 1)
        for i in range(n_r):
            for j in range(n_c):
                if data[i, j] > 0:
                    ax.text(j, i, f"{int(data[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > 0.6 * vmax else "black")
        ax.set_xticks(np.arange(n_c), [truncate_label(str(class_names[int(c)])) for c in matrix.columns],
                      rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(n_r), [truncate_label(str(class_names[int(r)])) for r in matrix.index])
        for tick, c in zip(ax.get_xticklabels(), matrix.columns):
            if target is not None and int(c) == target:
                tick.set_color("#c0392b")
                tick.set_fontweight("bold")
        ax.set_xlabel("prediction on the attacked image (red: target class)")
        ax.set_ylabel("true class")
        ax.set_title(f"Confusions for “{word}” → {class_names[target] if target is not None else '?'}\n"
                     f"{scope}; all fractions and placements pooled; {len(rows)} attacked images\n"
                     f"top {n_r} true x top {n_c} predicted classes", fontsize=9)
        cbar = fig.colorbar(im, ax=ax, shrink=0.8)
        cbar.set_label("number of attacked images")
        save_figure(fig, path)


def _select_confusion_rows(records: pd.DataFrame, word: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The attacked records of `word` of the first model, and every model that has some."""
    missing = [c for c in RECORD_REQUIRED if c not in records.columns]
    if missing:
        raise ValueError(f"plot_confusion: the record table lacks the column(s) {', '.join(missing)}")
    rows = records[(records["word"] == word) & (records["word"] != CLEAN_WORD)]
    if rows.empty:
        attacked = sorted(set(records["word"]) - {CLEAN_WORD})
        shown = ", ".join(repr(w) for w in attacked[:12]) + (" …" if len(attacked) > 12 else "")
        raise ValueError(f"plot_confusion: the records hold no attacked record of the word {word!r}"
                         f" (words present: {shown or 'none'})")
    models = [k for k, _ in iter_groups(rows, ["model", "pretrained"])]
    first = models[0]
    return rows[(rows["model"] == first["model"]) & select_equal(rows["pretrained"], first["pretrained"])], models


def _build_confusion_matrix(rows: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Counts of (true class x prediction): the `top_n` most frequent predictions, then the
    `top_n` true classes with the most records in them (ties: largest cell, class index)."""
    counts = pd.crosstab(rows["true_index"].astype(np.int64), rows["pred_index"].astype(np.int64))
    col_order = sorted(counts.columns, key=lambda c: (-int(counts[c].sum()), -int(counts[c].max()), int(c)))
    sub = counts[col_order[:top_n]]
    row_order = sorted(sub.index, key=lambda r: (-int(sub.loc[r].sum()), -int(counts.loc[r].max()), int(r)))
    return sub.loc[row_order[:top_n]]


def _example_caption(example: dict[str, Any]) -> tuple[str, bool]:
    """Caption of one example and whether the attack succeeded.

    Success means the attacked prediction is the target and the clean prediction was not (the
    `changed_to` outcome of typoattack.analysis.metrics).
    """
    success = example["attacked_pred"] == example["target_name"] and example["clean_pred"] != example["target_name"]
    mark = "✓ attack succeeded" if success else "✗ attack failed"
    caption = (f"true: {truncate_label(str(example['true_name']), 24)}\n"
               f"clean: {truncate_label(str(example['clean_pred']), 24)}\n"
               f"attacked: {truncate_label(str(example['attacked_pred']), 24)}\n{mark}")
    return caption, success


def plot_examples(examples: list[dict], path: Path) -> None:
    """Plot a grid of attacked images: one row per word, one column per example of that word.

    Words keep the order of their first example; a row has as many images as that word has examples
    (the grid is as wide as the word with the most). Each image is captioned with the true class,
    the clean prediction, the attacked prediction and a ✓ (green) / ✗ (red) mark: success means the
    attacked prediction is the target and the clean prediction was not. The row's word and target
    are the y label of its first image.

    Layout: EX_W x EX_H inches per grid cell plus EX_TITLE_H, at DPI.

    Args:
        examples: Dicts with keys `word`, `image` (uint8 HxWx3 array: the attacked canvas),
            `clean_pred`, `attacked_pred`, `true_name`, `target_name` (class names).
        path: The PNG file to write.

    Raises:
        ValueError: `examples` is empty, an example lacks a key, or an image is not uint8 HxWx3.
    """
    _check_examples(examples)
    by_word: dict[str, list[dict]] = {}
    for ex in examples:
        by_word.setdefault(str(ex["word"]), []).append(ex)
    nrows, ncols = len(by_word), max(len(v) for v in by_word.values())
    size = (EX_W * ncols, EX_H * nrows + EX_TITLE_H)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
        for r, (word, exs) in enumerate(by_word.items()):
            for c in range(ncols):
                ax = axes[r, c]
                if c >= len(exs):
                    ax.set_visible(False)
                    continue
                ex = exs[c]
                caption, success = _example_caption(ex)
                ax.imshow(np.asarray(ex["image"]), interpolation="lanczos")
                ax.set_xticks([])
                ax.set_yticks([])
                color = "#1e8449" if success else "#c0392b"
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linewidth(2.5)
                ax.set_xlabel(caption, fontsize=8, color="black", loc="left", linespacing=1.3)
                ax.xaxis.label.set_horizontalalignment("left")
                if c == 0:
                    ax.set_ylabel(f"“{truncate_label(word, 20)}”\n→ {truncate_label(str(ex['target_name']), 20)}",
                                  fontsize=10, fontweight="bold")
        fig.suptitle("Attacked images (rows: word → target class)\n"
                     "green frame ✓: attacked prediction is the target and the clean one was not; red frame ✗: otherwise",
                     fontsize=10)
        save_figure(fig, path, palette=True)


def _check_examples(examples: list[dict]) -> None:
    """Raise ValueError when there is no example, one lacks a key, or an image is not uint8 HxWx3."""
    if not examples:
        raise ValueError("plot_examples: no examples given; there is nothing to plot")
    keys = ["word", "image", "clean_pred", "attacked_pred", "true_name", "target_name"]
    for i, ex in enumerate(examples):
        missing = [k for k in keys if k not in ex]
        if missing:
            raise ValueError(f"plot_examples: example {i} lacks the key(s) {', '.join(missing)}")
        img = np.asarray(ex["image"])
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"plot_examples: example {i} image must be a uint8 HxWx3 array, "
                             f"got dtype {img.dtype} and shape {img.shape}")
