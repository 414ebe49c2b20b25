"""The `eval` tables as out-of-core queries over a run's records (`typoattack.analysis.query`).

Each table is one SQL query over the view `records`, aggregated by DuckDB within its memory limit;
only the aggregate (one row per condition, or per confusion cell into a Parquet file) reaches
pandas, where the pure functions of `typoattack.analysis.metrics` finish it. So the tables equal
the in-memory reference (`metrics.build_per_word_table`, ...) whatever the number of records.

The clean prediction of an attacked record is joined on (model, pretrained, defence, image_id):
the clean rows are one per image, a small side of the join.

Nothing here imports model code.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import (
    CONFUSION_COLUMNS, MODEL_DEFENCE_KEYS, OUTCOME_COUNT_COLUMNS, finish_per_word_table, get_condition_keys,
)
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.constants import CLEAN_WORD
from typoattack.records import STYLE_COLUMNS

PIXEL_COVER_SCALE = 10**12
"""pixel_cover is summed in fixed point (units of 1e-12), so the sum does not depend on the order
DuckDB's threads add the values in: the same records always give the same table."""
CONFUSION_CSV_MAX_ROWS = 100_000
"""confusion.csv holds every non-zero cell when the run has at most this many; above, the
CONFUSION_CSV_TOP cells with the most images per condition (confusion.parquet has them all)."""
CONFUSION_CSV_TOP = 20
_IMAGE_KEYS = [*MODEL_DEFENCE_KEYS, "image_id"]
_CLEAN = quote_literal(CLEAN_WORD)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)


