"""What `typoattack vlm` shows: the end-of-run table for the terminal (80 columns), the attack-rate figures
(against the pixel fraction per prompt for synthetic attacks, per prompt and variant for real datasets; safe
prompts beside plain ones) and the report page over several vlm runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from typoattack.analysis.figure_style import (
    ASR_VS_FRACTION_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, TITLE_H, get_colors, plain_text, save_figure,
    truncate_label,
)
from typoattack.analysis.labels import format_percent, format_style, list_varying_styles
from typoattack.analysis.metrics import wilson_interval
from typoattack.analysis.report import (
    ReportBlock, build_table_block, list_run_blocks, write_csv, write_report_pages,
)
from typoattack.engine.rundir import RunInfo, load_records
from typoattack.engine.task import ReportPart
from typoattack.errors import OutputError
from typoattack.progress import ProgressReporter
from typoattack.tasks.vlm.tables import (
    GROUP_KEYS, REAL_WORD_KEYS, SYNTHETIC_WORD_KEYS, build_per_word, build_summary, get_summary_keys, is_synthetic,
    write_vlm_tables,
)

SYNTHETIC_FIGURE = "vlm_attack_rate.png"
REAL_FIGURE = "vlm_real_attack_rate.png"
SUMMARY_HEADER = ["model", "scoring", "prompt", "images", "n", "object [95% CI]", "attack [95% CI]", "unclear",
                  "order bias"]
_NOTE = ("Each image is asked SCAM's question with option (a) and (b) the true object's name and the attack's target "
         "name, in both orders unless the run chose one. object: share of answers choosing the object; attack: share "
         "choosing the attack (95% Wilson intervals over image x order); unclear: generated answers SCAM's parser "
         "cannot read (none with likelihood scoring); order bias: attack rate with the attack as option (a) minus "
         "with it as option (b), in percentage points. Safe prompts (SCAM's 5 and 7) warn the model about text in "
         "the image. Synthetic attacks: 'clean' is the same question on the image without text.")


def _short(name: str, width: int) -> str:
    """`name` cut to `width` characters, keeping its end (the folder or repository name)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _prompt_label(row: dict[str, Any]) -> str:
    return f"{row['prompt_id']} safe" if bool(row["safe_prompt"]) else str(row["prompt_id"])


def _condition_label(row: dict[str, Any], styles: Sequence[str]) -> str:
    """`clean`, `0.07 paper8` (with the varying style), or the dataset variant."""
    if "variant" in row and isinstance(row["variant"], str):
        return row["variant"]
    if float(row["fraction"]) == 0:
        return "clean"
    label = f"{float(row['fraction']):g} {row['placement']}"
    return f"{label} {format_style(row, styles)}" if styles else label


def _styles(summary: pd.DataFrame) -> list[str]:
    if "fraction" not in summary.columns:
        return []
    return list_varying_styles(summary[summary["fraction"].fillna(0) > 0])


def _bias(value: Any) -> str:
    return "n/a" if pd.isna(value) else f"{100 * float(value):+.1f} pp"


def _with_ci(row: dict[str, Any], name: str) -> str:
    return f"{format_percent(row[name])} [{100 * row[name + '_ci_low']:.1f}–{100 * row[name + '_ci_high']:.1f}]"


def build_summary_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text) of a vlm summary (one row per model, scoring, prompt and condition)."""
    styles = _styles(summary)
    rows = [[str(r["model"]), str(r["scoring"]), _prompt_label(r), _condition_label(r, styles), str(int(r["n"])),
             _with_ci(r, "object_acc"), _with_ci(r, "attack_rate"), format_percent(r["unclear_rate"]),
             _bias(r["order_bias"])] for r in summary.to_dict("records")]
    return SUMMARY_HEADER, rows


def build_summary_rich_tables(summary: pd.DataFrame, full: bool = False) -> list[RenderableType]:
    """The summary for the terminal: one table per model and scoring, with each prompt under each condition
    (clean, fraction and placement, or variant): the share of answers choosing the object and the attack,
    unclear answers (generate scoring) and the order bias; each at most 80 columns wide. `full`: one table with
    every column and the 95% intervals."""
    if full:
        header, cells = build_summary_cells(summary)
        table = Table(title="Vision-language models: which option each image was read as", box=box.SIMPLE_HEAD)
        for name in header:
            table.add_column(name, justify="left" if name in ("model", "scoring", "prompt", "images") else "right")
        for row in cells:
            table.add_row(*row)
        return [table]
    styles = _styles(summary)
    tables = []
    for (model, scoring), rows in summary.groupby(["model", "scoring"], sort=False):
        generate = scoring == "generate"
        title = Text(f"{_short(str(model), 64)}: {scoring} scoring", style="bold", no_wrap=True, overflow="ellipsis")
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for name, justify in (("prompt", "left"), ("images", "left"), ("n", "right"), ("object", "right"),
                              ("attack", "right"), *([("unclear", "right")] if generate else []),
                              ("order bias", "right")):
            table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",
                             max_width=24 if name == "images" else None)
        for r in rows.to_dict("records"):
            table.add_row(_prompt_label(r), _condition_label(r, styles), str(int(r["n"])),
                          format_percent(r["object_acc"]), format_percent(r["attack_rate"]),
                          *([format_percent(r["unclear_rate"])] if generate else []), _bias(r["order_bias"]))
        tables.append(Group(title, table))
    return tables


def _pool(summary: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Summary rows pooled over the columns not in `keys`: attack rate from the summed counts, with its 95%
    Wilson interval."""
    frame = summary.assign(n_attack=np.rint(summary["attack_rate"] * summary["n"]).astype(np.int64))
    pooled = frame.groupby(keys, sort=False, dropna=False).agg(
        n=("n", "sum"), n_attack=("n_attack", "sum")).reset_index()
    pooled["attack_rate"] = pooled["n_attack"] / pooled["n"]
    pooled["low"], pooled["high"] = wilson_interval(pooled["n_attack"].to_numpy(), pooled["n"].to_numpy())
    return pooled


