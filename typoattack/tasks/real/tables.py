"""Tables of `typoattack real` runs as pure functions of their records (no model code): the
summary per (model, defence, dataset, variant, protocol) with Wilson intervals and SCAM's paired
NoSCAM -> SCAM drop, the per-attack-word table and the leaderboard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import wilson_interval
from typoattack.config.defences import NO_DEFENCE
from typoattack.files import write_csv

REAL_RECORD_COLUMNS = [
    "image_id", "photo_id", "model", "pretrained", "defence", "dataset", "variant", "protocol", "object_label",
    "attack_word", "pred_label", "p_object", "p_attack", "n_classes", "postit_area_pct",
]
"""One row per image x model x defence of a real run (records.parquet); `defence` is `none` without --defence."""
GROUP_KEYS = ["model", "pretrained", "defence", "dataset", "variant", "protocol"]
_PAIR_KEYS = ["model", "pretrained", "defence", "dataset", "protocol"]
"""What a variant's row shares with its NoSCAM twin (pairs never cross models or defences)."""
SUMMARY_COLUMNS = [
    *GROUP_KEYS, "n_images", "object_acc", "object_acc_ci_low", "object_acc_ci_high", "attack_rate",
    "attack_rate_ci_low", "attack_rate_ci_high", "n_pairs", "paired_clean_acc", "paired_acc", "paired_drop",
]
PER_ATTACK_WORD_COLUMNS = [
    *GROUP_KEYS, "attack_word", "n_images", "object_acc", "object_acc_ci_low", "object_acc_ci_high",
    "attack_rate", "attack_rate_ci_low", "attack_rate_ci_high",
]
LEADERBOARD_COLUMNS = ["model", "pretrained", "defence", "dataset", "protocol", "variant", "n_images", "object_acc",
                       "attack_rate", "clean_variant_acc", "paired_drop"]
SUMMARY_CSV = "summary.csv"
PER_ATTACK_WORD_CSV = "per_attack_word.csv"
CLEAN_VARIANT = "NoSCAM"
"""The text-free twin that attacked variants are paired with (by photo)."""
VARIANT_ORDER = ["SCAM", "NoSCAM", "SynthSCAM", "attacked"]


def _add_outcomes(records: pd.DataFrame) -> pd.DataFrame:
    out = with_defence_column(records)
    out["object_correct"] = (out["pred_label"] == out["object_label"]).astype(np.int64)
    out["predicted_attack"] = (out["pred_label"] == out["attack_word"]).astype(np.int64)
    return out


def with_defence_column(records: pd.DataFrame) -> pd.DataFrame:
    """A copy of `records` with a `defence` column (`none` in records written before real runs had defences)."""
    out = records.copy()
    if "defence" not in out.columns:
        out.insert(out.columns.get_loc("pretrained") + 1 if "pretrained" in out.columns else len(out.columns),
                   "defence", NO_DEFENCE)
    return out


