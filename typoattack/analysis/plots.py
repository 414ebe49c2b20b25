"""Figures, leaderboard and Markdown/HTML report from the per-word table (no model code).

Every function here is a pure function of DataFrames (the per-word table of
`typoattack.analysis.metrics.build_per_word_table` and, for the confusion heatmap, the per-image record
table) plus the path it writes to. Nothing here imports torch, open_clip or Typer.

Conditions. A row of the per-word table is one condition: (model, pretrained, word, fraction,
placement). The table MAY also carry the style columns `font, fill, outline, outline_width,
opacity` (`STYLE_COLUMNS`); those present are treated as part of the condition. A style column
whose value varies across the table splits panels (plot_asr_vs_fraction), rows of panels
(plot_asr_by_word) and per-word report rows, and is named in titles and labels; a style column with
one value (or an absent one) is ignored. Aggregates (attacked top-1, mean ASR, ASR@fraction) average
over every condition, styles included.

Empty input. Every plot function raises ValueError with a message naming the function and the
reason when it is given nothing to plot (an empty per-word table, no attacked record of the word,
no examples). `build_leaderboard` and `format_leaderboard_markdown` accept an empty table and return
an empty leaderboard / a header-only table, and `write_report` then writes a report that says the
run has no attacked conditions.

Text. Strings are drawn with matplotlib's mathtext disabled, so a word such as `$$$` is drawn
literally. Figures are written at `DPI` dots per inch with the figure sizes described in each
function's docstring (no tight bounding box: the PNG is exactly figure size x DPI).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from typoattack.constants import CLEAN_WORD  # noqa: E402
from typoattack.analysis.metrics import PER_WORD_COLUMNS, STYLE_COLUMNS  # noqa: E402
from typoattack.analysis.report import format_per_word_markdown, write_atomic  # noqa: E402

__all__ = [
    "DPI",
    "STYLE_COLUMNS",
    "build_leaderboard",
    "format_leaderboard_markdown",
    "plot_accuracy",
    "plot_asr_by_word",
    "plot_asr_vs_fraction",
    "plot_confusion",
    "plot_examples",
    "write_report",
]

DPI = 130
"""Resolution of every figure, in dots per inch."""

# Layout of plot_asr_vs_fraction: a grid of at most ASR_VS_FRACTION_MAX_COLS panels per row,
# each PANEL_W x PANEL_H inches, plus LEGEND_ROW_H inches per row of the figure legend
# (LEGEND_MAX_COLS entries per legend row).
ASR_VS_FRACTION_MAX_COLS = 3
PANEL_W = 5.0
PANEL_H = 3.8
LEGEND_ROW_H = 0.3
LEGEND_MAX_COLS = 5
TITLE_H = 0.6

# Layout of plot_asr_by_word: one row per (fraction, placement, style); two panels per row
# (ASR, flip rate), each BAR_PANEL_BASE_W + n_words * max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_models)
# inches wide
# (at least BAR_PANEL_MIN_W) and BAR_PANEL_H inches high, plus TITLE_H and LEGEND_ROW_H per row of
# the model legend (a title row, then BAR_LEGEND_MAX_COLS models per row).
BAR_PANEL_BASE_W = 1.5
BAR_W_PER_BAR = 0.28
BAR_W_PER_WORD_MIN = 0.6
BAR_PANEL_MIN_W = 5.0
BAR_PANEL_H = 3.4
BAR_LEGEND_MAX_COLS = 4

# Layout of plot_accuracy: ACC_BASE_W + ACC_W_PER_BAR * n_models * n_series inches wide
# (at least ACC_MIN_W), ACC_H inches high.
ACC_BASE_W = 2.5
ACC_W_PER_BAR = 0.55
ACC_MIN_W = 6.0
ACC_H = 5.2
ACC_LEGEND_MAX_COLS = 3

# Layout of plot_confusion: CONF_BASE_W + CONF_CELL * n_cols by CONF_BASE_H + CONF_CELL * n_rows.
CONF_CELL = 0.55
CONF_BASE_W = 4.0
CONF_BASE_H = 3.2
CLASS_NAME_MAX = 18

# Layout of plot_examples: EX_W by EX_H inches per image, plus EX_TITLE_H for the title and key.
EX_W = 2.2
EX_H = 3.0
EX_TITLE_H = 0.8

_REQUIRED = {
    "plot_asr_vs_fraction": ["model", "pretrained", "word", "target_name", "fraction", "placement",
                             "pixel_cover_mean", "asr", "asr_ci_low", "asr_ci_high"],
    "plot_asr_by_word": ["model", "pretrained", "word", "target_name", "fraction", "placement", "asr",
                         "asr_ci_low", "asr_ci_high", "flip_rate"],
    "plot_accuracy": ["model", "pretrained", "fraction", "clean_top1", "attacked_top1"],
    "build_leaderboard": ["model", "pretrained", "fraction", "n_images", "clean_top1", "attacked_top1", "asr"],
}
_RECORD_REQUIRED = ["model", "pretrained", "word", "true_index", "pred_index"]
_LEADERBOARD_BASE = ["model", "pretrained", "n_images", "clean_top1", "attacked_top1", "mean_asr"]
_UNTRAINED_WARNING = ("UNTRAINED MODEL: {models} {verb} random weights (seed:N); these numbers only check "
                      "the pipeline, they say nothing about CLIP.")


# --------------------------------------------------------------------------------------------
# Helpers


def _check_table(frame: pd.DataFrame, function: str, required: Sequence[str], what: str = "per-word table") -> None:
    """Raise ValueError when `frame` is empty or lacks a required column."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"{function}: the {what} lacks the column(s) {', '.join(missing)}")
    if frame.empty:
        raise ValueError(f"{function}: the {what} is empty (no attacked conditions); there is nothing to plot")


