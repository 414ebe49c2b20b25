"""Tables of `typoattack real` runs (no model code): the summary per (model, defence, dataset,
variant, protocol) with Wilson intervals and SCAM's paired NoSCAM -> SCAM drop, the per-attack-word
table and the leaderboard.

Each table has two forms with the same result: a pure pandas function of in-memory records
(`build_summary`, `build_paired_drop`, `build_per_attack_word`: the reference, and what tests call
on small frames) and an out-of-core query over a run's records (`query_summary`,
`query_paired_drop`, `query_per_attack_word`: SQL aggregates over the view `records` of
`typoattack.analysis.query.RecordSet`, of which only the aggregated rows reach pandas). Runs and
reports write their tables with the query form (`write_real_tables`).

Groups keep the order in which they first appear in the records (as pandas' `groupby(sort=False)`
does): the queries number the records in their stored order with `row_number() OVER ()`, which
DuckDB keeps in insertion order, and order groups by their first record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import wilson_interval
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
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
    return _finish_rates(table)


def _finish_rates(table: pd.DataFrame) -> pd.DataFrame:
    """Rates with Wilson intervals from the counts `n_images`, `n_correct`, `n_attack` of each group."""
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
        return _empty_paired_drop()
    pairs = attacked.merge(clean, on=[*keys, "photo_id"], suffixes=("", "_clean"), validate="many_to_one")
    table = pairs.groupby(GROUP_KEYS, sort=False).agg(
        n_pairs=("photo_id", "size"), paired_clean_acc=("object_correct_clean", "mean"),
        paired_acc=("object_correct", "mean")).reset_index()
    table["paired_drop"] = table["paired_clean_acc"] - table["paired_acc"]
    return table


def _empty_paired_drop() -> pd.DataFrame:
    return pd.DataFrame(columns=[*GROUP_KEYS, "n_pairs", "paired_clean_acc", "paired_acc", "paired_drop"])


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


# --------------------------------------------------------------------------------------------
# The same tables as out-of-core queries over a RecordSet.


def _names(columns: list[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)


def real_records_sql(records: RecordSet, where: str = "true") -> str:
    """The records matching `where` with a `defence` column (`none` in records written before real
    runs had defences, also where one run of several lacks the column), in their stored order."""
    if records.has("defence"):
        none = quote_literal(NO_DEFENCE)
        return f"SELECT * REPLACE (coalesce(defence, {none}) AS defence) FROM records WHERE {where}"
    return f"SELECT *, {quote_literal(NO_DEFENCE)} AS defence FROM records WHERE {where}"


def _numbered_sql(records: RecordSet, columns: list[str], where: str) -> str:
    """`columns` of the records matching `where`, with `_ord`: the record's position in the stored
    order (an empty OVER () numbers rows in insertion order)."""
    return f"SELECT {_names(columns)}, row_number() OVER () AS _ord FROM ({real_records_sql(records, where)})"


def _text_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`frame` with its key columns as pandas' text dtype (DuckDB gives `object` to the text
    columns of an empty result)."""
    for k in keys:
        if frame[k].dtype == object:
            frame[k] = frame[k].astype("str")
    return frame


def _not_null(keys: list[str], alias: str = "") -> str:
    """Rows whose keys are all set (pandas' groupby drops the others)."""
    return " AND ".join(f"{alias}{quote_name(k)} IS NOT NULL" for k in keys)


def query_rate_counts(records: RecordSet, keys: list[str], where: str = "true") -> pd.DataFrame:
    """Per group of `keys` (in the order the groups first appear in the records): n_images,
    n_correct (predicted the object label) and n_attack (predicted the attack word)."""
    source = _numbered_sql(records, [*keys, "pred_label", "object_label", "attack_word"], where)
    frame = records.frame(
        f"SELECT {_names(keys)}, count(*) AS n_images, "
        "count(*) FILTER (WHERE pred_label = object_label) AS n_correct, "
        "count(*) FILTER (WHERE pred_label = attack_word) AS n_attack, min(_ord) AS _first "
        f"FROM ({source}) WHERE {_not_null(keys)} GROUP BY {_names(keys)} ORDER BY _first")
    for col in ("n_images", "n_correct", "n_attack"):
        frame[col] = frame[col].to_numpy(dtype=np.int64)
    return _text_keys(frame, keys).drop(columns="_first")


