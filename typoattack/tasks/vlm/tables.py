"""Tables of `typoattack vlm` runs (no model code): the summary per model, prompt and condition with Wilson
intervals and the option-order bias, and the per-word table (per attack word, against the clean control for
synthetic attacks).

Each table is counted twice over the same finishing code: by SQL aggregates over a run's records
(`typoattack.analysis.query.RecordSet`: `query_summary`, `query_word_counts`, what runs and reports use, out of
core) and by pandas over in-memory records (`build_summary`, `build_per_word`: the reference the tests hold the
queries to). Groups keep the order in which they first appear in the records (run, chunk file, row), as pandas'
`groupby(sort=False)` over the records read in that order gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import PSEUDO_TARGET, PSEUDO_TARGET_NAME, get_target_key, wilson_interval
from typoattack.analysis.query import RecordSet, list_record_files, quote_literal, quote_name
from typoattack.constants import CLEAN_WORD, RANDOM_CLASS_WORD
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
CHOICE_COUNT_COLUMNS = ["n", "n_object", "n_attack", "n_unclear", "n_object_first", "n_attack_object_first",
                        "n_attack_first", "n_attack_attack_first"]
"""Per group, what the summary's rates are computed from (`finish_summary`): the records, those of each choice,
those of each order and those of each order whose choice is the attack."""
PAIR_COUNT_COLUMNS = ["target_name", "pixel_cover_mean", "n_pairs", "n_clean_attack", "n_hit"]
"""Per word and condition of the synthetic input, beside CHOICE_COUNT_COLUMNS, what the per-word table's
columns against the clean control are computed from (`finish_per_word`): option (b)'s text, the mean pixel
cover, the attacked records with a clean control, those whose clean answer is the attack, and the hits (clean
answer not the attack, attacked answer the attack)."""
PIXEL_COVER_SCALE = 10**12
"""pixel_cover is summed in fixed point (units of 1e-12) by the queries, so the mean does not depend on the
order DuckDB's threads add the values in."""
_ORDERS = {"object_first": OptionOrder.OBJECT_FIRST, "attack_first": OptionOrder.ATTACK_FIRST}


# --- finishing: counts -> tables (shared by the queries and the pandas reference) ------------------------------

