"""The vlm report's "Attack words" section: each model's attack words ranked by ASR (synthetic input)
or attack rate (real datasets), prompts, conditions and orders pooled, from the word counts of
`typoattack.tasks.vlm.tables` (no model code)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.labels import format_percent, is_missing
from typoattack.analysis.metrics import RANKING_SIZE, wilson_interval
from typoattack.analysis.report_page import ReportBlock, build_table_block
from typoattack.tasks.vlm.plots import order_prompts


MODEL_KEYS = ["model", "weights_id", "scoring"]
"""What the per-word section groups its tables by (one heading each)."""


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
        prompts = order_prompts(per_prompt[(per_prompt["model"] == model) & (per_prompt["weights_id"] == weights)
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
