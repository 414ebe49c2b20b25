"""Figures from the per-word table and the records (no model code): figures only; the leaderboard
is in `typoattack.analysis.metrics`, the report in `typoattack.analysis.report`.

Every function here is a pure function of DataFrames (the per-word table of
`typoattack.analysis.metrics.build_per_word_table` and, for the confusion heatmap, the confusion
table of `build_confusion_table`) plus the path it writes to; examples.png takes images the caller
re-rendered. Nothing here imports torch, open_clip or Typer. This module draws the per-word figures
(ASR vs fraction, ASR by word, accuracy); the confusion heatmap is in `confusion_plots`, examples.png
in `example_plots` and the large-vocabulary views in `vocab_plots`, and `plots` re-exports them all.

Conditions. A row of the per-word table is one condition: (model, pretrained, word, fraction,
placement). The table MAY also carry the style columns `font, fill, outline, outline_width,
opacity` (`STYLE_COLUMNS`); those present are treated as part of the condition. A style column
whose value varies across the table splits panels (plot_asr_vs_fraction) and rows of panels
(plot_asr_by_word), and is named in titles and labels; a style column with one value (or an absent
one) is ignored.

Empty input. Every plot function raises ValueError with a message naming the function and the
reason when it is given nothing to plot (an empty per-word table, no attacked cell of the word,
no examples).

ASR axes. An axis of attack success rate runs 0–100% unless every value is small: then it is
zoomed to the data (`figure_style.get_asr_axis`) and the axis label and title say where it ends
and the largest ASR shown, so a small ASR is never a flat line at the bottom of a 0–100% axis.

Large vocabularies. With more than `MANY_WORDS` (word, target) pairs, per-word views switch to
views whose size does not grow with the vocabulary: plot_asr_vs_fraction draws the mean, median
and 10–90th percentile over words and the ASR_VS_FRACTION_TOP_WORDS words of highest mean ASR
instead of one line per word, and plot_asr_by_word draws the
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
from dataclasses import dataclass
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
    CONFUSION_REQUIRED, PER_WORD_REQUIRED, ACC_BASE_W, ASR_VS_FRACTION_SPREAD, ASR_VS_FRACTION_SPREAD_OF_GAP,
    ASR_VS_FRACTION_TOP_WORDS,
    WORD_LINESTYLES, WORD_MARKERS, ACC_H, ACC_LEGEND_MAX_COLS, ACC_MIN_W, ACC_W_PER_BAR,
    ASR_VS_FRACTION_MAX_COLS, BAR_LEGEND_MAX_COLS, BAR_PANEL_BASE_W, BAR_PANEL_H, BAR_PANEL_MIN_W, BAR_W_PER_BAR,
    BAR_W_PER_WORD_MIN, CLASS_NAME_MAX, CONF_BASE_H, CONF_BASE_W, CONF_CELL, CONF_ROW, DPI, EX_H, EX_TITLE_H, EX_W,
    LEGEND_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, RANK_BAR_H, RANK_BASE_H, RANK_LABEL_MAX, RANK_MAX_COLS,
    RANK_PANEL_W, TITLE_H, ASR_BOTTOM_MARGIN, check_table, get_asr_axis, get_colors, plain_text, select_equal, save_figure, truncate_label, format_word_label,
)
# The figures of the other modules are re-exported: `plots` names every figure (`__all__`).
from typoattack.analysis.vocab_plots import (  # noqa: E402
    plot_asr_distribution, plot_asr_ranked, plot_asr_vs_word_length,
)
from typoattack.analysis.confusion_plots import plot_confusion  # noqa: E402
from typoattack.analysis.example_plots import plot_examples  # noqa: E402
from typoattack.analysis.metrics import MANY_WORDS, count_words, rank_words  # noqa: E402

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
    """Plot attack success rate against the measured pixel cover: one line per word, or with many
    words a summary over words and the few words that succeed most.

    One panel per (model, pretrained, placement) and, when style columns vary, per style (named in
    the panel title); x is the measured `pixel_cover_mean` (%), y the ASR (%). The y axis is the
    same on every panel: 0–100%, or zoomed to the data when the highest upper 95% bound is small
    (`figure_style.get_asr_axis`; the axis label and the title then say where it ends and the
    largest ASR shown).

    Up to MANY_WORDS (word, target) pairs: every word is a line with a marker at each fraction and
    a whisker of its 95% Wilson interval (asr_ci_low..asr_ci_high). A word keeps its colour, marker
    (`WORD_MARKERS`) and line style (`WORD_LINESTYLES`) across panels, and its points sit at a
    fixed sideways offset from the measured cover (the offsets spread over ASR_VS_FRACTION_SPREAD
    of the x axis, at most ASR_VS_FRACTION_SPREAD_OF_GAP of the smallest gap between two fractions;
    the title says by how much), so
    words with the same ASR (often all at 0) are side by side instead of hiding each other. The
    legend is shared below the panels.

    With more than MANY_WORDS pairs, each panel instead shows, per fraction, the mean ASR over
    words (line), the median (dashed) and the 10–90th percentile of words (shaded), at the mean
    measured cover, and the ASR_VS_FRACTION_TOP_WORDS words with the highest mean ASR over the
    whole table (`metrics.rank_words`) as thin lines without intervals: at most
    2 + ASR_VS_FRACTION_TOP_WORDS lines per panel, whatever the vocabulary.

    Layout: min(n_panels, ASR_VS_FRACTION_MAX_COLS) columns of PANEL_W x PANEL_H inches, plus
    TITLE_H and LEGEND_ROW_H per legend row (LEGEND_MAX_COLS entries per row), at DPI.

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
    words = [(k["word"], k["target_name"]) for k, _ in iter_groups(per_word, ["word", "target_name"])]
    many = len(words) > MANY_WORDS
    x_max = 100 * float(per_word["pixel_cover_mean"].max())
    x_limit = max(x_max * 1.08, 1.0)
    if many:
        order = {w: i for i, w in enumerate(rank_words(per_word)[:ASR_VS_FRACTION_TOP_WORDS])}
        shown = sorted((w for w in words if w[0] in order), key=lambda w: (order[w[0]], str(w[1])))
        looks = {w: _WordLook(c, WORD_MARKERS[i % len(WORD_MARKERS)], "-", 0.0)
                 for i, (w, c) in enumerate(zip(shown, _TOP_WORD_COLORS * len(shown)))}
        n_entries = 3 + len(looks)
    else:
        spread = _get_spread(per_word, x_limit)
        x_limit = max(x_limit, x_max + 0.5 * spread + 0.02 * x_limit)
        looks = {w: _WordLook(c, WORD_MARKERS[i % len(WORD_MARKERS)], WORD_LINESTYLES[i % len(WORD_LINESTYLES)],
                              0.0 if len(words) == 1 else spread * (i / (len(words) - 1) - 0.5))
                 for i, (w, c) in enumerate(zip(words, get_colors(len(words))))}
        n_entries = len(words)
    ncols = min(len(panels), ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = math.ceil(n_entries / LEGEND_MAX_COLS)
    size = (PANEL_W * ncols, PANEL_H * nrows + TITLE_H + LEGEND_ROW_H * legend_rows)
    asr_axis = get_asr_axis(per_word)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, sharey=True, squeeze=False, layout="constrained")
        handles: dict[str, Any] = {}
        for ax, (keys, rows) in zip(axes.flat, panels):
            if many:
                _draw_word_summary(ax, rows, handles)
                _draw_word_lines(ax, rows[[(w, t) in looks for w, t in zip(rows["word"], rows["target_name"])]],
                                 looks, handles, intervals=False)
            else:
                _draw_word_lines(ax, rows, looks, handles, intervals=True)
            title = f"{get_model_label(keys['model'], keys['pretrained'])} — {keys['placement']}"
            if styles:
                title += f"\n{format_style(keys, styles)}"
            ax.set_title(title)
            ax.set_xlabel("measured pixel cover (%)")
            ax.set_ylabel(asr_axis.get_label())
            # A little room below 0, so a line of ASR 0 is not hidden by the axis.
            ax.set_ylim(-ASR_BOTTOM_MARGIN * asr_axis.limit, asr_axis.limit)
            ax.set_xlim(0, x_limit)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelleft=True)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        note = f"\n{asr_axis.get_note(wrap=ncols == 1)}" if asr_axis.zoomed else ""
        if many:
            fig.suptitle(f"Typographic attack success vs measured pixel cover, {len(words)} words\n"
                         f"thick line: mean; dashed: median; shaded: 10–90th percentile of words; "
                         f"thin lines: the {len(looks)} words with the highest mean ASR{note}", fontsize=10)
            legend_title = f"summary over {len(words)} words, and the top {len(looks)} words (word → target class)"
        else:
            offset = max(abs(look.offset) for look in looks.values())
            dodge = ((";\n" if ncols == 1 else "; ")
                     + f"each word's points shifted by up to ±{offset:.2g} cover points so equal values stay visible"
                     ) if offset else ""
            fig.suptitle("Typographic attack success vs measured pixel cover\n"
                         f"(whiskers: 95% Wilson interval{dodge}){note}", fontsize=11)
            legend_title = "word → target class"
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncols=min(len(handles), LEGEND_MAX_COLS), title=legend_title, frameon=False)
        save_figure(fig, path)