def finish_summary(counts: pd.DataFrame, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The summary table (`build_summary`) from the CHOICE_COUNT_COLUMNS of each group, in the counts' order."""
    keys = [*GROUP_KEYS, *condition_columns]
    if counts.empty:
        return pd.DataFrame(columns=[*keys, *RATE_COLUMNS])
    table = counts.reset_index(drop=True)
    n = table["n"].to_numpy()
    for name, count in (("object_acc", "n_object"), ("attack_rate", "n_attack"), ("unclear_rate", "n_unclear")):
        k = table[count].to_numpy()
        low, high = wilson_interval(k, n)
        table[name], table[f"{name}_ci_low"], table[f"{name}_ci_high"] = k / n, low, high
    with np.errstate(invalid="ignore", divide="ignore"):
        for order in _ORDERS:
            table[f"attack_rate_{order}"] = table[f"n_attack_{order}"] / table[f"n_{order}"].replace(0, np.nan)
    table["order_bias"] = table["attack_rate_attack_first"] - table["attack_rate_object_first"]
    return table[[*keys, *RATE_COLUMNS]]


def finish_per_word(counts: pd.DataFrame) -> pd.DataFrame:
    """The per-word table of the synthetic input (`build_per_word`) from the counts of each word and condition
    (CHOICE_COUNT_COLUMNS and PAIR_COUNT_COLUMNS), in the counts' order."""
    keys = [*GROUP_KEYS, *SYNTHETIC_WORD_KEYS]
    table = finish_summary(counts, SYNTHETIC_WORD_KEYS)
    if counts.empty:
        return table.reindex(columns=[*table.columns, *WORD_EXTRA_COLUMNS])
    extra = counts.reset_index(drop=True)
    n = extra["n_pairs"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        extra["clean_attack_rate"] = extra["n_clean_attack"] / extra["n_pairs"].replace(0, np.nan)
        extra["asr"] = extra["n_hit"] / extra["n_pairs"].replace(0, np.nan)
    extra["asr_ci_low"], extra["asr_ci_high"] = wilson_interval(extra["n_hit"].to_numpy(), n)
    extra["target_name"] = extra["target_name"].astype(object)  # str from a query, object from pandas
    for column in WORD_EXTRA_COLUMNS:
        table[column] = extra[column]
    return table[[*keys, *WORD_EXTRA_COLUMNS, *RATE_COLUMNS]]


def finish_word_table(counts: pd.DataFrame, synthetic: bool) -> pd.DataFrame:
    """per_word.csv from `query_word_counts` (or `count_word_outcomes`)."""
    return finish_per_word(counts) if synthetic else finish_summary(counts, REAL_WORD_KEYS)


# --- pandas reference --------------------------------------------------------------------------------------------

def _check_columns(columns: Sequence[str], keys: Sequence[str]) -> None:
    missing = [c for c in (*keys, "order", "choice") if c not in columns]
    if missing:
        raise ValueError(f"records lack columns {missing}")


def count_choices(records: pd.DataFrame, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """CHOICE_COUNT_COLUMNS per (GROUP_KEYS, *condition_columns) of in-memory records, groups in the order they
    first appear: the pandas reference of `query_choice_counts`."""
    keys = [*GROUP_KEYS, *condition_columns]
    _check_columns(list(records.columns), keys)
    if records.empty:
        return pd.DataFrame(columns=[*keys, *CHOICE_COUNT_COLUMNS])
    rec = records[[*keys, "order", "choice"]].copy()
    counts = {name: (rec["choice"] == choice.value).astype(np.int64)
              for name, choice in (("n_object", Choice.OBJECT), ("n_attack", Choice.ATTACK),
                                   ("n_unclear", Choice.UNCLEAR))}
    rec = rec.assign(**counts)
    for name, order in _ORDERS.items():
        in_order = (rec["order"] == order.value).astype(np.int64)
        rec[f"n_{name}"] = in_order
        rec[f"n_attack_{name}"] = in_order * rec["n_attack"]
    table = rec.groupby(keys, sort=False, dropna=False).agg(
        n=("choice", "size"), **{c: (c, "sum") for c in CHOICE_COUNT_COLUMNS if c != "n"}).reset_index()
    return table[[*keys, *CHOICE_COUNT_COLUMNS]]


def build_summary(records: pd.DataFrame, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """One row per (model, weights_id, scoring, prompt_id, safe_prompt, *condition_columns), both orders pooled.

    n: records (items x orders); object_acc, attack_rate, unclear_rate: shares of records whose choice is the
    object, the attack, unclear, each with its 95% Wilson interval; attack_rate_object_first and
    attack_rate_attack_first: the attack rate over the records of one order (NaN when that order was not
    asked); order_bias: attack rate with the attack as option (a) minus with it as option (b)
    (attack_rate_attack_first - attack_rate_object_first), in [-1, 1].

    This is the in-memory reference; runs compute the same table out of core (`query_summary`).

    Args:
        records: Rows with VLM_RECORD_COLUMNS and the condition columns.
        condition_columns: Columns that name a condition (never per-image values such as a measured cover).

    Returns:
        The table, groups in the order they first appear in the records.
    """
    return finish_summary(count_choices(records, condition_columns), condition_columns)


def count_word_outcomes(records: pd.DataFrame) -> pd.DataFrame:
    """CHOICE_COUNT_COLUMNS and PAIR_COUNT_COLUMNS per word and condition of the synthetic input's in-memory
    attacked records: the pandas reference of `query_word_counts`.

    Raises:
        ValueError: Two clean records of the same question (pandas' MergeError).
    """
    keys = [*GROUP_KEYS, *SYNTHETIC_WORD_KEYS]
    attacked = records[records["word"] != CLEAN_WORD]
    counts = count_choices(attacked.assign(target_index=get_target_key(attacked["word"], attacked["target_index"])),
                           SYNTHETIC_WORD_KEYS)
    if attacked.empty:
        return counts.reindex(columns=[*counts.columns, *PAIR_COUNT_COLUMNS])
    clean = records.loc[records["word"] == CLEAN_WORD, [*PAIR_KEYS, "choice"]]
    clean = clean.rename(columns={"choice": "clean_choice"})
    pairs = attacked.merge(clean, on=PAIR_KEYS, how="left", validate="many_to_one")
    paired = pairs["clean_choice"].notna()
    was_attack = (pairs["clean_choice"] == Choice.ATTACK.value) & paired
    pairs = pairs.assign(paired=paired.astype(np.int64), clean_attack=was_attack.astype(np.int64),
                         hit=(paired & ~was_attack & (pairs["choice"] == Choice.ATTACK.value)).astype(np.int64))
    # The pseudo-word `random-class` is one row: each image was paired with its own class's control above.
    pseudo = pairs["word"] == RANDOM_CLASS_WORD
    pairs = pairs.assign(target_index=get_target_key(pairs["word"], pairs["target_index"]),
                         attack_label=pairs["attack_label"].where(~pseudo, PSEUDO_TARGET_NAME))
    extra = pairs.groupby(keys, sort=False, dropna=False).agg(
        target_name=("attack_label", "first"), pixel_cover_mean=("pixel_cover", "mean"), n_pairs=("paired", "sum"),
        n_clean_attack=("clean_attack", "sum"), n_hit=("hit", "sum")).reset_index()
    return counts.merge(extra, on=keys, how="left", validate="one_to_one")


def build_per_word(records: pd.DataFrame) -> pd.DataFrame:
    """One row per model, prompt and attack word (and condition), both orders pooled.

    Real datasets: `build_summary` per dataset, variant and attack word. Synthetic attacks: `build_summary` per
    word, target and condition over the attacked records, then target_name (option (b)'s text),
    pixel_cover_mean, and against the clean control (the same question on the same image without text):
    n_pairs, clean_attack_rate (share of pairs whose clean answer is the attack) and asr (attack success rate:
    share of pairs whose clean answer is not the attack and whose attacked answer is), with its 95% Wilson
    interval.

    This is the in-memory reference; runs compute the same table out of core (`query_per_word`).
    """
    if not is_synthetic(records):
        return build_summary(records, REAL_WORD_KEYS)
    return finish_per_word(count_word_outcomes(records))


def is_synthetic(records: pd.DataFrame | RecordSet) -> bool:
    """Whether the records (in memory, or a run's `RecordSet`) are of the synthetic input (else of a real
    dataset)."""
    return "word" in records.columns


def get_summary_keys(records: pd.DataFrame | RecordSet) -> list[str]:
    """The condition columns of the records' summary."""
    return SYNTHETIC_SUMMARY_KEYS if is_synthetic(records) else REAL_SUMMARY_KEYS


# --- queries -----------------------------------------------------------------------------------------------------

def _names(columns: Sequence[str], table: str = "") -> str:
    prefix = f"{table}." if table else ""
    return ", ".join(prefix + quote_name(c) for c in columns)


def ordered_records_sql(records: RecordSet) -> str:
    """A SQL relation of the records' columns with `_at`, the record's place in the order the runs' records are
    read in (run, chunk file, row in the file; a STRUCT, so `min(_at)` is where a group first appears).

    The view `records` has no row position, so this reads the same Parquet files as it does (their virtual
    columns `filename` and `file_row_number` give the position; the file's index in the run comes from a
    join with the run's file list, a few rows).
    """
    parts = []
    for run, source in enumerate(records.sources):
        files = list_record_files(source)
        if not files:
            continue
        listing = ", ".join(quote_literal(str(p)) for p in files)
        index = ", ".join(f"({quote_literal(str(p))}, {i})" for i, p in enumerate(files))
        parts.append(f"SELECT r.*, {run} AS run, {{'run': {run}, 'file': f.file_index, 'row': r.file_row_number}} "
                     f"AS _at FROM read_parquet([{listing}], union_by_name = true) r "
                     f"JOIN (VALUES {index}) f(file_name, file_index) ON r.filename = f.file_name")
    if not parts:
        return "(SELECT NULL::INTEGER AS run, NULL::STRUCT(run INTEGER, file INTEGER, row BIGINT) AS _at WHERE false)"
    return "(" + " UNION ALL BY NAME ".join(parts) + ")"


def _choice_counts(table: str = "") -> str:
    """The SELECT list of CHOICE_COUNT_COLUMNS (columns of `table`, when given)."""
    col = (lambda c: f"{table}.{quote_name(c)}") if table else quote_name
    choice, order = col("choice"), col("order")
    items = ["count(*) AS n"]
    items += [f"count(*) FILTER (WHERE {choice} = {quote_literal(c.value)}) AS {name}"
              for name, c in (("n_object", Choice.OBJECT), ("n_attack", Choice.ATTACK), ("n_unclear", Choice.UNCLEAR))]
    for name, o in _ORDERS.items():
        items.append(f"count(*) FILTER (WHERE {order} = {quote_literal(o.value)}) AS n_{name}")
        items.append(f"count(*) FILTER (WHERE {order} = {quote_literal(o.value)} AND {choice} = "
                     f"{quote_literal(Choice.ATTACK.value)}) AS n_attack_{name}")
    return ", ".join(items)


def _check_query_columns(records: RecordSet, keys: Sequence[str]) -> None:
    _check_columns(records.columns, keys)


_INT_COUNT_COLUMNS = {*CHOICE_COUNT_COLUMNS, "n_pairs", "n_clean_attack", "n_hit"}


def _as_counts(frame: pd.DataFrame, keys: Sequence[str], columns: Sequence[str]) -> pd.DataFrame:
    """A query's counts as the pandas reference holds them: int64 counts, no helper columns."""
    for c in columns:
        if c in _INT_COUNT_COLUMNS:
            frame[c] = frame[c].to_numpy(dtype=np.int64)
    return frame[[*keys, *columns]].reset_index(drop=True)


def query_choice_counts(records: RecordSet, condition_columns: Sequence[str] = (), where: str = "true") -> pd.DataFrame:
    """CHOICE_COUNT_COLUMNS per (GROUP_KEYS, *condition_columns), by one aggregate over the records (the query
    form of `count_choices`), groups in the order they first appear.

    Args:
        records: One or several runs' records.
        condition_columns: The condition columns of the groups.
        where: A SQL condition on the records' columns (default: all).

    Raises:
        ValueError: The records lack a key column.
    """
    keys = [*GROUP_KEYS, *condition_columns]
    _check_query_columns(records, keys)
    frame = records.frame(f"SELECT {_names(keys)}, {_choice_counts()}, min(_at) AS _first "
                          f"FROM {ordered_records_sql(records)} WHERE {where} GROUP BY {_names(keys)} ORDER BY _first")
    return _as_counts(frame, keys, CHOICE_COUNT_COLUMNS)


def query_summary(records: RecordSet, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """The summary table (`build_summary`) of the records, out of core."""
    return finish_summary(query_choice_counts(records, condition_columns), condition_columns)


def check_clean_controls(records: RecordSet) -> None:
    """Check that each question (PAIR_KEYS) has at most one clean record.

    Raises:
        ValueError: Two clean records of the same question (records of two runs mixed).
    """
    n = records.scalar(f"SELECT count(*) FROM (SELECT {_names(PAIR_KEYS)} FROM records WHERE word = "
                       f"{quote_literal(CLEAN_WORD)} GROUP BY ALL HAVING count(*) > 1)")
    if n:
        raise ValueError("records hold two clean controls of the same model, prompt, image, order and target")


def query_word_counts(records: RecordSet) -> pd.DataFrame:
    """The counts of per_word.csv, by one aggregate over the records: for the synthetic input,
    CHOICE_COUNT_COLUMNS and PAIR_COUNT_COLUMNS per word and condition of the attacked records, each joined with
    its clean control (the query form of `count_word_outcomes`); for a real dataset, CHOICE_COUNT_COLUMNS per
    dataset, variant and attack word. Groups in the order they first appear.

    Raises:
        ValueError: Two clean records of the same question, or the records lack a key column.
    """
    if not is_synthetic(records):
        return query_choice_counts(records, REAL_WORD_KEYS)
    keys = [*GROUP_KEYS, *SYNTHETIC_WORD_KEYS]
    _check_query_columns(records, keys)
    clean, attack = quote_literal(CLEAN_WORD), quote_literal(Choice.ATTACK.value)
    if not records.scalar(f"SELECT count(*) FROM records WHERE word IS DISTINCT FROM {clean}"):
        counts = query_choice_counts(records, SYNTHETIC_WORD_KEYS, where="false")
        return counts.reindex(columns=[*counts.columns, *PAIR_COUNT_COLUMNS])
    check_clean_controls(records)
    # pandas' merge pairs missing keys with missing keys; `IS NOT DISTINCT FROM` does too but joins slower, so
    # it is used only when an attacked record has a missing key.
    missing = " OR ".join(f"{quote_name(k)} IS NULL" for k in PAIR_KEYS)
    equal = "IS NOT DISTINCT FROM" if records.scalar(
        f"SELECT count(*) FROM records WHERE word IS DISTINCT FROM {clean} AND ({missing})") else "="
    on = " AND ".join(f"a.{quote_name(k)} {equal} c.{quote_name(k)}" for k in PAIR_KEYS)
    cover = "a.pixel_cover"
    has_cover = f"{cover} IS NOT NULL AND NOT isnan({cover})"
    # The pseudo-word `random-class` is one row (target PSEUDO_TARGET); each record is paired with the control
    # of the class its image was shown.
    pseudo = f"a.word = {quote_literal(RANDOM_CLASS_WORD)}"
    target = f"CASE WHEN {pseudo} THEN {PSEUDO_TARGET} ELSE a.target_index END"
    select = ", ".join(f"{target} AS target_index" if k == "target_index" else f"a.{quote_name(k)} AS {quote_name(k)}"
                       for k in keys)
    group = ", ".join(target if k == "target_index" else f"a.{quote_name(k)}" for k in keys)
    sql = (f"SELECT {select}, {_choice_counts('a')}, "
           f"min(a._at) AS _first, "
           f"CASE WHEN bool_or({pseudo}) THEN {quote_literal(PSEUDO_TARGET_NAME)} ELSE "
           f"arg_min(a.attack_label, a._at) FILTER (WHERE a.attack_label IS NOT NULL) END AS target_name, "
           f"sum(CAST(round({cover} * {PIXEL_COVER_SCALE}) AS HUGEINT)) FILTER (WHERE {has_cover}) AS cover_fixed, "
           f"count(*) FILTER (WHERE {has_cover}) AS n_cover, "
           f"count(*) FILTER (WHERE c.clean_choice IS NOT NULL) AS n_pairs, "
           f"count(*) FILTER (WHERE c.clean_choice = {attack}) AS n_clean_attack, "
           f"count(*) FILTER (WHERE c.clean_choice IS NOT NULL AND c.clean_choice <> {attack} "
           f"AND a.choice = {attack}) AS n_hit "
           f"FROM {ordered_records_sql(records)} a LEFT JOIN (SELECT {_names(PAIR_KEYS)}, choice AS clean_choice "
           f"FROM records WHERE word = {clean}) c ON {on} WHERE a.word IS DISTINCT FROM {clean} "
           f"GROUP BY {group} ORDER BY _first")
    frame = records.frame(sql)
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["pixel_cover_mean"] = (frame["cover_fixed"].to_numpy(dtype=np.float64) / PIXEL_COVER_SCALE
                                     / frame["n_cover"].to_numpy(dtype=np.float64))
    return _as_counts(frame, keys, [*CHOICE_COUNT_COLUMNS, *PAIR_COUNT_COLUMNS])


def query_per_word(records: RecordSet) -> pd.DataFrame:
    """per_word.csv (`build_per_word`) of the records, out of core."""
    return finish_word_table(query_word_counts(records), is_synthetic(records))


@dataclass
class VlmTables:
    """The tables of one or several vlm runs of one input kind.

    Attributes:
        summary: summary.csv.
        per_word: per_word.csv.
        word_counts: The counts per_word.csv was finished from (`query_word_counts`).
    """

    summary: pd.DataFrame
    per_word: pd.DataFrame
    word_counts: pd.DataFrame


def compute_vlm_tables(records: RecordSet) -> VlmTables:
    """summary.csv and per_word.csv of the records (queries, `query_summary` and `query_word_counts`)."""
    synthetic = is_synthetic(records)
    summary = query_summary(records, get_summary_keys(records))
    counts = query_word_counts(records)
    return VlmTables(summary, finish_word_table(counts, synthetic), counts)


def save_vlm_tables(tables: VlmTables, out_dir: Path) -> None:
    """Write summary.csv and per_word.csv into `out_dir`."""
    from typoattack.files import write_csv

    write_csv(tables.summary, Path(out_dir) / SUMMARY_CSV)
    write_csv(tables.per_word, Path(out_dir) / PER_WORD_CSV)


def write_summary(records: RecordSet, out_dir: Path, condition_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Write summary.csv of a vlm run from its records (a query); return the summary."""
    from typoattack.files import write_csv

    summary = query_summary(records, condition_columns)
    write_csv(summary, Path(out_dir) / SUMMARY_CSV)
    return summary


def write_vlm_tables(records: RecordSet, out_dir: Path) -> pd.DataFrame:
    """Write summary.csv and per_word.csv of a vlm run from its records (queries); return the summary."""
    tables = compute_vlm_tables(records)
    save_vlm_tables(tables, out_dir)
    return tables.summary
