"""The confusion heatmap: where the attack with one word sent the images (no model code; part of
`typoattack.analysis.plots`, whose conventions it follows)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from typoattack.analysis.figure_style import (
    CONFUSION_REQUIRED, CONF_BASE_H, CONF_BASE_W, CONF_CELL, CONF_ROW, check_table, plain_text, save_figure,
    select_equal, truncate_label,
)
from typoattack.analysis.labels import format_style, get_model_label, iter_groups, list_varying_styles
from typoattack.analysis.metrics import build_class_gains, with_defence
from typoattack.constants import CLEAN_WORD
from typoattack.records import DEFENCE_COLUMN, MODEL_COLUMNS


def plot_confusion(confusion: pd.DataFrame, word: str, class_names: Sequence[str], path: Path,
                   target_index: int | None = None, top_n: int = 10) -> None:
    """Plot where the attack with `word` sent images: a heatmap of condition x predicted class.

    Rows: per model (and defence, when the table holds several) the clean images, then each
    attacked condition of `word` (fraction, placement and the varying styles). Columns: the `top_n`
    predicted classes that gained the most images in some condition over the clean images
    (`metrics.build_class_gains`; ties: class index), then the target class when it is not among
    them (its label in bold red). A cell is the number of images of other true classes predicted as
    that class, annotated (0 left blank): the clean row shows the model's own pull towards a class,
    the rows below what the text added.

    Layout: (CONF_BASE_W + CONF_CELL * n_cols) x (CONF_BASE_H + CONF_ROW * n_rows) inches at DPI.

    Args:
        confusion: The confusion table (`metrics.build_confusion_table`, the clean condition as word "").
        word: The attack word.
        class_names: Class names indexed by class index.
        path: The PNG file to write.
        target_index: The word's target class (marked; added as a column when not among the top).
        top_n: The most predicted classes shown besides the target.

    Raises:
        ValueError: `top_n` < 1, `confusion` lacks a needed column, or holds no attacked cell of `word`.
    """
    if top_n < 1:
        raise ValueError(f"plot_confusion: top_n must be at least 1, got {top_n}")
    check_table(confusion, "plot_confusion", CONFUSION_REQUIRED, "confusion table")
    confusion = with_defence(confusion)
    attacked = confusion[(confusion["word"] == word) & (confusion["word"] != CLEAN_WORD)]
    if attacked.empty:
        present = sorted(set(confusion["word"]) - {CLEAN_WORD})
        shown = ", ".join(repr(w) for w in present[:12]) + (" …" if len(present) > 12 else "")
        raise ValueError(f"plot_confusion: the confusion table holds no attacked cell of the word {word!r}"
                         f" (words present: {shown or 'none'})")
    clean = confusion[confusion["word"] == CLEAN_WORD]
    gains = build_class_gains(pd.concat([clean, attacked], ignore_index=True))
    matrix, row_labels = _build_destination_matrix(clean, attacked, gains, top_n, target_index)
    data = matrix.to_numpy(dtype=float)
    n_r, n_c = data.shape
    size = (CONF_BASE_W + CONF_CELL * n_c, CONF_BASE_H + CONF_ROW * n_r)
    target_name = class_names[target_index] if target_index is not None else "?"
    best = gains.loc[gains["gain"].idxmax()] if not gains.empty else None
    with plain_text():
        fig, ax = plt.subplots(figsize=size, layout="constrained")
        vmax = max(float(np.nanmax(data)) if data.size else 0.0, 1.0)
        im = ax.imshow(np.where(data > 0, data, np.nan), cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
        ax.set_facecolor("#f7f7f7")
        for i in range(n_r):
            for j in range(n_c):
                if data[i, j] > 0:
                    ax.text(j, i, f"{int(data[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > 0.6 * vmax else "black")
        ax.set_xticks(np.arange(n_c), [truncate_label(str(class_names[int(c)])) for c in matrix.columns],
                      rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(np.arange(n_r), row_labels)
        for tick, c in zip(ax.get_xticklabels(), matrix.columns):
            if target_index is not None and int(c) == int(target_index):
                tick.set_color("#c0392b")
                tick.set_fontweight("bold")
        for i, label in enumerate(row_labels):
            if label.endswith("clean images") and i:
                ax.axhline(i - 0.5, color="0.4", lw=0.8)
        ax.set_xlabel("predicted class (red: the target class)")
        ax.set_ylabel("condition (fraction · placement)")
        summary = "" if best is None else (
            f"\nlargest gain: +{int(best['gain'])} images ({100 * float(best['gain_share']):.1f}% of the condition) "
            f"to {truncate_label(str(class_names[int(best['pred_index'])]), 30)} at fraction {float(best['fraction']):g} · "
            f"{best['placement']}")
        ax.set_title(f"Where “{word}” → {target_name} sent the images{summary}\n"
                     "cell: images of other true classes predicted as the class (blank: none; clean row: without text)",
                     fontsize=9)
        cbar = fig.colorbar(im, ax=ax, shrink=0.8)
        cbar.set_label("images")
        save_figure(fig, path)


def _build_destination_matrix(clean: pd.DataFrame, attacked: pd.DataFrame, gains: pd.DataFrame, top_n: int,
                              target_index: int | None) -> tuple[pd.DataFrame, list[str]]:
    """Rows (clean, then each condition, per model and defence) x the chosen predicted classes: the
    images of other true classes predicted as each class; and the row labels."""
    best = gains.groupby("pred_index", sort=False)["gain"].max().reset_index()
    best = best.sort_values(["gain", "pred_index"], ascending=[False, True], kind="stable")
    columns = [int(c) for c in best["pred_index"].iloc[:top_n]]
    if target_index is not None and int(target_index) not in columns:
        columns.append(int(target_index))
    styles = list_varying_styles(attacked)
    groups = list(iter_groups(attacked, [*MODEL_COLUMNS, DEFENCE_COLUMN]))
    several_models = len({(k["model"], str(k["pretrained"])) for k, _ in groups}) > 1
    several_defences = len({k[DEFENCE_COLUMN] for k, _ in groups}) > 1
    values, labels = [], []
    for keys, rows in groups:
        prefix = ""
        if several_models:
            prefix += get_model_label(keys["model"], keys["pretrained"]) + " · "
        if several_defences:
            prefix += f"{keys[DEFENCE_COLUMN]} · "
        mine = clean[(clean["model"] == keys["model"]) & select_equal(clean["pretrained"], keys["pretrained"])
                     & (clean[DEFENCE_COLUMN] == keys[DEFENCE_COLUMN])]
        parts = [("clean images", mine)]
        for ckeys, crows in iter_groups(rows, ["fraction", "placement", *styles]):
            label = f"{ckeys['fraction']:g} · {ckeys['placement']}"
            if styles:
                label += f" · {format_style(ckeys, styles)}"
            parts.append((label, crows))
        for label, cells in parts:
            off = cells[cells["true_index"] != cells["pred_index"]]
            into = off.groupby("pred_index")["count"].sum()
            values.append([int(into.get(c, 0)) for c in columns])
            labels.append(truncate_label(prefix + label, 48))
    return pd.DataFrame(values, columns=columns), labels
