"""What `typoattack vlm` shows: the end-of-run table for the terminal (80 columns), the attack-rate figures
(against the pixel fraction per prompt for synthetic attacks, per prompt and variant for real datasets; safe
prompts beside plain ones) and the report page over several vlm runs: the summary, each model's attack words
ranked by ASR, the figures and a few re-rendered examples with the questions asked and the answers.

Every table of the page is a query over the runs' records (`typoattack.tasks.vlm.tables`), and the examples are
found with filtered queries: no run's records are loaded whole."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from typoattack.analysis import plots
from typoattack.analysis.figure_style import (
    ASR_VS_FRACTION_MAX_COLS, LEGEND_ROW_H, PANEL_H, PANEL_W, TITLE_H, get_colors, plain_text, save_figure,
    truncate_label,
)
from typoattack.analysis.examples import (
    EXAMPLE_MAX_CONDITIONS, format_condition, select_example_conditions, select_example_images,
)
from typoattack.analysis.labels import format_percent, format_style, is_missing, list_varying_styles
from typoattack.analysis.metrics import RANKING_SIZE, wilson_interval
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.analysis.report import (
    ReportBlock, add_optional_figure, build_table_block, list_run_blocks, write_csv, write_report_pages,
)
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.backends.registry import get_backend
from typoattack.config.types import DataSpec, RenderStyle
from typoattack.constants import CLEAN_WORD
from typoattack.data.sources import open_image_source
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.errors import DataError, OutputError
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.records import STYLE_COLUMNS, Condition
from typoattack.tasks.vlm.answers import Choice, Scoring
from typoattack.tasks.vlm.prompts import OptionOrder, PromptTemplate, build_question
from typoattack.tasks.vlm.tables import (
    GROUP_KEYS, PER_WORD_CSV, REAL_WORD_KEYS, SYNTHETIC_WORD_KEYS, VlmTables, compute_vlm_tables, is_synthetic,
    save_vlm_tables,
)

SYNTHETIC_FIGURE = "vlm_attack_rate.png"
REAL_FIGURE = "vlm_real_attack_rate.png"
EXAMPLES_FIGURE = "vlm_examples.png"
EXAMPLE_WORDS = 4
"""vlm_examples.png shows this many words (rows): the first model's words with the highest ASR."""
EXAMPLE_POOL = 10_000
"""The examples' image of a word is drawn among at most this many candidate image ids (the first by id)."""
CANVAS_BACKEND = "open_clip"
"""The backend whose default transform makes a vlm run's canvases (`task.OPEN_CLIP`)."""
MODEL_KEYS = ["model", "weights_id", "scoring"]
"""What the per-word section groups its tables by (one heading each)."""
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


# --- per-word section ---------------------------------------------------------------------------------------------

def rank_attack_words(counts: pd.DataFrame, synthetic: bool) -> pd.DataFrame:
    """Each model's attack words ranked by how often they win, prompts, conditions and orders pooled.

    Synthetic input: one row per (model, weights_id, scoring, word, target_index) with `n` pairs with a clean
    control, `k` hits and `rate` the ASR (`tables.finish_per_word`). Real datasets: one row per (model,
    weights_id, scoring, dataset, variant, attack_label) with `n` records, `k` answers choosing the attack word
    and `rate` the attack rate. Both with the rate's 95% Wilson interval (rate_ci_low, rate_ci_high), `rank`
    (1: the highest rate; ties by the unit's columns; no rate, last) and `n_words` (rows of the model).

    Args:
        counts: The counts per_word.csv is finished from (`tables.query_word_counts`).
        synthetic: Whether they are of the synthetic input.

    Returns:
        The rows, models in the order they first appear in the counts, each model's rows in rank order.
    """
    unit = _word_unit(synthetic)
    k_col, n_col = ("n_hit", "n_pairs") if synthetic else ("n_attack", "n")
    names = ["target_name"] if synthetic else []
    columns = [*MODEL_KEYS, *unit, *names, "n", "k", "rate", "rate_ci_low", "rate_ci_high", "rank", "n_words"]
    if counts.empty:
        return pd.DataFrame(columns=columns)
    agg: dict[str, tuple[str, str]] = {"n": (n_col, "sum"), "k": (k_col, "sum")}
    if synthetic:
        agg["target_name"] = ("target_name", "first")
    pooled = counts.groupby([*MODEL_KEYS, *unit], sort=False, dropna=False).agg(**agg).reset_index()
    pooled = _with_rate(pooled)
    pooled["_model"] = pooled.groupby(MODEL_KEYS, sort=False, dropna=False).ngroup()
    pooled = pooled.sort_values(["_model", "rate", *unit], ascending=[True, False, *([True] * len(unit))],
                                kind="stable", na_position="last").reset_index(drop=True)
    by_model = pooled.groupby("_model", sort=False)
    pooled["rank"] = by_model.cumcount() + 1
    pooled["n_words"] = by_model["rank"].transform("size")
    return pooled[columns]