def query_paired_drop(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """`build_paired_drop` of the records matching `where`, as one join inside DuckDB: each attacked
    record with the NoSCAM record of the same photo, model, defence, dataset and protocol.

    Raises:
        ValueError: Two NoSCAM records of the same photo, model, defence, dataset and protocol.
    """
    clean, base = quote_literal(CLEAN_VARIANT), real_records_sql(records, where)
    n_clean, n_attacked = records.frame(
        f"SELECT count(*) FILTER (WHERE variant = {clean}), count(*) FILTER (WHERE variant IS DISTINCT FROM {clean}) "
        f"FROM ({base})").iloc[0].tolist()
    if not n_clean or not n_attacked:
        return _empty_paired_drop()
    twins = [*_PAIR_KEYS, "photo_id"]
    twin_rows = f"SELECT {_names(twins)}, pred_label = object_label AS ok FROM ({base}) WHERE variant = {clean}"
    if records.scalar(f"SELECT count(*) FROM (SELECT {_names(twins)} FROM ({twin_rows}) GROUP BY ALL "
                      "HAVING count(*) > 1)"):
        raise ValueError(f"the records hold two {CLEAN_VARIANT} rows of the same photo, model, defence, dataset and "
                         "protocol; the paired drop needs one")
    numbered = _numbered_sql(records, [*GROUP_KEYS, "photo_id", "pred_label", "object_label"], where)
    keys = ", ".join(f"r.{quote_name(k)}" for k in GROUP_KEYS)
    on = " AND ".join(f"r.{quote_name(k)} IS NOT DISTINCT FROM c.{quote_name(k)}" for k in twins)
    frame = records.frame(
        f"SELECT {keys}, count(*) AS n_pairs, count(*) FILTER (WHERE c.ok) AS n_clean_ok, "
        "count(*) FILTER (WHERE r.pred_label = r.object_label) AS n_ok, min(r._ord) AS _first "
        f"FROM ({numbered}) r JOIN ({twin_rows}) c ON {on} "
        f"WHERE r.variant IS DISTINCT FROM {clean} AND {_not_null(GROUP_KEYS, 'r.')} "
        f"GROUP BY {keys} ORDER BY _first")
    n = frame["n_pairs"].to_numpy(dtype=np.int64)
    table = _text_keys(frame[GROUP_KEYS].copy(), GROUP_KEYS)
    table["n_pairs"] = n
    table["paired_clean_acc"] = frame["n_clean_ok"].to_numpy(dtype=np.int64) / n
    table["paired_acc"] = frame["n_ok"].to_numpy(dtype=np.int64) / n
    table["paired_drop"] = table["paired_clean_acc"] - table["paired_acc"]
    return table


def query_summary(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """`build_summary` of the records matching `where` (SQL aggregates; only one row per group
    reaches pandas)."""
    if records.count(where) == 0:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = _finish_rates(query_rate_counts(records, GROUP_KEYS, where))
    table = table.merge(query_paired_drop(records, where), on=GROUP_KEYS, how="left")
    table["n_pairs"] = table["n_pairs"].fillna(0).astype(np.int64)
    return _sort(table, [])[SUMMARY_COLUMNS]


def query_per_attack_word(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """`build_per_attack_word` of the records matching `where` (one SQL aggregate)."""
    if records.count(where) == 0:
        return pd.DataFrame(columns=PER_ATTACK_WORD_COLUMNS)
    table = _finish_rates(query_rate_counts(records, [*GROUP_KEYS, "attack_word"], where))
    return _sort(table, ["attack_word"])[PER_ATTACK_WORD_COLUMNS]


def check_unique_photos(records: RecordSet, where: str = "true") -> bool:
    """True when no (model, pretrained, defence, dataset, protocol, image) appears twice among the
    records matching `where` (two runs of the same model, dataset and protocol do)."""
    keys = ["model", "pretrained", "defence", "dataset", "protocol", "image_id"]
    return not records.scalar(f"SELECT count(*) FROM (SELECT {_names(keys)} FROM ({real_records_sql(records, where)}) "
                              "GROUP BY ALL HAVING count(*) > 1)")


def write_real_tables(records: RecordSet | pd.DataFrame, out_dir: Path, where: str = "true") -> pd.DataFrame:
    """Write summary.csv and per_attack_word.csv of a real run from its records (queries over a
    RecordSet, of the records matching `where`; or the pandas reference over an in-memory frame);
    return the summary."""
    if isinstance(records, pd.DataFrame):
        summary, per_word = build_summary(records), build_per_attack_word(records)
    else:
        summary, per_word = query_summary(records, where), query_per_attack_word(records, where)
    write_csv(summary, Path(out_dir) / SUMMARY_CSV)
    write_csv(per_word, Path(out_dir) / PER_ATTACK_WORD_CSV)
    return summary
