"""examples.png: attacked images beside their clean image, captioned with the predictions (no model
code; the caller re-renders the images; part of `typoattack.analysis.plots`, whose conventions it
follows)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from typoattack.analysis.figure_style import EX_H, EX_TITLE_H, EX_W, plain_text, save_figure, truncate_label


def _example_caption(example: dict[str, Any]) -> tuple[str, bool]:
    """Caption of one attacked example and whether the attack succeeded.

    Success means the attacked prediction is the target and the clean prediction was not (the
    `changed_to` outcome of typoattack.analysis.metrics).
    """
    success = example["attacked_pred"] == example["target_name"] and example["clean_pred"] != example["target_name"]
    mark = "✓ attack succeeded" if success else "✗ not the target"
    return f"attacked: {truncate_label(str(example['attacked_pred']), 24)}\n{mark}", success


EXAMPLE_KEYS = ["word", "image_id", "condition", "image", "clean_image", "true_name", "clean_pred", "attacked_pred",
                "target_name"]


def plot_examples(examples: list[dict], path: Path) -> None:
    """Plot attacked images beside their clean image: one row per (word, image), one column per condition.

    Rows keep the order of their first example; the first column is the clean image (captioned with
    its true class and the clean prediction), then one column per condition in the order the
    conditions first appear, titled with the condition (`fraction 0.04 · paper8`). Each attacked
    image is captioned with its prediction and a ✓ (green frame) / ✗ (red frame) mark: success
    means the attacked prediction is the target and the clean prediction was not. The row's word
    and target are the y label of its clean image. A row without an example of a condition leaves
    that cell empty.

    Layout: EX_W x EX_H inches per grid cell plus EX_TITLE_H, at DPI.

    Args:
        examples: Dicts with EXAMPLE_KEYS: `word`, `image_id`, `condition` (the column title),
            `image` and `clean_image` (uint8 HxWx3 arrays: the attacked and the clean canvas),
            `true_name`, `clean_pred`, `attacked_pred`, `target_name` (class names).
        path: The PNG file to write.

    Raises:
        ValueError: `examples` is empty, an example lacks a key, or an image is not uint8 HxWx3.
    """
    _check_examples(examples)
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    conditions: dict[str, None] = {}
    for ex in examples:
        rows.setdefault((str(ex["word"]), str(ex["image_id"])), {})[str(ex["condition"])] = ex
        conditions.setdefault(str(ex["condition"]), None)
    columns = list(conditions)
    nrows, ncols = len(rows), 1 + len(columns)
    size = (EX_W * ncols, EX_H * nrows + EX_TITLE_H)
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, layout="constrained")
        for r, ((word, _), by_condition) in enumerate(rows.items()):
            first = next(iter(by_condition.values()))
            _draw_example(axes[r, 0], first["clean_image"], "clean image",
                          f"true: {truncate_label(str(first['true_name']), 24)}\n"
                          f"clean: {truncate_label(str(first['clean_pred']), 24)}", "0.6")
            axes[r, 0].set_ylabel(f"“{truncate_label(word, 20)}”\n→ {truncate_label(str(first['target_name']), 20)}",
                                  fontsize=10, fontweight="bold")
            for c, condition in enumerate(columns, start=1):
                ex = by_condition.get(condition)
                if ex is None:
                    axes[r, c].set_visible(False)
                    continue
                caption, success = _example_caption(ex)
                _draw_example(axes[r, c], ex["image"], condition, caption, "#1e8449" if success else "#c0392b")
        fig.suptitle("Clean and attacked images (rows: word → target class, one image each; columns: "
                     "fraction · placement)\ngreen frame ✓: attacked prediction is the target and the clean one "
                     "was not; red frame ✗: otherwise", fontsize=10)
        save_figure(fig, path, palette=True)


def _draw_example(ax: Any, image: np.ndarray, title: str, caption: str, frame: str) -> None:
    """One image of the examples grid, with a title, a caption below and a coloured frame."""
    ax.imshow(np.asarray(image), interpolation="lanczos")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(2.5)
    ax.set_title(truncate_label(title, 34), fontsize=8)
    ax.set_xlabel(caption, fontsize=8, color="black", loc="left", linespacing=1.3)
    ax.xaxis.label.set_horizontalalignment("left")


def _check_examples(examples: list[dict]) -> None:
    """Raise ValueError when there is no example, one lacks a key, or an image is not uint8 HxWx3."""
    if not examples:
        raise ValueError("plot_examples: no examples given; there is nothing to plot")
    for i, ex in enumerate(examples):
        missing = [k for k in EXAMPLE_KEYS if k not in ex]
        if missing:
            raise ValueError(f"plot_examples: example {i} lacks the key(s) {', '.join(missing)}")
        for key in ("image", "clean_image"):
            img = np.asarray(ex[key])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise ValueError(f"plot_examples: example {i} {key} must be a uint8 HxWx3 array, "
                                 f"got dtype {img.dtype} and shape {img.shape}")