def _rates(grouped: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
    table = grouped.agg(n_images=("object_correct", "size"), n_correct=("object_correct", "sum"),
                        n_attack=("predicted_attack", "sum")).reset_index()
    n = table["n_images"].to_numpy()
    for name, count in (("object_acc", "n_correct"), ("attack_rate", "n_attack")):
        k = table[count].to_numpy()
        low, high = wilson_interval(k, n)
        table[name] = k / n
        table[f"{name}_ci_low"], table[f"{name}_ci_high"] = low, high
    return table.drop(columns=["n_correct", "n_attack"])


def _sort(table: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    order = {v: i for i, v in enumerate(VARIANT_ORDER)}
    rank = table["variant"].map(lambda v: order.get(v, len(order)))
    # Models, then each model's defences, in the order they first appear (the run's config order).
    series = list(zip(table["model"], table["pretrained"], table["defence"]))
    model_order = {m: i for i, m in enumerate(dict.fromkeys(series))}
    key = pd.Series([model_order[m] for m in series], index=table.index)
    return (table.assign(_m=key, _v=rank).sort_values(["_m", "dataset", "protocol", "_v", *extra], kind="stable")
            .drop(columns=["_m", "_v"]).reset_index(drop=True))


def build_paired_drop(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy on the text-free twin minus accuracy on each attacked variant, over the photos
    present in both, paired by `photo_id` (never by row position) within the same model and defence.

    Returns:
        One row per (model, pretrained, defence, dataset, variant, protocol) of an attacked variant that
        has NoSCAM twins: n_pairs, paired_clean_acc, paired_acc, paired_drop (fractions in [-1, 1]).
    """
    rec = _add_outcomes(records)
    keys = _PAIR_KEYS
    clean = rec[rec["variant"] == CLEAN_VARIANT][[*keys, "photo_id", "object_correct"]]
    attacked = rec[rec["variant"] != CLEAN_VARIANT]
    if clean.empty or attacked.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "n_pairs", "paired_clean_acc", "paired_acc", "paired_drop"])
    pairs = attacked.merge(clean, on=[*keys, "photo_id"], suffixes=("", "_clean"), validate="many_to_one")
    table = pairs.groupby(GROUP_KEYS, sort=False).agg(
        n_pairs=("photo_id", "size"), paired_clean_acc=("object_correct_clean", "mean"),
        paired_acc=("object_correct", "mean")).reset_index()
    table["paired_drop"] = table["paired_clean_acc"] - table["paired_acc"]
    return table


def build_summary(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pretrained, defence, dataset, variant, protocol).

    object_acc: share of images predicted as their object label; attack_rate: share predicted as
    their attack word; each with a 95% Wilson interval. For attacked variants with a NoSCAM twin,
    n_pairs, paired_clean_acc, paired_acc and paired_drop (`build_paired_drop`); NaN elsewhere.
    """
    if records.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = _rates(_add_outcomes(records).groupby(GROUP_KEYS, sort=False))
    table = table.merge(build_paired_drop(records), on=GROUP_KEYS, how="left")
    table["n_pairs"] = table["n_pairs"].fillna(0).astype(np.int64)
    return _sort(table, [])[SUMMARY_COLUMNS]


def build_per_attack_word(records: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pretrained, defence, dataset, variant, protocol, attack word): n_images,
    object_acc and attack_rate with 95% Wilson intervals."""
    if records.empty:
        return pd.DataFrame(columns=PER_ATTACK_WORD_COLUMNS)
    table = _rates(_add_outcomes(records).groupby([*GROUP_KEYS, "attack_word"], sort=False))
    return _sort(table, ["attack_word"])[PER_ATTACK_WORD_COLUMNS]


def build_real_leaderboard(summary: pd.DataFrame) -> pd.DataFrame:
    """Models (each defence of a model a separate entry) ranked per (dataset, protocol) by object
    accuracy on the attacked images (most robust first): every variant except the text-free NoSCAM,
    with NoSCAM's accuracy (same model and defence) and the paired drop beside it where the dataset has it."""
    summary = with_defence_column(summary)
    rows = summary[summary["variant"] != CLEAN_VARIANT].copy()
    clean = summary[summary["variant"] == CLEAN_VARIANT][[*_PAIR_KEYS, "object_acc"]]
    rows = rows.merge(clean.rename(columns={"object_acc": "clean_variant_acc"}), on=_PAIR_KEYS, how="left")
    rows = rows.sort_values(["dataset", "protocol", "variant", "object_acc"], ascending=[True, True, True, False],
                            kind="stable")
    return rows[LEADERBOARD_COLUMNS].reset_index(drop=True)


def write_real_tables(records: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """Write summary.csv and per_attack_word.csv of a real run from its records; return the summary."""
    summary = build_summary(records)
    write_csv(summary, Path(out_dir) / SUMMARY_CSV)
    write_csv(build_per_attack_word(records), Path(out_dir) / PER_ATTACK_WORD_CSV)
    return summary