_TOP_WORD_COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22"]
"""Colours of the top words over the summary of plot_asr_vs_fraction (no red: the summary's)."""


@dataclass(frozen=True)
class _WordLook:
    """How one word is drawn in plot_asr_vs_fraction: colour, marker, line style and the sideways
    offset of its points (in points of cover)."""

    color: Any
    marker: str
    linestyle: str
    offset: float


def _get_spread(per_word: pd.DataFrame, x_limit: float) -> float:
    """The width (in points of cover) over which the words' points of one fraction are spread:
    ASR_VS_FRACTION_SPREAD of the x axis, at most ASR_VS_FRACTION_SPREAD_OF_GAP of the smallest gap
    between the mean covers of two fractions."""
    covers = np.sort(100 * per_word.groupby("fraction")["pixel_cover_mean"].mean().to_numpy(dtype=float))
    spread = ASR_VS_FRACTION_SPREAD * x_limit
    gaps = np.diff(covers)
    gaps = gaps[gaps > 0]
    return float(min(spread, ASR_VS_FRACTION_SPREAD_OF_GAP * gaps.min())) if gaps.size else spread


def _draw_word_lines(ax: Any, rows: pd.DataFrame, looks: dict[tuple[Any, Any], _WordLook], handles: dict[str, Any],
                     intervals: bool) -> None:
    """One line per word of a panel: ASR (%) against measured cover (%) shifted by the word's
    offset, with a whisker of its 95% interval at each point when `intervals`; adds each word's line
    to `handles` for the shared legend, in the order of `looks`."""
    groups = {(k["word"], k["target_name"]): (k, r) for k, r in iter_groups(rows, ["word", "target_name"])}
    for key, look in looks.items():
        if key not in groups:
            continue
        wkeys, wrows = groups[key]
        wrows = wrows.sort_values(["fraction", "pixel_cover_mean"])
        x = 100 * wrows["pixel_cover_mean"].to_numpy(dtype=float) + look.offset
        y = 100 * wrows["asr"].to_numpy(dtype=float)
        label = format_word_label(wkeys["word"], wkeys["target_name"])
        if intervals:
            lo = 100 * wrows["asr_ci_low"].to_numpy(dtype=float)
            hi = 100 * wrows["asr_ci_high"].to_numpy(dtype=float)
            ax.errorbar(x, y, yerr=np.clip([y - lo, hi - y], 0, None), color=look.color, capsize=2, lw=0.8,
                        alpha=0.7, fmt="none", zorder=2)
        (line,) = ax.plot(x, y, marker=look.marker, color=look.color, ls=look.linestyle,
                          lw=1.4 if intervals else 1.0, ms=5 if intervals else 3.5, mec="white", mew=0.5,
                          label=label, zorder=3 if intervals else 2)
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
    (line,) = ax.plot(x, mean, marker="o", color=color, lw=2.2, ms=5, zorder=4)
    (med,) = ax.plot(x, median, marker="s", color="#7f0000", ls="--", lw=1.4, ms=4, zorder=4)
    if len(x) > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0, zorder=1)
    else:
        ax.errorbar(x, median, yerr=np.clip([median - lo, hi - median], 0, None), color=color, capsize=4, lw=1.2,
                    fmt="none", zorder=1)
    handles.setdefault("mean over words", line)
    handles.setdefault("median", med)
    handles.setdefault("10–90th percentile of words", Patch(color=color, alpha=0.18))