def _is_missing(value: Any) -> bool:
    """True for None and NaN-like scalars."""
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _model_label(model: Any, pretrained: Any) -> str:
    """`model/pretrained`, or `model` alone when pretrained is empty or missing."""
    if _is_missing(pretrained) or str(pretrained) == "":
        return str(model)
    return f"{model}/{pretrained}"


def _varying_styles(frame: pd.DataFrame) -> list[str]:
    """The style columns present in `frame` that take more than one value (missing counts as one)."""
    return [c for c in STYLE_COLUMNS if c in frame.columns and frame[c].nunique(dropna=False) > 1]


def _style_text(keys: dict[str, Any], styles: Sequence[str]) -> str:
    """`fill=red, opacity=0.5` for the style columns `styles` of a condition."""
    return ", ".join(f"{c}={_format_value(keys[c])}" for c in styles)


def _format_value(value: Any) -> str:
    """A short text for a style value (floats with %g, missing as n/a)."""
    if _is_missing(value):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    text = str(value)
    # Font paths: the file name is what tells them apart.
    return os.path.basename(text) if ("/" in text or "\\" in text) else text


def _truncate(text: str, limit: int = CLASS_NAME_MAX) -> str:
    """`text` cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _word_label(word: Any, target_name: Any) -> str:
    """`"word" → target` legend label."""
    return f"“{word}” → {target_name}"


def _groups(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Iterate (key dict, rows) over the groups of `frame` by `keys`, sorted, missing kept."""
    if not keys:
        yield {}, frame
        return
    for values, rows in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), rows