def _join_on(left: str, right: str, columns: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{quote_name(c)} = {right}.{quote_name(c)}" for c in columns)


def get_style_keys(records: RecordSet) -> list[str]:
    """The style columns the records carry (they join the condition keys)."""
    return [c for c in STYLE_COLUMNS if records.has(c)]


def check_clean_rows(records: RecordSet, where: str = "true") -> None:
    """Check that every (model, pretrained, defence, image) has at most one clean record.

    Raises:
        ValueError: Two clean rows of one model, defence and image (records of two runs mixed).
    """
    n = records.scalar(f"SELECT count(*) FROM (SELECT {_names(_IMAGE_KEYS)} FROM records WHERE word = {_CLEAN} "
                       f"AND {where} GROUP BY ALL HAVING count(*) > 1)")
    if n:
        raise ValueError("records hold two clean rows for the same model, defence and image")


def _with_clean_sql(where: str = "true") -> str:
    """The attacked records (of those matching `where`) with `clean_pred`, the prediction on the
    same image without the attack (NULL when the image has no clean record)."""
    on = _join_on("r", "c", _IMAGE_KEYS)
    return (f"WITH f AS (SELECT * FROM records WHERE {where}) "
            f"SELECT r.*, c.pred_index AS clean_pred FROM f r LEFT JOIN "
            f"(SELECT {_names(_IMAGE_KEYS)}, pred_index FROM f WHERE word = {_CLEAN}) c ON {on} "
            f"WHERE r.word <> {_CLEAN}")


def query_outcome_counts(records: RecordSet, where: str = "true") -> pd.DataFrame:
    """OUTCOME_COUNT_COLUMNS per condition, computed by one aggregate over the records (the query
    form of `metrics.count_outcomes`).

    Args:
        records: The run's records.
        where: A SQL condition on the records' columns (default: all).

    Raises:
        ValueError: Two clean rows of one image, or an attacked record without its clean record.
    """
    check_clean_rows(records, where)
    keys = get_condition_keys(records.columns)
    c, a, y, t = "clean_pred", "pred_index", "true_index", "target_index"
    sql = (f"SELECT {_names(keys)}, count(*) AS n_images, "
           f"sum(CAST(round(pixel_cover * {PIXEL_COVER_SCALE}) AS HUGEINT)) AS pixel_cover_fixed, "
           f"count(*) FILTER (WHERE {c} = {y}) AS n_clean_correct, "
           f"count(*) FILTER (WHERE {a} = {y}) AS n_attacked_correct, "
           f"count(*) FILTER (WHERE {c} <> {t} AND {a} = {t}) AS n_changed_to, "
           f"count(*) FILTER (WHERE {c} = {t} AND {a} = {t}) AS n_already_target, "
           f"count(*) FILTER (WHERE {c} = {t} AND {a} <> {t}) AS n_changed_away, "
           f"count(*) FILTER (WHERE {c} <> {t} AND {a} <> {t}) AS n_neither, "
           f"count(*) FILTER (WHERE {c} = {y} AND {a} <> {y}) AS n_flipped, "
           f"count(*) FILTER (WHERE {c} IS NULL) AS n_no_clean "
           f"FROM ({_with_clean_sql(where)}) GROUP BY {_names(keys)}")
    counts = records.frame(sql)
    if counts["n_no_clean"].sum() > 0:
        image = records.scalar(f"SELECT image_id FROM ({_with_clean_sql(where)}) WHERE clean_pred IS NULL LIMIT 1")
        raise ValueError(f"attacked record of image {image!r} has no clean record")
    counts["pixel_cover_sum"] = counts.pop("pixel_cover_fixed").to_numpy(dtype=np.float64) / PIXEL_COVER_SCALE
    for col in OUTCOME_COUNT_COLUMNS:
        if col != "pixel_cover_sum":
            counts[col] = counts[col].to_numpy(dtype=np.int64)
    return counts[keys + OUTCOME_COUNT_COLUMNS]


def query_per_word_table(records: RecordSet, class_names: Sequence[str], where: str = "true") -> pd.DataFrame:
    """The per-word table (`metrics.build_per_word_table`) of the records, out of core."""
    return finish_per_word_table(query_outcome_counts(records, where), class_names)


def get_confusion_keys(records: RecordSet) -> list[str]:
    """The columns of a confusion cell: the condition (clean as word ""), the true and predicted class."""
    return [*MODEL_DEFENCE_KEYS, "word", "fraction", "placement", *get_style_keys(records), "true_index",
            "pred_index"]


def confusion_sql(records: RecordSet) -> str:
    """The query of the confusion counts: non-zero (true class x predicted class) cells of every
    condition, clean included, in key order (CONFUSION_COLUMNS, then the style columns)."""
    keys = get_confusion_keys(records)
    columns = CONFUSION_COLUMNS + get_style_keys(records)
    return (f"SELECT {_names(columns)} FROM (SELECT {_names(keys)}, count(*) AS count FROM records "
            f"GROUP BY {_names(keys)}) ORDER BY {_names(keys)}")


def write_confusion(records: RecordSet, parquet_path: Path, csv_path: Path,
                    max_csv_rows: int = CONFUSION_CSV_MAX_ROWS, top: int = CONFUSION_CSV_TOP) -> dict[str, object]:
    """Write confusion.parquet (every non-zero cell) and confusion.csv (all of them up to
    `max_csv_rows`, else the `top` cells with the most images of each condition).

    Returns:
        What run.json says of them: cells in all, cells in the CSV, the CSV's rule.
    """
    from typoattack.files import write_csv

    n_cells = records.copy_parquet(confusion_sql(records), parquet_path)
    with RecordSet.over_file(parquet_path, "confusion") as table:
        if n_cells <= max_csv_rows:
            frame, rule = table.frame("SELECT * FROM confusion"), "every cell"
        else:
            keys = [c for c in get_confusion_keys(records) if c not in ("true_index", "pred_index")]
            frame = table.frame(
                f"SELECT * EXCLUDE (k) FROM (SELECT *, row_number() OVER (PARTITION BY {_names(keys)} ORDER BY count "
                f"DESC, true_index, pred_index) AS k FROM confusion) WHERE k <= {int(top)} "
                f"ORDER BY {_names(keys)}, count DESC, true_index, pred_index")
            rule = f"the {top} cells with the most images per condition"
    for col in ("true_index", "pred_index", "count"):
        frame[col] = frame[col].astype(np.int64)
    write_csv(frame, csv_path)
    return {"cells": n_cells, "csv_cells": len(frame), "csv_rule": rule}


def iter_confusion_groups(confusion_files: Sequence[Path], keys: Sequence[str],
                          where: str = "true") -> Iterator[pd.DataFrame]:
    """The cells of confusion.parquet files (of one run or several), one frame per distinct value
    of `keys` (e.g. one word of one model), in key order: bounded memory over tables of any size."""
    with RecordSet(list(confusion_files), view="confusion", with_run=False) as table:
        pending: list[pd.DataFrame] = []
        last: tuple | None = None
        order = _names([*keys, *(c for c in table.columns if c not in keys)])
        for batch in table.iter_batches(f"SELECT * FROM confusion WHERE {where} ORDER BY {order}"):
            ids = list(zip(*(batch[k] for k in keys)))
            starts = [0] + [i for i in range(1, len(ids)) if ids[i] != ids[i - 1]] + [len(ids)]
            for lo, hi in zip(starts[:-1], starts[1:]):
                part = batch.iloc[lo:hi]
                if last is not None and ids[lo] != last:
                    yield pd.concat(pending, ignore_index=True)
                    pending = []
                pending.append(part)
                last = ids[lo]
        if pending:
            yield pd.concat(pending, ignore_index=True)


def query_clean_table(records: RecordSet) -> pd.DataFrame:
    """Clean top-1 and top-5 accuracy per (model, pretrained, defence) (`metrics.build_clean_table`)."""
    frame = records.frame(
        f"SELECT {_names(MODEL_DEFENCE_KEYS)}, count(*) AS n_images, "
        "count(*) FILTER (WHERE pred_index = true_index) AS n_top1, "
        "count(*) FILTER (WHERE list_contains(pred_top5, true_index)) AS n_top5 "
        f"FROM records WHERE word = {_CLEAN} GROUP BY ALL ORDER BY {_names(MODEL_DEFENCE_KEYS)}")
    n = frame["n_images"].to_numpy(dtype=np.int64)
    return pd.DataFrame({**{k: frame[k] for k in MODEL_DEFENCE_KEYS}, "n_images": n,
                         "clean_top1": frame["n_top1"].to_numpy(dtype=np.float64) / n,
                         "clean_top5": frame["n_top5"].to_numpy(dtype=np.float64) / n})