def _order_prompts(rows: pd.DataFrame) -> list[tuple[str, bool]]:
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
    prompts = _order_prompts(summary)
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
            prompts = _order_prompts(mine)
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


def _prompt_cells(infos: Sequence[dict[str, Any]]) -> list[list[str]]:
    seen: dict[str, list[str]] = {}
    for info in infos:
        for p in info.get("prompts", []):
            seen.setdefault(p["id"], [p["id"], "yes" if p["safe"] else "", p["text"].replace("\n", " / ")])
    return list(seen.values())


def write_vlm_report_page(run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                          notes: Sequence[str], progress: ProgressReporter | None = None) -> ReportPart:
    """Rewrite each vlm run's tables from its records, then write into `out` the summary and per-word tables
    over all runs (vlm_summary.csv, vlm_per_word.csv; synthetic and real runs each their own rows), the
    figures and `{stem}.md` / `{stem}.html`.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model, scoring, prompt and images.
    """
    kinds: dict[bool, list[pd.DataFrame]] = {}
    for d, info in zip(run_dirs, infos):
        records = load_records(d, info)
        write_vlm_tables(records, Path(d))
        kinds.setdefault(is_synthetic(records), []).append(records)
    out.mkdir(parents=True, exist_ok=True)
    summaries, per_words, figures = [], [], []
    for synthetic, frames in sorted(kinds.items(), reverse=True):
        records = pd.concat(frames, ignore_index=True)
        keys = [*GROUP_KEYS, "order", "image_id", *(SYNTHETIC_WORD_KEYS if synthetic else REAL_WORD_KEYS)]
        if records.duplicated(keys).any():
            raise OutputError("two of the vlm runs hold the same model, scoring, prompt and images; report runs of "
                              "different models, prompts or inputs")
        summary = build_summary(records, get_summary_keys(records))
        summaries.append(summary)
        per_words.append(build_per_word(records))
        figure = out / (SYNTHETIC_FIGURE if synthetic else REAL_FIGURE)
        if synthetic and (summary["fraction"] > 0).any():
            plot_attack_rate_vs_fraction(summary, figure)
            figures.append(figure)
        elif not synthetic:
            plot_attack_rate_by_prompt(summary, figure)
            figures.append(figure)
    summary = pd.concat(summaries, ignore_index=True)
    write_csv(summary, out / "vlm_summary.csv")
    write_csv(pd.concat(per_words, ignore_index=True), out / "vlm_per_word.csv")
    raw = [i.to_dict() for i in infos]
    title = "typoattack report: vision-language models"
    blocks = [ReportBlock("h1", title), *(ReportBlock("p", n) for n in notes),
              ReportBlock("h2", "Answers per prompt and condition"), ReportBlock("p", _NOTE),
              build_table_block(*build_summary_cells(summary), "per-word"),
              ReportBlock("h2", "Prompts"), build_table_block(["id", "safe", "text"], _prompt_cells(raw), "prompts")]
    if figures:
        blocks += [ReportBlock("h2", "Figures"), *(ReportBlock("figure", path=f) for f in figures)]
    blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(raw, start=1):
        blocks += list_run_blocks(info, index)
    _, html_path = write_report_pages(blocks, out, stem, title)
    return ReportPart(html_path, summary)