@contextmanager
def _plain_text() -> Iterator[None]:
    """Matplotlib settings for the figures here: literal text (no mathtext for `$`), white background."""
    with plt.rc_context({"text.parse_math": False, "figure.facecolor": "white", "savefig.facecolor": "white",
                         "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                         "legend.fontsize": 8, "figure.titlesize": 12}):
        yield


def _save(fig: Figure, path: Path, palette: bool = False) -> None:
    """Write `fig` as PNG at DPI (creating the parent folder) and close it.

    With `palette`, the PNG is stored with a 256-colour palette: photographs then take a third
    of the space, which keeps report.html (images embedded) small enough to share.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    if palette:
        from PIL import Image

        with Image.open(path) as img:
            quantized = img.convert("RGB").quantize(256)
        quantized.save(path, optimize=True)


def _colors(n: int) -> list[Any]:
    """`n` distinguishable colours (tab10, tab20 beyond 10, repeating beyond 20)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _pct(value: Any) -> str:
    """A share as a percentage with one decimal, `n/a` when missing."""
    return "n/a" if _is_missing(value) else f"{100 * float(value):.1f}%"


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

    Layout: min(n_panels, ASR_VS_FRACTION_MAX_COLS) columns of PANEL_W x PANEL_H inches, plus
    TITLE_H and LEGEND_ROW_H per legend row (LEGEND_MAX_COLS words per row), at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    _check_table(per_word, "plot_asr_vs_fraction", _REQUIRED["plot_asr_vs_fraction"])
    styles = _varying_styles(per_word)
    panel_keys = ["model", "pretrained", "placement", *styles]
    panels = list(_groups(per_word, panel_keys))
    words = list(_groups(per_word, ["word", "target_name"]))
    color = {(k["word"], k["target_name"]): c for (k, _), c in zip(words, _colors(len(words)))}
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]

    ncols = min(len(panels), ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(len(panels) / ncols)
    legend_rows = math.ceil(len(words) / LEGEND_MAX_COLS)
    size = (PANEL_W * ncols, PANEL_H * nrows + TITLE_H + LEGEND_ROW_H * legend_rows)
    with _plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, sharey=True, squeeze=False, layout="constrained")
        handles: dict[str, Any] = {}
        x_max = 100 * float(per_word["pixel_cover_mean"].max())
        for ax, (keys, rows) in zip(axes.flat, panels):
            for w_index, (wkeys, wrows) in enumerate(_groups(rows, ["word", "target_name"])):
                wrows = wrows.sort_values(["fraction", "pixel_cover_mean"])
                x = 100 * wrows["pixel_cover_mean"].to_numpy(dtype=float)
                y = 100 * wrows["asr"].to_numpy(dtype=float)
                lo = 100 * wrows["asr_ci_low"].to_numpy(dtype=float)
                hi = 100 * wrows["asr_ci_high"].to_numpy(dtype=float)
                c = color[(wkeys["word"], wkeys["target_name"])]
                label = _word_label(wkeys["word"], wkeys["target_name"])
                marker = markers[list(color).index((wkeys["word"], wkeys["target_name"])) // 10 % len(markers)]
                (line,) = ax.plot(x, y, marker=marker, color=c, lw=1.6, ms=5, label=label)
                if len(x) > 1:
                    ax.fill_between(x, lo, hi, color=c, alpha=0.15, lw=0)
                else:
                    ax.errorbar(x, y, yerr=np.clip([y - lo, hi - y], 0, None), color=c, capsize=3, lw=1, fmt="none")
                handles.setdefault(label, line)
            title = f"{_model_label(keys['model'], keys['pretrained'])} — {keys['placement']}"
            if styles:
                title += f"\n{_style_text(keys, styles)}"
            ax.set_title(title)
            ax.set_xlabel("measured pixel cover (%)")
            ax.set_ylabel("attack success rate (%)")
            ax.set_ylim(0, 100)
            ax.set_xlim(0, max(x_max * 1.08, 1.0))
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelleft=True)
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        fig.suptitle("Typographic attack success vs measured pixel cover (shaded: 95% Wilson interval)")
        fig.legend(list(handles.values()), list(handles.keys()), loc="outside lower center",
                   ncols=min(len(handles), LEGEND_MAX_COLS), title="word → target class", frameon=False)
        _save(fig, path)


def plot_asr_by_word(per_word: pd.DataFrame, path: Path) -> None:
    """Plot grouped bars of ASR and flip rate per word, models side by side.

    One row of panels per (fraction, placement) and, when style columns vary, per style; the left
    panel of a row shows the ASR (%) with 95% Wilson error bars, the right one the flip rate (%)
    (no bar where the flip rate is undefined: no clean-correct image). On the x axis are the words
    (with their target class); within a word, one bar per model/pretrained.

    Layout: two panels per row, each max(BAR_PANEL_MIN_W, BAR_PANEL_BASE_W + n_words *
    max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_models)) x BAR_PANEL_H inches, plus TITLE_H and LEGEND_ROW_H * (1 +
    ceil(n_models / BAR_LEGEND_MAX_COLS)) for the model legend below the panels, at DPI.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        path: The PNG file to write.

    Raises:
        ValueError: `per_word` is empty or lacks a needed column.
    """
    _check_table(per_word, "plot_asr_by_word", _REQUIRED["plot_asr_by_word"])
    styles = _varying_styles(per_word)
    row_groups = list(_groups(per_word, ["fraction", "placement", *styles]))
    models = [k for k, _ in _groups(per_word, ["model", "pretrained"])]
    words = [k for k, _ in _groups(per_word, ["word", "target_name"])]
    n_m, n_w = len(models), len(words)
    panel_w = max(BAR_PANEL_MIN_W, BAR_PANEL_BASE_W + n_w * max(BAR_W_PER_WORD_MIN, BAR_W_PER_BAR * n_m))
    legend_rows = 1 + math.ceil(n_m / BAR_LEGEND_MAX_COLS)  # legend title + entries
    size = (2 * panel_w, BAR_PANEL_H * len(row_groups) + TITLE_H + LEGEND_ROW_H * legend_rows)
    width = 0.8 / n_m
    x = np.arange(n_w)
    colors = _colors(n_m)
    rotate = n_w > 4
    sep = " " if rotate else "\n"  # rotated labels read best on one line
    tick_labels = [f"{_truncate(str(w['word']), 14)}{sep}→ {_truncate(str(w['target_name']), 16)}" for w in words]
    with _plain_text():
        fig, axes = plt.subplots(len(row_groups), 2, figsize=size, squeeze=False, sharey=True, layout="constrained")
        for r, (keys, rows) in enumerate(row_groups):
            for m_index, mk in enumerate(models):
                mrows = rows[(rows["model"] == mk["model"]) & _same(rows["pretrained"], mk["pretrained"])]
                by_word = {(k["word"], k["target_name"]): g.iloc[0] for k, g in _groups(mrows, ["word", "target_name"])}
                vals = [by_word.get((w["word"], w["target_name"])) for w in words]
                asr = np.array([np.nan if v is None else 100 * v["asr"] for v in vals], dtype=float)
                lo = np.array([np.nan if v is None else 100 * v["asr_ci_low"] for v in vals], dtype=float)
                hi = np.array([np.nan if v is None else 100 * v["asr_ci_high"] for v in vals], dtype=float)
                flip = np.array([np.nan if v is None else 100 * v["flip_rate"] for v in vals], dtype=float)
                offset = (m_index - (n_m - 1) / 2) * width
                label = _model_label(mk["model"], mk["pretrained"])
                axes[r, 0].bar(x + offset, asr, width, color=colors[m_index], label=label,
                               yerr=np.clip(np.nan_to_num([asr - lo, hi - asr]), 0, None), capsize=2,
                               error_kw={"elinewidth": 0.8, "ecolor": "0.25"})
                axes[r, 1].bar(x + offset, np.nan_to_num(flip), width, color=colors[m_index], label=label)
                for xi in np.flatnonzero(np.isnan(flip) & ~np.isnan(asr)):
                    axes[r, 1].text(x[xi] + offset, 1, "n/a", ha="center", va="bottom", fontsize=6, rotation=90)
            condition = f"fraction {keys['fraction']:g}, {keys['placement']}"
            if styles:
                condition += f", {_style_text(keys, styles)}"
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
        _save(fig, path)


def _same(column: pd.Series, value: Any) -> pd.Series:
    """Element-wise equality that treats missing values as equal to each other."""
    if _is_missing(value):
        return column.isna()
    return column == value


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
    _check_table(per_word, "plot_accuracy", _REQUIRED["plot_accuracy"])
    fractions = sorted(per_word["fraction"].unique())
    models = list(_groups(per_word, ["model", "pretrained"]))
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
    with _plain_text():
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        for s in range(n_s):
            bars = ax.bar(x + (s - (n_s - 1) / 2) * width, values[s], width, label=series[s], color=colors[s],
                          edgecolor="white", linewidth=0.5)
            ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.1f}" for v in values[s]], fontsize=7, padding=2)
        ax.set_xticks(x, [_model_label(k["model"], k["pretrained"]) for k, _ in models],
                      rotation=20 if n_m > 3 else 0, ha="right" if n_m > 3 else "center")
        ax.set_xlabel("model / pretrained weights")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_ylim(0, 110)
        ax.set_yticks(np.arange(0, 101, 20))
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_title("Zero-shot top-1 accuracy: clean vs attacked images\n"
                     "(attacked: mean over words and placements, all fractions or one)")
        fig.legend(loc="outside lower center", ncols=min(n_s, ACC_LEGEND_MAX_COLS), title="images", frameon=False)
        _save(fig, path)


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
    missing = [c for c in _RECORD_REQUIRED if c not in records.columns]
    if missing:
        raise ValueError(f"plot_confusion: the record table lacks the column(s) {', '.join(missing)}")
    rows = records[(records["word"] == word) & (records["word"] != CLEAN_WORD)]
    if rows.empty:
        attacked = sorted(set(records["word"]) - {CLEAN_WORD})
        shown = ", ".join(repr(w) for w in attacked[:12]) + (" …" if len(attacked) > 12 else "")
        raise ValueError(f"plot_confusion: the records hold no attacked record of the word {word!r}"
                         f" (words present: {shown or 'none'})")
    models = [k for k, _ in _groups(rows, ["model", "pretrained"])]
    first = models[0]
    rows = rows[(rows["model"] == first["model"]) & _same(rows["pretrained"], first["pretrained"])]
    target = int(rows["target_index"].iloc[0]) if "target_index" in rows.columns else None

    counts = pd.crosstab(rows["true_index"].astype(np.int64), rows["pred_index"].astype(np.int64))
    col_order = sorted(counts.columns, key=lambda c: (-int(counts[c].sum()), -int(counts[c].max()), int(c)))
    cols = col_order[:top_n]
    sub = counts[cols]
    row_order = sorted(sub.index, key=lambda r: (-int(sub.loc[r].sum()), -int(counts.loc[r].max()), int(r)))
    matrix = sub.loc[row_order[:top_n]]
    data = matrix.to_numpy(dtype=float)

    n_r, n_c = data.shape
    size = (CONF_BASE_W + CONF_CELL * n_c, CONF_BASE_H + CONF_CELL * n_r)
    label = _model_label(first["model"], first["pretrained"])
    scope = f"model {label}" + (f" (first of {len(models)} models)" if len(models) > 1 else "")
    with _plain_text():
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        im = ax.imshow(np.where(data > 0, data, np.nan), cmap="Blues", vmin=0, vmax=max(data.max(), 1), aspect="auto")
        ax.set_facecolor("#f7f7f7")
        vmax = max(data.max(), 1)
        for i in range(n_r):
            for j in range(n_c):
                if data[i, j] > 0:
                    ax.text(j, i, f"{int(data[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > 0.6 * vmax else "black")
        ax.set_xticks(np.arange(n_c), [_truncate(str(class_names[int(c)])) for c in matrix.columns],
                      rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(n_r), [_truncate(str(class_names[int(r)])) for r in matrix.index])
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
        _save(fig, path)


def _example_caption(example: dict[str, Any]) -> tuple[str, bool]:
    """Caption of one example and whether the attack succeeded.

    Success means the attacked prediction is the target and the clean prediction was not (the
    `changed_to` outcome of typoattack.analysis.metrics).
    """
    success = example["attacked_pred"] == example["target_name"] and example["clean_pred"] != example["target_name"]
    mark = "✓ attack succeeded" if success else "✗ attack failed"
    caption = (f"true: {_truncate(str(example['true_name']), 24)}\n"
               f"clean: {_truncate(str(example['clean_pred']), 24)}\n"
               f"attacked: {_truncate(str(example['attacked_pred']), 24)}\n{mark}")
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
    by_word: dict[str, list[dict]] = {}
    for ex in examples:
        by_word.setdefault(str(ex["word"]), []).append(ex)
    nrows, ncols = len(by_word), max(len(v) for v in by_word.values())
    size = (EX_W * ncols, EX_H * nrows + EX_TITLE_H)
    with _plain_text():
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
                    ax.set_ylabel(f"“{_truncate(word, 20)}”\n→ {_truncate(str(ex['target_name']), 20)}",
                                  fontsize=10, fontweight="bold")
        fig.suptitle("Attacked images (rows: word → target class)\n"
                     "green frame ✓: attacked prediction is the target and the clean one was not; red frame ✗: otherwise",
                     fontsize=10)
        _save(fig, path, palette=True)


# --------------------------------------------------------------------------------------------
# Leaderboard


def build_leaderboard(per_word: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pretrained): clean and attacked accuracy and ASR, most robust first.

    Columns: `model, pretrained, n_images` (the largest n_images of the model's conditions),
    `clean_top1` (mean of clean_top1 over its rows: the same value on every row), `attacked_top1`
    and `mean_asr` (means over all its conditions: words, fractions, placements, styles), then one
    column `asr@<fraction:g>` per fraction in ascending order (mean ASR over words, placements and
    styles at that fraction; NaN where the model was not run at that fraction). Sorted by ascending
    mean_asr, ties by descending clean_top1, then by model and pretrained.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).

    Returns:
        The leaderboard; an empty DataFrame with the base columns when `per_word` is empty.

    Raises:
        ValueError: `per_word` lacks a needed column.
    """
    required = _REQUIRED["build_leaderboard"]
    missing = [c for c in required if c not in per_word.columns]
    if missing:
        raise ValueError(f"build_leaderboard: the per-word table lacks the column(s) {', '.join(missing)}")
    if per_word.empty:
        return pd.DataFrame(columns=_LEADERBOARD_BASE)
    fractions = sorted(per_word["fraction"].unique())
    rows = []
    for keys, g in _groups(per_word, ["model", "pretrained"]):
        row: dict[str, Any] = {
            "model": keys["model"], "pretrained": keys["pretrained"],
            "n_images": int(g["n_images"].max()),
            "clean_top1": float(g["clean_top1"].mean()),
            "attacked_top1": float(g["attacked_top1"].mean()),
            "mean_asr": float(g["asr"].mean()),
        }
        for f in fractions:
            at = g.loc[g["fraction"] == f, "asr"]
            row[f"asr@{f:g}"] = float(at.mean()) if len(at) else np.nan
        rows.append(row)
    board = pd.DataFrame(rows)
    board = board.sort_values(["mean_asr", "clean_top1", "model", "pretrained"],
                              ascending=[True, False, True, True], kind="stable", na_position="last")
    board["n_images"] = board["n_images"].astype(np.int64)
    return board.reset_index(drop=True)


def _leaderboard_cells(leaderboard: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the leaderboard (percentages with one decimal)."""
    asr_cols = [c for c in leaderboard.columns if str(c).startswith("asr@")]
    header = ["rank", "model", "pretrained", "n images", "clean top-1", "attacked top-1", "mean ASR"]
    header += [f"ASR @ {c[4:]}" for c in asr_cols]
    cells = []
    for rank, r in enumerate(leaderboard.to_dict("records"), start=1):
        pretrained = "" if _is_missing(r["pretrained"]) else str(r["pretrained"])
        cells.append([str(rank), str(r["model"]), pretrained, str(int(r["n_images"])), _pct(r["clean_top1"]),
                      _pct(r["attacked_top1"]), _pct(r["mean_asr"])] + [_pct(r[c]) for c in asr_cols])
    return header, cells


def _md_cell(text: str) -> str:
    """Escape a Markdown table cell (pipes)."""
    return text.replace("|", "\\|")


def format_leaderboard_markdown(leaderboard: pd.DataFrame) -> str:
    """Render the leaderboard as a Markdown table (rank first, percentages with one decimal).

    Args:
        leaderboard: The output of build_leaderboard.

    Returns:
        The table with a trailing newline; only the header when the leaderboard is empty.
    """
    header, cells = _leaderboard_cells(leaderboard)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Report


def _per_word_display(per_word: pd.DataFrame) -> pd.DataFrame:
    """The per-word table prepared for format_per_word_markdown.

    Pipes in text cells are escaped for Markdown, and varying style columns are appended to the
    placement (`paper8 · fill=red`) so rows that differ only by style stay distinguishable.
    """
    shown = per_word.copy()
    styles = _varying_styles(per_word)
    if styles:
        shown["placement"] = [
            f"{p} · {_style_text(dict(zip(styles, vals)), styles)}"
            for p, *vals in zip(shown["placement"], *(shown[c] for c in styles))
        ]
    for col in ("model", "pretrained", "word", "target_name", "placement"):
        shown[col] = ["" if _is_missing(v) else str(v) for v in shown[col]]  # format_per_word_markdown escapes "|"
    return shown[PER_WORD_COLUMNS]


_PIPE_SPLIT = re.compile(r"(?<!\\)\|")


def _markdown_table_cells(md: str) -> tuple[list[str], list[list[str]]]:
    """Parse a pipe table (header, separator, rows) into header and row cells (pipes unescaped)."""
    lines = [ln.strip() for ln in md.strip().splitlines() if ln.strip()]

    def split(line: str) -> list[str]:
        parts = _PIPE_SPLIT.split(line)
        return [p.strip().replace("\\|", "|") for p in parts[1:-1]]

    return split(lines[0]), [split(ln) for ln in lines[2:]]


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


def _untrained_models(per_word: pd.DataFrame, run_infos: Sequence[dict]) -> list[str]:
    """Labels of models with random weights (pretrained `seed:N`) in the table or the run infos."""
    found: dict[str, None] = {}
    if {"model", "pretrained"} <= set(per_word.columns):
        for m, p in per_word[["model", "pretrained"]].drop_duplicates().itertuples(index=False):
            if not _is_missing(p) and str(p).startswith("seed:"):
                found[_model_label(m, p)] = None
    for info in run_infos:
        for m, p in _run_models(info):
            if p.startswith("seed:"):
                found[_model_label(m, p)] = None
    return list(found)


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


def _warning_text(models: Sequence[str]) -> str:
    """The untrained-model warning for `models`."""
    return _UNTRAINED_WARNING.format(models=", ".join(models), verb="has" if len(models) == 1 else "have")


def _run_facts(info: dict) -> list[tuple[str, str]]:
    """(label, value) lines summarising one run.json."""
    facts: list[tuple[str, str]] = []
    config = info.get("config") or {}
    if config.get("out"):
        facts.append(("output folder", str(config["out"])))
    facts.append(("complete", "yes" if info.get("complete") else "no"))
    facts.append(("device", str(info.get("device", "unknown"))))
    if "n_images_selected" in info:
        facts.append(("images selected", str(info["n_images_selected"])))
    for m in info.get("models") or []:
        if isinstance(m, dict):
            label = _model_label(m.get("name", "?"), m.get("pretrained"))
            n = m.get("n_images", "?")
            skipped = m.get("n_skipped")
            facts.append((f"images evaluated ({label})", f"{n}" + (f" ({skipped} skipped)" if skipped else "")))
    if info.get("seed") is not None:
        facts.append(("seed", str(info["seed"])))
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
    names = [_model_label(m, p) for m, p in _run_models(info)]
    where = f" ({config['out']})" if config.get("out") else ""
    return f"Run {index}: {', '.join(names) or 'unknown model'}{where}"


def write_report(out_dir: Path, per_word: pd.DataFrame, leaderboard: pd.DataFrame, figures: list[Path],
                 run_infos: list[dict], title: str = "typoattack report") -> tuple[Path, Path]:
    """Write report.md and a self-contained report.html into `out_dir`.

    Both hold the same content: a warning when a model is untrained (pretrained `seed:N`), the
    leaderboard, every figure, the per-word table (format_per_word_markdown; varying style columns
    are appended to the placement), and one section per run with its device, image counts,
    versions, a bold untrained-model warning where it applies, and its config as a JSON block.
    report.md links the figures by their path relative to `out_dir`; report.html embeds them as
    base64 PNG data URIs, renders tables as HTML tables and escapes every string.

    Args:
        out_dir: The folder to write into (created if missing).
        per_word: The per-word table (may be empty).
        leaderboard: The output of build_leaderboard.
        figures: PNG files to include, in order.
        run_infos: run.json contents of the runs the tables come from.
        title: The report title.

    Returns:
        (path of report.md, path of report.html).

    Raises:
        FileNotFoundError: A figure file does not exist.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [Path(f) for f in figures]
    for f in figures:
        if not f.is_file():
            raise FileNotFoundError(f"write_report: figure {f} does not exist")
    untrained = _untrained_models(per_word, run_infos)

    md: list[str] = [f"# {title}", ""]
    body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    if untrained:
        warn = _warning_text(untrained)
        md += [f"**⚠ {warn}**", ""]
        body.append(f'<p class="warn"><strong>⚠ {html.escape(warn)}</strong></p>')

    md += ["## Leaderboard", "", "Most robust first (lowest mean attack success rate). ASR: attack success "
           "rate (clean prediction not the target, attacked prediction the target); attacked top-1 and ASR are "
           "means over words, placements and fractions.", ""]
    body += ["<h2>Leaderboard</h2>", "<p>Most robust first (lowest mean attack success rate). ASR: attack success "
             "rate (clean prediction not the target, attacked prediction the target); attacked top-1 and ASR are "
             "means over words, placements and fractions.</p>"]
    if leaderboard.empty:
        md += ["No attacked conditions.", ""]
        body.append("<p>No attacked conditions.</p>")
    else:
        md += [format_leaderboard_markdown(leaderboard)]
        header, cells = _leaderboard_cells(leaderboard)
        body.append(_html_table(header, cells, "leaderboard"))

    if figures:
        md += ["## Figures", ""]
        body.append("<h2>Figures</h2>")
        for f in figures:
            rel = Path(os.path.relpath(f.resolve(), out_dir.resolve())).as_posix()
            md += [f"![{f.stem}]({rel})", ""]
            data = base64.b64encode(f.read_bytes()).decode("ascii")
            body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(f.stem)}">'
                        f"<figcaption>{html.escape(f.name)}</figcaption></figure>")

    md += ["## Per-word results", ""]
    body.append("<h2>Per-word results</h2>")
    if per_word.empty:
        md += ["No attacked conditions.", ""]
        body.append("<p>No attacked conditions.</p>")
    else:
        table_md = format_per_word_markdown(_per_word_display(per_word))
        md += [table_md]
        header, cells = _markdown_table_cells(table_md)
        body.append(_html_table(header, cells, "per-word"))

    if run_infos:
        md += ["## Runs", ""]
        body.append("<h2>Runs</h2>")
    for index, info in enumerate(run_infos, start=1):
        heading = _run_title(info, index)
        md += [f"### {heading}", ""]
        body.append(f"<h3>{html.escape(heading)}</h3>")
        run_untrained = [_model_label(m, p) for m, p in _run_models(info) if p.startswith("seed:")]
        if run_untrained:
            warn = _warning_text(run_untrained)
            md += [f"**⚠ {warn}**", ""]
            body.append(f'<p class="warn"><strong>⚠ {html.escape(warn)}</strong></p>')
        facts = _run_facts(info)
        md += [f"- {k}: {v}" for k, v in facts] + [""]
        body.append("<ul>" + "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in facts) + "</ul>")
        config_json = json.dumps(info.get("config") or {}, indent=2, sort_keys=True, default=str)
        md += ["Config:", "", "```json", config_json, "```", ""]
        body.append(f"<p>Config:</p><pre><code>{html.escape(config_json)}</code></pre>")

    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_atomic(md_path, "\n".join(md).rstrip("\n") + "\n")
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body) + "\n</body>\n</html>\n"
    )
    write_atomic(html_path, page)
    return md_path, html_path


_CSS = (
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
)