def plot_asr_by_word(per_word: pd.DataFrame, path: Path) -> None:
    """Plot grouped bars of ASR and flip rate per word, models side by side.

    One row of panels per (fraction, placement) and, when style columns vary, per style; the left
    panel of a row shows the ASR (%) with 95% Wilson error bars, the right one the flip rate (%)
    (no bar where the flip rate is undefined: no clean-correct image). The ASR panels share one
    axis, zoomed to the data when the ASR is small (`figure_style.get_asr_axis`, said in the axis
    label and the title); the flip-rate panels run 0–100%. On the x axis are the words
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
    asr_axis = get_asr_axis(per_word)
    with plain_text():
        fig, axes = plt.subplots(len(row_groups), 2, figsize=size, squeeze=False, sharey="col", layout="constrained")
        for r, (keys, rows) in enumerate(row_groups):
            _draw_model_bars(axes[r], rows, models, words, colors)
            condition = f"fraction {keys['fraction']:g}, {keys['placement']}"
            if styles:
                condition += f", {format_style(keys, styles)}"
            for c, (ax, metric) in enumerate(zip(axes[r], ("attack success rate", "flip rate"))):
                ax.set_title(f"{metric} — {condition}" + (" (whiskers: 95% CI)" if c == 0 else ""))
                ax.set_ylabel(asr_axis.get_label() if c == 0 else f"{metric} (%)")
                ax.set_xlabel("word → target class")
                ax.set_xticks(x, tick_labels, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                              rotation_mode="anchor" if rotate else "default")
                ax.set_ylim(0, asr_axis.limit if c == 0 else 100)
                ax.tick_params(labelleft=True)
                ax.grid(True, axis="y", alpha=0.3)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), BAR_LEGEND_MAX_COLS), title="model", frameon=False)
        fig.suptitle("Attack success rate and flip rate per word (flip rate n/a: no clean-correct image)"
                     + (f"\n{asr_axis.get_note()}" if asr_axis.zoomed else ""))
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
