"""Figures for large vocabularies: ASR ranked over targets, its distribution over words, and ASR
against word length. Figures only, from the per-word table (see `typoattack.analysis.plots`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from typoattack.analysis.figure_style import (
    PER_WORD_REQUIRED, ASR_VS_FRACTION_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, RANK_BAR_H, RANK_BASE_H, RANK_LABEL_MAX,
    RANK_MAX_COLS, RANK_PANEL_W, TITLE_H, check_table, get_asr_axis, get_colors, plain_text, save_figure, truncate_label,
)
from typoattack.analysis.labels import format_style, get_model_label, iter_groups, list_varying_styles
from typoattack.analysis.metrics import RANKING_SIZE, build_asr_ranking, get_ranking_keys

_TOP_COLOR = "#d62728"
_BOTTOM_COLOR = "#2b7bba"


def plot_asr_ranked(per_word: pd.DataFrame, path: Path, n: int = RANKING_SIZE) -> None:
    """Plot the `n` highest and `n` lowest (word, target) pairs by ASR, per condition.

    One panel per condition of `typoattack.analysis.metrics.build_asr_ranking` (model, pretrained,
    placement, fraction; varying styles named in the title). Each pair is a horizontal bar of its
    ASR (%) with the 95% Wilson interval as error bar, labelled "word → target" (each cut to
    RANK_LABEL_MAX characters); the highest pairs (red) run from the top, the lowest (blue) follow
    below a dotted line that says how many words lie in between. The ASR axis is zoomed to the data
    when every value is small (`figure_style.get_asr_axis`, said in the axis label and title).

    Layout: min(n_panels, RANK_MAX_COLS) columns of RANK_PANEL_W x (RANK_BASE_H + RANK_BAR_H *
    n_slots) inches, where n_slots is at most 2 * n + 1, plus TITLE_H and LEGEND_ROW_H, at DPI; the
    size does not grow with the number of words.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.
        n: Pairs at each end of the ranking.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column, or `n` < 1.
    """
    check_table(per_word, "plot_asr_ranked", PER_WORD_REQUIRED["plot_asr_ranked"])
    ranking = build_asr_ranking(per_word, n)
    asr_axis = get_asr_axis(per_word)
    styles = list_varying_styles(per_word)
    panels = list(iter_groups(ranking, get_ranking_keys(per_word)))
    slots = max(len(rows) + int((rows["group"] == "bottom").any()) for _, rows in panels)
    ncols = min(len(panels), RANK_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    size = (RANK_PANEL_W * ncols, (RANK_BASE_H + RANK_BAR_H * slots) * nrows + TITLE_H + LEGEND_ROW_H)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
        for ax, (keys, rows) in zip(axes.flat, panels):
            _draw_ranked_bars(ax, rows, slots, asr_axis.limit)
            n_top, n_bottom = int((rows["group"] == "top").sum()), int((rows["group"] == "bottom").sum())
            title = f"{get_model_label(keys['model'], keys['pretrained'])} — fraction {keys['fraction']:g}, {keys['placement']}"
            if styles:
                title += f", {format_style(keys, styles)}"
            ax.set_title(f"{title}\ntop {n_top} and bottom {n_bottom} of {int(rows['n_words'].iloc[0])} words")
            ax.set_xlabel(asr_axis.get_label() + "; whiskers: 95% Wilson interval")
            ax.set_ylabel("word → target class")
            ax.set_xlim(0, asr_axis.limit)
            ax.grid(True, axis="x", alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.legend(handles=[Patch(color=_TOP_COLOR, label="highest ASR"), Patch(color=_BOTTOM_COLOR, label="lowest ASR")],
                   loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Words ranked by attack success rate (per condition)"
                     + (f"\n{asr_axis.get_note()}" if asr_axis.zoomed else ""))
        save_figure(fig, path)


def _draw_ranked_bars(ax: Any, rows: pd.DataFrame, slots: int, limit: float) -> None:
    """Horizontal ASR bars (%) of one ranking panel, top pairs first, then a gap, then the bottom
    pairs; the y axis spans `slots` bars so every panel has the same bar height."""
    top, bottom = rows[rows["group"] == "top"], rows[rows["group"] == "bottom"]
    frame = pd.concat([top, bottom])
    y = np.concatenate([np.arange(len(top)), len(top) + 1 + np.arange(len(bottom))]).astype(float)
    asr = 100 * frame["asr"].to_numpy(dtype=float)
    lo = 100 * frame["asr_ci_low"].to_numpy(dtype=float)
    hi = 100 * frame["asr_ci_high"].to_numpy(dtype=float)
    colors = [_TOP_COLOR] * len(top) + [_BOTTOM_COLOR] * len(bottom)
    ax.barh(y, asr, height=0.75, color=colors, xerr=np.clip(np.nan_to_num([asr - lo, hi - asr]), 0, None),
            error_kw={"elinewidth": 0.8, "ecolor": "0.25", "capsize": 1.5})
    labels = [f"{truncate_label(str(w), RANK_LABEL_MAX)} → {truncate_label(str(t), RANK_LABEL_MAX)}"
              for w, t in zip(frame["word"], frame["target_name"])]
    ax.set_yticks(y, labels, fontsize=7)
    if len(bottom):
        hidden = int(frame["n_words"].iloc[0]) - len(frame)
        ax.axhline(len(top), color="0.5", lw=0.8, ls=":")
        if hidden:
            ax.text(limit / 2, len(top), f"… {hidden} words in between …", ha="center", va="center", fontsize=7,
                    color="0.3", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
    ax.set_ylim(slots - 0.5, -0.5)


def _condition_title(keys: dict[str, Any], styles: Sequence[str], with_condition: bool = True) -> str:
    """`model/pretrained — fraction f, placement` (and the varying styles) for a panel title."""
    title = get_model_label(keys["model"], keys["pretrained"])
    if with_condition:
        title += f" — fraction {keys['fraction']:g}, {keys['placement']}"
    if styles:
        title += f"\n{format_style(keys, styles)}"
    return title


def plot_asr_distribution(per_word: pd.DataFrame, path: Path) -> None:
    """Plot the distribution of ASR over words as empirical CDFs.

    One panel per (model, pretrained) and, when style columns vary, per style; in a panel, one step
    curve per (fraction, placement): the share of words (%) whose ASR is at or below x (%; the axis
    zoomed to the data when every value is small). The
    legend of each panel gives each curve's median and number of words.

    Layout: min(n_panels, ASR_VS_FRACTION_MAX_COLS) columns of PANEL_W x PANEL_H inches, plus
    TITLE_H, at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    check_table(per_word, "plot_asr_distribution", PER_WORD_REQUIRED["plot_asr_distribution"])
    asr_axis = get_asr_axis(per_word)
    styles = list_varying_styles(per_word)
    panels = list(iter_groups(per_word, ["model", "pretrained", *styles]))
    ncols = min(len(panels), ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_W * ncols, PANEL_H * nrows + TITLE_H),
                                 squeeze=False, layout="constrained")
        for ax, (keys, rows) in zip(axes.flat, panels):
            series = list(iter_groups(rows, ["fraction", "placement"]))
            for (skeys, srows), color in zip(series, get_colors(len(series))):
                values = np.sort(100 * srows["asr"].dropna().to_numpy(dtype=float))
                if not len(values):
                    continue
                share = 100 * np.arange(1, len(values) + 1) / len(values)
                ax.step(np.concatenate([[0.0], values, [asr_axis.limit]]), np.concatenate([[0.0], share, [100.0]]),
                        where="post", color=color, lw=1.5,
                        label=f"fraction {skeys['fraction']:g}, {skeys['placement']}: "
                              f"median {np.median(values):.1f}% (n={len(values)})")
            ax.set_title(_condition_title(keys, styles, with_condition=False))
            ax.set_xlabel(asr_axis.get_label())
            ax.set_ylabel("words with ASR ≤ x (%)")
            ax.set_xlim(0, asr_axis.limit)
            ax.set_ylim(0, 100)
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower right", fontsize=7, title="condition", title_fontsize=7)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle("Distribution of attack success rate over words\n(cumulative share of words)"
                     + (f"\n{asr_axis.get_note(wrap=ncols == 1)}" if asr_axis.zoomed else ""), fontsize=10)
        save_figure(fig, path)