def _word_unit(synthetic: bool) -> list[str]:
    return ["word", "target_index"] if synthetic else ["dataset", "variant", "attack_label"]


def _with_rate(frame: pd.DataFrame) -> pd.DataFrame:
    """`rate` = k / n (NaN where n is 0) with its 95% Wilson interval."""
    n = frame["n"].to_numpy(dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["rate"] = np.where(n > 0, frame["k"].to_numpy(dtype=np.float64) / np.maximum(n, 1), np.nan)
    frame["rate_ci_low"], frame["rate_ci_high"] = wilson_interval(frame["k"].to_numpy(), n)
    return frame


def select_shown_words(ranking: pd.DataFrame, n: int = RANKING_SIZE) -> pd.DataFrame:
    """The ranked rows the report lists: every word of a model with at most 2 n words, else its n highest and n
    lowest."""
    return ranking[(ranking["n_words"] <= 2 * n) | (ranking["rank"] <= n) | (ranking["rank"] > ranking["n_words"] - n)]


def _rate_with_ci(row: dict[str, Any]) -> str:
    if is_missing(row["rate"]):
        return "n/a"
    return f"{format_percent(row['rate'])} [{100 * row['rate_ci_low']:.1f}–{100 * row['rate_ci_high']:.1f}]"


def build_word_blocks(counts: pd.DataFrame, synthetic: bool, table_name: str,
                      n: int = RANKING_SIZE) -> list[ReportBlock]:
    """The per-word section of one input kind: per model (a heading), its words ranked by ASR (synthetic) or
    attack rate (real), every word when few, else the `n` highest and `n` lowest, with one column per prompt
    when the model was asked several. `table_name` is the CSV with every word, condition and prompt."""
    ranking = rank_attack_words(counts, synthetic)
    if ranking.empty:
        return []
    unit = _word_unit(synthetic)
    per_prompt = _with_rate(counts.groupby([*MODEL_KEYS, *unit, "prompt_id", "safe_prompt"], sort=False,
                                           dropna=False).agg(n=("n_pairs" if synthetic else "n", "sum"),
                                                             k=("n_hit" if synthetic else "n_attack", "sum"))
                            .reset_index())
    rates = {tuple(r[c] for c in [*MODEL_KEYS, *unit, "prompt_id", "safe_prompt"]): r["rate"]
             for r in per_prompt.to_dict("records")}
    metric = "ASR" if synthetic else "attack rate"
    if synthetic:
        note = ("ASR (attack success rate) of each attack word: among the questions whose answer on the clean image "
                "is not the word's target, the share answered with the target once the word is on the image, pooled "
                "over the word's fractions, placements, styles, prompts and option orders (95% Wilson interval; one "
                "column per prompt when several were asked).")
    else:
        note = ("Attack rate of each attack word of the photos: the share of answers choosing the attack word, pooled "
                "over prompts and option orders (95% Wilson interval; one column per prompt when several were asked).")
    many = int(ranking["n_words"].max()) > 2 * n
    note += (f" Models with more than {2 * n} words: the {n} words with the highest and the {n} with the lowest "
             f"{metric}." if many else " Every word, highest first.")
    blocks = [ReportBlock("p", f"{note} {table_name} has every word, condition and prompt.")]
    shown = select_shown_words(ranking, n)
    for (model, weights, scoring), rows in shown.groupby(MODEL_KEYS, sort=False, dropna=False):
        prompts = _order_prompts(per_prompt[(per_prompt["model"] == model) & (per_prompt["weights_id"] == weights)
                                            & (per_prompt["scoring"] == scoring)])
        prompt_columns = ([f"prompt {p}" + (" (safe)" if safe else "") for p, safe in prompts] if len(prompts) > 1
                          else [])
        if synthetic:
            header = ["rank", "word", "target", "pairs", f"{metric} [95% CI]", *prompt_columns]
        else:
            header = ["rank", "dataset", "variant", "attack word", "n", f"{metric} [95% CI]", *prompt_columns]
        cells, last = [], 0
        for r in rows.to_dict("records"):
            if r["rank"] > last + 1:
                cells.append(["…", f"{r['rank'] - last - 1} more", *[""] * (len(header) - 2)])
            last = r["rank"]
            key = tuple(r[c] for c in [*MODEL_KEYS, *unit])
            by_prompt = [format_percent(rates.get((*key, p, safe))) for p, safe in prompts] if prompt_columns else []
            names = [str(r["word"]), str(r["target_name"])] if synthetic else [str(r["dataset"]), str(r["variant"]),
                                                                                str(r["attack_label"])]
            cells.append([str(r["rank"]), *names, str(int(r["n"])), _rate_with_ci(r), *by_prompt])
        n_words = int(rows["n_words"].iloc[0])
        blocks += [ReportBlock("h3", f"{model} — {scoring} scoring" + ("" if synthetic else ", real photos")),
                   ReportBlock("p", f"weights {weights}; {n_words} word{'s' if n_words != 1 else ''}"
                                    + (f", {len(rows)} shown" if len(rows) < n_words else "")),
                   build_table_block(header, cells, "per-word")]
    return blocks


# --- examples ---------------------------------------------------------------------------------------------------

@dataclass
class ExampleQuestion:
    """The records of one image shown in vlm_examples.png: its clean control and its attacked records under the
    shown conditions (one model, scoring, prompt and option order).

    Attributes:
        word: The attack word.
        image_id: The image.
        clean: The clean control record.
        attacked: Per shown condition (a row of its columns), the attacked record.
    """

    word: str
    image_id: str
    clean: dict[str, Any]
    attacked: list[tuple[dict[str, Any], dict[str, Any]]]


def select_example_image(candidates: Sequence[str], word: str, seed: int, used: set[str]) -> str | None:
    """The image shown for `word`, drawn as eval's examples.png draws it (`select_example_images`, one image)."""
    chosen = select_example_images(candidates, word, seed, 1, used)
    return chosen[0] if chosen else None


def _pick_question(records: RecordSet, info: dict[str, Any], run: int,
                   model: str) -> tuple[str, str, bool, str] | None:
    """(scoring, prompt_id, safe_prompt, order) of the examples: the run's first plain prompt (else its first),
    object-first when asked; None when the model has no records in the run."""
    asked = records.frame('SELECT DISTINCT scoring, prompt_id, safe_prompt, "order" FROM records WHERE run = ? '
                          "AND model = ?", [run, model])
    if asked.empty:
        return None
    order_of_prompts = [str(p["id"]) for p in info.get("prompts", [])]
    asked["_prompt"] = [order_of_prompts.index(p) if p in order_of_prompts else len(order_of_prompts)
                        for p in asked["prompt_id"]]
    asked["_order"] = asked["order"] != OptionOrder.OBJECT_FIRST.value
    first = asked.sort_values(["safe_prompt", "_prompt", "prompt_id", "_order", "scoring"], kind="stable").iloc[0]
    return str(first["scoring"]), str(first["prompt_id"]), bool(first["safe_prompt"]), str(first["order"])


def select_example_questions(records: RecordSet, info: dict[str, Any], ranking: pd.DataFrame, run: int = 0,
                             n_words: int = EXAMPLE_WORDS, max_conditions: int = EXAMPLE_MAX_CONDITIONS
                             ) -> list[ExampleQuestion]:
    """The records vlm_examples.png shows, found with filtered queries (never the whole records).

    The run's first model, its first plain prompt and option order object-first (when asked); its `n_words`
    words with the highest ASR (`rank_attack_words`); per word, the conditions of `select_example_conditions`, and
    one image drawn by `select_example_image` (seeded by the run's seed and the word) among the first EXAMPLE_POOL
    image ids (by id) with a clean control and a record under each shown condition.

    Args:
        records: Synthetic-input records (one or several runs).
        info: run.json of the run `run` (its position in `records`).
        ranking: `rank_attack_words` of the records.
        run: Which run of `records` the examples come from.
        n_words: Words (rows of the figure).
        max_conditions: Conditions (columns beside the clean image).
    """
    config = info.get("config") or {}
    models = config.get("models") or []
    if not models:
        return []
    model = str(models[0]["name"])
    picked = _pick_question(records, info, run, model)
    if picked is None:
        return []
    scoring, prompt_id, _, order = picked
    mine = ranking[(ranking["model"] == model) & (ranking["scoring"] == scoring) & ranking["rate"].notna()]
    words = list(dict.fromkeys(zip(mine["word"], mine["target_index"])))[:n_words]
    base = 'run = ? AND model = ? AND scoring = ? AND prompt_id = ? AND "order" = ? AND target_index = ?'
    condition_columns = ["word", "target_index", "fraction", "placement", *STYLE_COLUMNS]
    clean = quote_literal(CLEAN_WORD)
    seed = int(config.get("seed", 0))
    used: set[str] = set()
    questions = []
    for word, target in words:
        params = [run, model, scoring, prompt_id, order, int(target)]
        conditions = records.frame(f"SELECT DISTINCT {_names(condition_columns)} FROM records WHERE {base} "
                                   "AND word = ?",
                                   [*params, word])
        shown = select_example_conditions(conditions, max_conditions)
        if shown.empty:
            continue
        tests, values = [], []
        for row in shown.to_dict("records"):
            tests.append("(" + " AND ".join(f"{quote_name(c)} IS NOT DISTINCT FROM ?" for c in condition_columns[2:])
                         + ")")
            values += [_plain(row[c]) for c in condition_columns[2:]]
        candidates = records.frame(
            f"SELECT image_id FROM records WHERE {base} AND (word = {clean} OR (word = ? AND ({' OR '.join(tests)}))) "
            f"GROUP BY image_id HAVING count(*) FILTER (WHERE word = {clean}) = 1 "
            f"AND count(*) FILTER (WHERE word <> {clean}) = {len(shown)} ORDER BY image_id LIMIT {EXAMPLE_POOL}",
            [*params, word, *values])
        chosen = select_example_image(list(candidates["image_id"]), word, seed, used)
        for image_id in [chosen] if chosen is not None else []:
            used.add(image_id)
            rows = records.frame(f"SELECT * FROM records WHERE {base} AND image_id = ? AND word IN ({clean}, ?)",
                                 [*params, image_id, word]).to_dict("records")
            attacked = []
            for condition in shown.to_dict("records"):
                match = [r for r in rows if r["word"] == word and all(_same(r[c], condition[c])
                                                                     for c in condition_columns[2:])]
                attacked.append((condition, match[0]))
            questions.append(ExampleQuestion(word, image_id, next(r for r in rows if r["word"] == CLEAN_WORD),
                                             attacked))
    return questions


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value DuckDB binds."""
    return value.item() if hasattr(value, "item") else value


def _same(a: Any, b: Any) -> bool:
    return (is_missing(a) and is_missing(b)) or a == b


def _chosen_label(record: dict[str, Any]) -> str:
    """The option a record's answer chose, as its text (`unclear` when the answer could not be read)."""
    if record["choice"] == Choice.OBJECT.value:
        return str(record["object_label"])
    if record["choice"] == Choice.ATTACK.value:
        return str(record["attack_label"])
    return "unclear"


def _answer_cells(record: dict[str, Any]) -> list[str]:
    """(the answer as its option letter and text, its score) of one record."""
    letters = {"object": "a", "attack": "b"} if record["order"] == OptionOrder.OBJECT_FIRST.value else \
        {"object": "b", "attack": "a"}
    choice = str(record["choice"])
    answer = f"({letters[choice]}) {_chosen_label(record)}" if choice in letters else "unclear"
    if record["scoring"] == Scoring.GENERATE.value:
        return [answer, "“" + " ".join(str(record["answer"]).split()) + "”"]
    return [answer, f"log p object {float(record['logp_object']):.2f}, attack {float(record['logp_attack']):.2f}"]


def _question_text(record: dict[str, Any], info: dict[str, Any]) -> str:
    prompts = {str(p["id"]): p for p in info.get("prompts", [])}
    prompt = prompts.get(str(record["prompt_id"]))
    if prompt is None:
        return f"prompt {record['prompt_id']}"
    template = PromptTemplate(str(prompt["id"]), str(prompt["text"]), bool(prompt.get("safe", False)))
    text = build_question(template, str(record["object_label"]), str(record["attack_label"]),
                          OptionOrder(record["order"]))
    return text.replace("\n", " / ")


def render_examples(questions: Sequence[ExampleQuestion], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-render the canvases of the example questions as the run drew them (the source image through the
    canvas transform of the model's canvas size, the attack's mask drawn on it) for `plots.plot_examples`: one
    dict per (word, image, condition), captioned with the option the model chose.

    Raises:
        TypoAttackError: The source images (or an image of the records) cannot be read here.
    """
    config = info["config"]
    models = info.get("models") or [{}]
    if not models[0].get("canvas_size"):
        raise DataError("run.json names no canvas size of the first model")
    size = tuple(int(s) for s in models[0]["canvas_size"])
    # The task's canvas (`task.get_canvas_geometry`): open_clip's default eval transform at the canvas size.
    transform = get_backend(CANVAS_BACKEND).get_default_geometry(size[0]).transform
    source = open_image_source(DataSpec(**config["data"]))
    index = {item.image_id: i for i, item in enumerate(source.items)}
    seed = int(config["seed"])
    styles = [RenderStyle(font=st["font"], fill=tuple(st["fill"]), outline=tuple(st["outline"]),
                          outline_width=st["outline_width"], opacity=st["opacity"]) for st in config.get("styles", [])]
    varying = list_varying_styles(pd.DataFrame([c for q in questions for c, _ in q.attacked]))
    examples = []
    for q in questions:
        if q.image_id not in index:
            raise DataError(f"image {q.image_id} is not in {source.description}")
        try:
            canvas = np.asarray(transform(source.open_image(index[q.image_id])), dtype=np.uint8)
        except OSError as e:
            raise DataError(f"image {q.image_id}: {e}") from None
        for condition, record in q.attacked:
            c = Condition.from_row(condition, styles)
            image, _ = apply_attack(canvas, create_attack_mask(c.word, c.fraction, c.placement, c.style, size),
                                    q.image_id, seed)
            examples.append({"word": q.word, "image_id": q.image_id, "condition": format_condition(condition, varying),
                             "image": image, "clean_image": canvas, "true_name": str(record["object_label"]),
                             "clean_pred": _chosen_label(q.clean), "attacked_pred": _chosen_label(record),
                             "target_name": str(record["attack_label"])})
    return examples


def build_example_table(questions: Sequence[ExampleQuestion], info: dict[str, Any]) -> ReportBlock:
    """The questions of vlm_examples.png and each answer: per image, its clean canvas then each condition."""
    varying = list_varying_styles(pd.DataFrame([c for q in questions for c, _ in q.attacked]))
    generate = any(q.clean["scoring"] == Scoring.GENERATE.value for q in questions)
    header = ["word → target", "image", "canvas", "question", "answer", "generated text" if generate else "score"]
    cells = []
    for q in questions:
        cells.append([f"{q.word} → {q.clean['attack_label']}", q.image_id, "clean", _question_text(q.clean, info),
                      *_answer_cells(q.clean)])
        cells += [["", "", format_condition(c, varying), "", *_answer_cells(r)] for c, r in q.attacked]
    return build_table_block(header, cells, "examples")


def write_examples(records: RecordSet, info: dict[str, Any], ranking: pd.DataFrame, out: Path,
                   log: Callable[[str], None]) -> list[ReportBlock]:
    """The examples section: vlm_examples.png (skipped with a note when the source images cannot be read here)
    and the table of its questions and answers; nothing when no image has a clean control and an attacked record."""
    questions = select_example_questions(records, info, ranking)
    if not questions:
        return []
    first = questions[0].clean
    figures: list[Path] = []
    path = out / EXAMPLES_FIGURE
    add_optional_figure(figures, path, lambda: render_examples(questions, info), plots.plot_examples, log,
                        "the source images")
    prompt = f"prompt {first['prompt_id']}" + (" (safe)" if bool(first["safe_prompt"]) else "")
    blocks = [ReportBlock("h2", "Examples"),
              ReportBlock("p", f"A few images of {first['model']} ({first['scoring']} scoring, {prompt}, option order "
                               f"{first['order']}): the clean canvas and the canvas under up to "
                               f"{EXAMPLE_MAX_CONDITIONS} conditions of each word with the highest ASR, re-rendered "
                               "from the source images as the run drew them, each captioned with the option the model "
                               "chose (green ✓: the word's target, where the clean canvas was not answered so). The "
                               "table gives the question asked and each answer with its score.")]
    if figures:
        blocks.append(ReportBlock("figure", path=path))
    else:
        path.unlink(missing_ok=True)
        blocks.append(ReportBlock("p", f"{EXAMPLES_FIGURE} skipped: the source images of the run cannot be read here "
                                       f"({(info.get('config') or {}).get('data', {}).get('source', '?')})."))
    blocks.append(build_example_table(questions, info))
    return blocks


# --- the page -------------------------------------------------------------------------------------------------------

def check_distinct_runs(records: RecordSet, synthetic: bool) -> None:
    """Raise OutputError when two runs of `records` hold a record of the same question (model, scoring, prompt,
    order, image and condition): first over the runs' distinct questions without images (small), then, only
    where two runs share one, over the records."""
    keys = [*GROUP_KEYS, "order", *(SYNTHETIC_WORD_KEYS if synthetic else REAL_WORD_KEYS)]
    shared = records.scalar(f"SELECT count(*) FROM (SELECT {_names(keys)} FROM (SELECT DISTINCT run, {_names(keys)} "
                            f"FROM records) GROUP BY ALL HAVING count(*) > 1)")
    if shared and records.scalar(f"SELECT count(*) FROM (SELECT {_names([*keys, 'image_id'])} FROM records "
                                 f"GROUP BY ALL HAVING count(*) > 1)"):
        raise OutputError("two of the vlm runs hold the same model, scoring, prompt and images; report runs of "
                          "different models, prompts or inputs")


def _names(columns: Sequence[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)


def write_vlm_report_page(run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                          notes: Sequence[str], progress: ProgressReporter | None = None) -> ReportPart:
    """Rewrite each vlm run's tables from its records (queries), then write into `out` the summary and per-word
    tables over all runs (vlm_summary.csv, vlm_per_word.csv; synthetic and real runs each their own rows), the
    per-word ASR section, the figures, a few re-rendered examples (synthetic input) and `{stem}.md` /
    `{stem}.html`. No run's records are loaded whole: every table and example is a query.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model, scoring, prompt and images.
    """
    progress = progress or NullProgress()
    dirs = [Path(d) for d in run_dirs]
    kinds: dict[bool, list[int]] = {}
    own: dict[int, VlmTables] = {}
    for k, (d, info) in enumerate(zip(dirs, infos)):
        with open_run_records([d], [info]) as records:
            own[k] = compute_vlm_tables(records)
            save_vlm_tables(own[k], d)
            kinds.setdefault(is_synthetic(records), []).append(k)
    out.mkdir(parents=True, exist_ok=True)
    raw = [i.to_dict() for i in infos]
    summaries, per_words, figures, word_blocks, example_blocks = [], [], [], [], []
    for synthetic, members in sorted(kinds.items(), reverse=True):
        with open_run_records([dirs[k] for k in members], [infos[k] for k in members]) as records:
            if len(members) > 1:
                check_distinct_runs(records, synthetic)
                tables = compute_vlm_tables(records)
            else:
                tables = own[members[0]]
            summary = tables.summary
            summaries.append(summary)
            per_words.append(tables.per_word)
            figure = out / (SYNTHETIC_FIGURE if synthetic else REAL_FIGURE)
            if synthetic and (summary["fraction"] > 0).any():
                plot_attack_rate_vs_fraction(summary, figure)
                figures.append(figure)
            elif not synthetic:
                plot_attack_rate_by_prompt(summary, figure)
                figures.append(figure)
            word_blocks += build_word_blocks(tables.word_counts, synthetic, "vlm_per_word.csv (and each run's "
                                             f"{PER_WORD_CSV})")
            if synthetic:
                example_blocks = write_examples(records, raw[members[0]], rank_attack_words(tables.word_counts, True),
                                                out, progress.log)
    summary = pd.concat(summaries, ignore_index=True)
    write_csv(summary, out / "vlm_summary.csv")
    write_csv(pd.concat(per_words, ignore_index=True), out / "vlm_per_word.csv")
    title = "typoattack report: vision-language models"
    blocks = [ReportBlock("h1", title), *(ReportBlock("p", n) for n in notes),
              ReportBlock("h2", "Answers per prompt and condition"), ReportBlock("p", _NOTE),
              build_table_block(*build_summary_cells(summary), "per-word")]
    if word_blocks:
        blocks += [ReportBlock("h2", "Attack words"), *word_blocks]
    blocks += [ReportBlock("h2", "Prompts"), build_table_block(["id", "safe", "text"], _prompt_cells(raw), "prompts")]
    if figures:
        blocks += [ReportBlock("h2", "Figures"), *(ReportBlock("figure", path=f) for f in figures)]
    blocks += example_blocks
    blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(raw, start=1):
        blocks += list_run_blocks(info, index)
    _, html_path = write_report_pages(blocks, out, stem, title)
    return ReportPart(html_path, summary)
