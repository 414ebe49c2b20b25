"""Tables of `typoattack vlm` runs as pure functions of their records (no model code): the summary per
model, prompt and condition with Wilson intervals and the option-order bias, and the per-word table
(per attack word, against the clean control for synthetic attacks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import wilson_interval
from typoattack.constants import CLEAN_WORD
from typoattack.records import STYLE_COLUMNS
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
PER_WORD_CSV = "per_word.csv"
SYNTHETIC_COLUMNS = ["true_index", "word", "target_index", "fraction", "placement", *STYLE_COLUMNS, "pixel_cover"]
"""The condition columns of a record of the synthetic input, after VLM_RECORD_COLUMNS: the image's ImageNet class,
the attack (a clean control record: word "", fraction 0, placement "", empty style, pixel_cover 0, and the target
whose name is its option (b)) and the share of canvas pixels the text changed."""
REAL_COLUMNS = ["photo_id", "dataset", "variant", "postit_area_pct"]
"""The condition columns of a record of a real dataset, after VLM_RECORD_COLUMNS (attack_label is its attack word)."""
SYNTHETIC_SUMMARY_KEYS = ["fraction", "placement", *STYLE_COLUMNS]
"""Conditions of the synthetic summary: words pooled; the clean control is the row of fraction 0."""
SYNTHETIC_WORD_KEYS = ["word", "target_index", "fraction", "placement", *STYLE_COLUMNS]
REAL_SUMMARY_KEYS = ["dataset", "variant"]
REAL_WORD_KEYS = ["dataset", "variant", "attack_label"]
PAIR_KEYS = ["model", "weights_id", "scoring", "prompt_id", "image_id", "order", "target_index"]
"""What pairs an attacked record with its clean control: the same question on the same image without text."""
WORD_EXTRA_COLUMNS = ["target_name", "pixel_cover_mean", "n_pairs", "clean_attack_rate", "asr", "asr_ci_low",
                      "asr_ci_high"]


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


def is_synthetic(records: pd.DataFrame) -> bool:
    """Whether the records are of the synthetic input (else of a real dataset)."""
    return "word" in records.columns


def get_summary_keys(records: pd.DataFrame) -> list[str]:
    """The condition columns of the records' summary."""
    return SYNTHETIC_SUMMARY_KEYS if is_synthetic(records) else REAL_SUMMARY_KEYS


def build_per_word(records: pd.DataFrame) -> pd.DataFrame:
    """One row per model, prompt and attack word (and condition), both orders pooled.

    Real datasets: `build_summary` per dataset, variant and attack word. Synthetic attacks: `build_summary` per
    word, target and condition over the attacked records, then target_name (option (b)'s text),
    pixel_cover_mean, and against the clean control (the same question on the same image without text):
    n_pairs, clean_attack_rate (share of pairs whose clean answer is the attack) and asr (attack success rate:
    share of pairs whose clean answer is not the attack and whose attacked answer is), with its 95% Wilson
    interval.
    """
    if not is_synthetic(records):
        return build_summary(records, REAL_WORD_KEYS)
    attacked = records[records["word"] != CLEAN_WORD]
    table = build_summary(attacked, SYNTHETIC_WORD_KEYS)
    if attacked.empty:
        return table.reindex(columns=[*table.columns, *WORD_EXTRA_COLUMNS])
    clean = records.loc[records["word"] == CLEAN_WORD, [*PAIR_KEYS, "choice"]]
    clean = clean.rename(columns={"choice": "clean_choice"})
    pairs = attacked.merge(clean, on=PAIR_KEYS, how="left", validate="many_to_one")
    paired = pairs["clean_choice"].notna()
    was_attack = (pairs["clean_choice"] == Choice.ATTACK.value) & paired
    pairs = pairs.assign(paired=paired.astype(np.int64), clean_attack=was_attack.astype(np.int64),
                         hit=(paired & ~was_attack & (pairs["choice"] == Choice.ATTACK.value)).astype(np.int64))
    keys = [*GROUP_KEYS, *SYNTHETIC_WORD_KEYS]
    extra = pairs.groupby(keys, sort=False, dropna=False).agg(
        target_name=("attack_label", "first"), pixel_cover_mean=("pixel_cover", "mean"), n_pairs=("paired", "sum"),
        n_clean_attack=("clean_attack", "sum"), n_hit=("hit", "sum")).reset_index()
    n = extra["n_pairs"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        extra["clean_attack_rate"] = extra["n_clean_attack"] / extra["n_pairs"].replace(0, np.nan)
        extra["asr"] = extra["n_hit"] / extra["n_pairs"].replace(0, np.nan)
    extra["asr_ci_low"], extra["asr_ci_high"] = wilson_interval(extra["n_hit"].to_numpy(), n)
    merged = table.merge(extra[[*keys, *WORD_EXTRA_COLUMNS]], on=keys, how="left", validate="one_to_one")
    return merged[[*keys, *WORD_EXTRA_COLUMNS, *RATE_COLUMNS]]


def write_vlm_tables(records: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """Write summary.csv and per_word.csv of a vlm run from its records; return the summary."""
    from typoattack.analysis.report import write_csv

    summary = write_summary(records, Path(out_dir), get_summary_keys(records))
    write_csv(build_per_word(records), Path(out_dir) / PER_WORD_CSV)
    return summary
