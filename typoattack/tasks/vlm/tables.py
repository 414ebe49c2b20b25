"""Tables of `typoattack vlm` runs as pure functions of their records (no model code): the summary per
model, prompt and condition with Wilson intervals and the option-order bias."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import wilson_interval
from typoattack.tasks.vlm.answers import Choice
from typoattack.tasks.vlm.prompts import OptionOrder

VLM_RECORD_COLUMNS = [
    "image_id", "model", "weights_id", "scoring", "prompt_id", "safe_prompt", "order", "object_label",
    "attack_label", "choice", "logp_object", "logp_attack", "answer",
]
"""One row per image x condition x prompt x order (records.parquet), followed by the task's condition columns
(e.g. word, fraction, placement for synthetic attacks; dataset, variant for real photographs).

scoring: `likelihood` or `generate`; order: `object-first` (the true object is option (a)) or `attack-first`;
object_label / attack_label: the two options' texts; choice: `object`, `attack` or `unclear` (generate only);
logp_object / logp_attack: the options' log-probabilities (float64 <= 0; NaN in generate mode); answer: the
generated text ("" in likelihood mode)."""
GROUP_KEYS = ["model", "weights_id", "scoring", "prompt_id", "safe_prompt"]
RATE_COLUMNS = [
    "n", "object_acc", "object_acc_ci_low", "object_acc_ci_high", "attack_rate", "attack_rate_ci_low",
    "attack_rate_ci_high", "unclear_rate", "unclear_rate_ci_low", "unclear_rate_ci_high",
    "attack_rate_object_first", "attack_rate_attack_first", "order_bias",
]
SUMMARY_CSV = "summary.csv"


def build_summary(records: pd.DataFrame, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (model, weights_id, scoring, prompt_id, safe_prompt, *condition_columns), both orders pooled.

    n: records (items x orders); object_acc, attack_rate, unclear_rate: shares of records whose choice is the
    object, the attack, unclear, each with its 95% Wilson interval; attack_rate_object_first and
    attack_rate_attack_first: the attack rate over the records of one order (NaN when that order was not
    asked); order_bias: attack rate with the attack as option (a) minus with it as option (b)
    (attack_rate_attack_first - attack_rate_object_first), in [-1, 1].

    Args:
        records: Rows with VLM_RECORD_COLUMNS and the condition columns.
        condition_columns: Columns that name a condition (never per-image values such as a measured cover).

    Returns:
        The table, groups in the order they first appear in the records.
    """
    keys = [*GROUP_KEYS, *condition_columns]
    missing = [c for c in (*keys, "order", "choice") if c not in records.columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")
    if records.empty:
        return pd.DataFrame(columns=[*keys, *RATE_COLUMNS])
    rec = records[[*keys, "order", "choice"]].copy()
    counts = {name: (rec["choice"] == choice.value).astype(np.int64)
              for name, choice in (("n_object", Choice.OBJECT), ("n_attack", Choice.ATTACK),
                                   ("n_unclear", Choice.UNCLEAR))}
    rec = rec.assign(**counts)
    for order in (OptionOrder.OBJECT_FIRST, OptionOrder.ATTACK_FIRST):
        in_order = (rec["order"] == order.value).astype(np.int64)
        rec[f"n_{order.name.lower()}"] = in_order
        rec[f"n_attack_{order.name.lower()}"] = in_order * rec["n_attack"]
    table = rec.groupby(keys, sort=False, dropna=False).agg(
        n=("choice", "size"), **{c: (c, "sum") for c in rec.columns if c.startswith("n_")}).reset_index()
    n = table["n"].to_numpy()
    for name, count in (("object_acc", "n_object"), ("attack_rate", "n_attack"), ("unclear_rate", "n_unclear")):
        k = table[count].to_numpy()
        low, high = wilson_interval(k, n)
        table[name], table[f"{name}_ci_low"], table[f"{name}_ci_high"] = k / n, low, high
    with np.errstate(invalid="ignore", divide="ignore"):
        for order in ("object_first", "attack_first"):
            table[f"attack_rate_{order}"] = table[f"n_attack_{order}"] / table[f"n_{order}"].replace(0, np.nan)
    table["order_bias"] = table["attack_rate_attack_first"] - table["attack_rate_object_first"]
    return table[[*keys, *RATE_COLUMNS]]


def write_summary(records: pd.DataFrame, out_dir: Path, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Write summary.csv of a vlm run from its records; return the summary."""
    from typoattack.analysis.report import write_csv

    summary = build_summary(records, condition_columns)
    write_csv(summary, Path(out_dir) / SUMMARY_CSV)
    return summary
