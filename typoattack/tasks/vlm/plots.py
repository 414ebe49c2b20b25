"""The vlm figures: the attack rate against the pixel fraction per prompt (synthetic attacks) and per
prompt and dataset variant (real datasets), safe prompts beside plain ones (no model code)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.figure_style import (
    ASR_VS_FRACTION_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, TITLE_H, get_colors, plain_text, save_figure,
    truncate_label,
)
from typoattack.analysis.metrics import wilson_interval
from typoattack.tasks.vlm.tables import GROUP_KEYS


def _pool(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Summary rows pooled over the columns not in `keys`: attack rate from the summed counts, with its 95%
    Wilson interval."""
    frame = summary.assign(n_attack=np.rint(summary["attack_rate"] * summary["n"]).astype(np.int64))
    pooled = frame.groupby(keys, sort=False, dropna=False).agg(
        n=("n", "sum"), n_attack=("n_attack", "sum")).reset_index()
    pooled["attack_rate"] = pooled["n_attack"] / pooled["n"]
    pooled["low"], pooled["high"] = wilson_interval(pooled["n_attack"].to_numpy(), pooled["n"].to_numpy())
    return pooled


def order_prompts(rows: pd.DataFrame) -> list[tuple[str, bool]]:
    """(prompt id, safe) of the rows, plain prompts first, then safe ones, each in run order."""
    prompts = list(dict.fromkeys(zip(rows["prompt_id"], rows["safe_prompt"].astype(bool))))
    return [p for p in prompts if not p[1]] + [p for p in prompts if p[1]]


def _figure(n_panels: int, legend_rows: int) -> tuple[Any, np.ndarray]:
    import matplotlib.pyplot as plt

    ncols = min(n_panels, ASR_VS_FRACTION_MAX_COLS)
    nrows = math.ceil(n_panels / ncols)
    size = (PANEL_W * ncols, PANEL_H * nrows + TITLE_H + LEGEND_ROW_H * legend_rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=size, sharey=True, squeeze=False, layout="constrained")
    for ax in list(axes.flat)[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def plot_attack_rate_vs_fraction(summary: pd.DataFrame, path: Path) -> None:
    """Attack rate (share of answers choosing the attack option, %) against the pixel fraction, one line per
    prompt (safe prompts dashed), the clean control at fraction 0 and 95% Wilson bands; text styles pooled.
    One panel per model, scoring and placement.

    Raises:
        ValueError: The summary has no attacked condition.
    """
    attacked = summary[summary["fraction"] > 0]
    if attacked.empty:
        raise ValueError("plot_attack_rate_vs_fraction: the summary has no attacked condition")
    keys = [*GROUP_KEYS, "placement", "fraction"]
    pooled = _pool(summary, keys)
    panels = list(dict.fromkeys(zip(attacked["model"], attacked["scoring"], attacked["placement"])))
    prompts = order_prompts(summary)
    colors = dict(zip(prompts, get_colors(len(prompts))))
    with plain_text():
        fig, axes = _figure(len(panels), 1)
        for ax, (model, scoring, placement) in zip(axes.flat, panels):
            mine = pooled[(pooled["model"] == model) & (pooled["scoring"] == scoring)
                          & pooled["placement"].isin([placement, ""])]
            for prompt in prompts:
                rows = mine[(mine["prompt_id"] == prompt[0]) & (mine["safe_prompt"].astype(bool) == prompt[1])]
                rows = rows.sort_values("fraction")
                if rows.empty:
                    continue
                x = 100 * rows["fraction"].to_numpy(dtype=float)
                label = f"prompt {prompt[0]}" + (" (safe)" if prompt[1] else "")
                ax.plot(x, 100 * rows["attack_rate"], marker="o", color=colors[prompt],
                        linestyle="--" if prompt[1] else "-", label=label)
                ax.fill_between(x, 100 * rows["low"], 100 * rows["high"], color=colors[prompt], alpha=0.15)
            ax.set_title(f"{truncate_label(str(model), 40)} ({scoring}) — {placement}")
            ax.set_xlabel("pixel fraction (%); 0 = clean control")
            ax.set_ylabel("answers choosing the attack (%)")
            ax.set_ylim(0, 100)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelleft=True)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.suptitle("Vision-language models: attack rate vs pixel fraction\nper prompt (dashed: safe prompts)")
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 5), frameon=False)
        save_figure(fig, path)


def plot_attack_rate_by_prompt(summary: pd.DataFrame, path: Path) -> None:
    """Attack rate (%) per prompt (plain prompts, then safe ones), one bar per dataset variant with its 95%
    Wilson interval. One panel per model, scoring and dataset.

    Raises:
        ValueError: The summary is empty.
    """
    if summary.empty:
        raise ValueError("plot_attack_rate_by_prompt: the summary is empty")
    panels = list(dict.fromkeys(zip(summary["model"], summary["scoring"], summary["dataset"])))
    variants = list(dict.fromkeys(summary["variant"]))
    colors = dict(zip(variants, get_colors(len(variants))))
    width = 0.8 / len(variants)
    with plain_text():
        fig, axes = _figure(len(panels), 1)
        for ax, (model, scoring, dataset) in zip(axes.flat, panels):
            mine = summary[(summary["model"] == model) & (summary["scoring"] == scoring)
                           & (summary["dataset"] == dataset)]
            prompts = order_prompts(mine)
            for v, variant in enumerate(variants):
                rows = mine[mine["variant"] == variant]
                at = {(r["prompt_id"], bool(r["safe_prompt"])): r for r in rows.to_dict("records")}
                present = [p for p in prompts if p in at]
                if not present:
                    continue
                x = np.array([prompts.index(p) for p in present]) + (v - (len(variants) - 1) / 2) * width
                value = np.array([at[p]["attack_rate"] for p in present], dtype=float)
                err = np.vstack([value - [at[p]["attack_rate_ci_low"] for p in present],
                                 np.array([at[p]["attack_rate_ci_high"] for p in present]) - value])
                ax.bar(x, 100 * value, width, yerr=100 * err, capsize=3, color=colors[variant], label=variant)
            ax.set_xticks(range(len(prompts)), [f"{p}\n(safe)" if safe else p for p, safe in prompts])
            ax.set_title(f"{truncate_label(str(model), 40)} ({scoring}) — {dataset}")
            ax.set_xlabel("prompt")
            ax.set_ylabel("answers choosing the attack word (%)")
            ax.set_ylim(0, 100)
            ax.grid(axis="y", alpha=0.3)
            ax.tick_params(labelleft=True)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.suptitle("Vision-language models on real attacks:\nattack rate per prompt (safe prompts right)")
        fig.legend(handles, labels, loc="outside lower center", ncols=min(max(len(labels), 1), 5), frameon=False)
        save_figure(fig, path)