def plot_asr_vs_word_length(per_word: pd.DataFrame, path: Path) -> None:
    """Plot ASR against the word's length in characters, with the mean per length.

    One panel per (model, pretrained, placement, fraction) and, when style columns vary, per style.
    Each (word, target) pair is a point (x: len(word), jittered by at most ±0.2 with a fixed seed;
    y: ASR %, zoomed to the data when every value is small); the black line is the mean ASR per length. The title gives Pearson's r between
    length and ASR where it is defined.

    Layout: min(n_panels, ASR_VS_FRACTION_MAX_COLS) columns of PANEL_W x PANEL_H inches, plus
    TITLE_H and LEGEND_ROW_H, at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    check_table(per_word, "plot_asr_vs_word_length", PER_WORD_REQUIRED["plot_asr_vs_word_length"])
    styles = list_varying_styles(per_word)
    panels = list(iter_groups(per_word, ["model", "pretrained", "placement", "fraction", *styles]))
    ncols = min(len(panels), ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    size = (PANEL_W * ncols, PANEL_H * nrows + TITLE_H + LEGEND_ROW_H)
    rng = np.random.default_rng(0)
    asr_axis = get_asr_axis(per_word)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
        handles: dict[str, Any] = {}
        for ax, (keys, rows) in zip(axes.flat, panels):
            length = np.array([len(str(w)) for w in rows["word"]], dtype=float)
            asr = 100 * rows["asr"].to_numpy(dtype=float)
            alpha = 0.6 if len(rows) <= 100 else 0.25
            points = ax.scatter(length + rng.uniform(-0.2, 0.2, len(length)), asr, s=10, alpha=alpha,
                                color="#2b7bba", lw=0)
            mean = pd.Series(asr).groupby(length).mean()
            (line,) = ax.plot(mean.index.to_numpy(dtype=float), mean.to_numpy(dtype=float), color="black",
                              marker="o", ms=3, lw=1.4)
            handles.setdefault("one word (length jittered)", points)
            handles.setdefault("mean ASR per length", line)
            title = _condition_title(keys, styles)
            if len(rows) > 2 and np.nanstd(length) > 0 and np.nanstd(asr) > 0:
                title += f" (r = {np.corrcoef(length, asr)[0, 1]:.2f})"
            ax.set_title(title)
            ax.set_xlabel("word length (characters)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(asr_axis.get_label())
            ax.set_ylim(0, asr_axis.limit)
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center", ncols=2, frameon=False)
        fig.suptitle("Attack success rate against word length"
                     + (f"\n{asr_axis.get_note(wrap=ncols == 1)}" if asr_axis.zoomed else ""))
        save_figure(fig, path)
