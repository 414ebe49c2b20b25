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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from typoattack.analysis.metrics import (
    PSEUDO_TARGET, CONFUSION_COLUMNS, HEATMAP_MIN_IMAGES, HEATMAP_MIN_SHARE, MODEL_DEFENCE_KEYS, OUTCOME_COUNT_COLUMNS,
    TOP_CONFUSIONS_PER_WORD, finish_per_word_table, get_condition_keys, get_confusion_condition_keys,
    rank_top_confusions,
)
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.constants import CLEAN_WORD, RANDOM_CLASS_WORD

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


def _match(left: str, right: str, columns: Sequence[str], null_equal: bool = True) -> str:
    """Join condition on equal columns; with `null_equal`, NULL matches NULL (a run without style
    columns), else a NULL matches nothing (SQL's `=`)."""
    op = "IS NOT DISTINCT FROM" if null_equal else "="
    return " AND ".join(f"{left}.{quote_name(c)} {op} {right}.{quote_name(c)}" for c in columns)


def check_clean_rows(records: RecordSet, where: str = "true") -> None:
    """Check that every (model, pretrained, defence, image) has at most one clean record.

    Raises:
        ValueError: Two clean rows of one model, defence and image (records of two runs mixed).
    """
    n = records.scalar(f"SELECT count(*) FROM (SELECT {_names(_IMAGE_KEYS)} FROM records WHERE word = {_CLEAN} "
                       f"AND {where} GROUP BY ALL HAVING count(*) > 1)")
    if n:
        raise ValueError("records hold two clean rows for the same model, defence and image")


def _with_clean_sql(where: str = "true", columns: Sequence[str] | None = None) -> str:
    """The attacked records (of those matching `where`; only `columns` of them, default all) with
    `clean_pred`, the prediction on the same image without the attack (NULL when the image has no
    clean record). The records are scanned twice rather than through a CTE, which DuckDB may
    materialise: a scan streams, a materialised CTE holds every record."""
    on = _match("r", "c", _IMAGE_KEYS, null_equal=False)
    picked = "r.*" if columns is None else ", ".join(f"r.{quote_name(c)}" for c in columns)
    return (f"SELECT {picked}, c.pred_index AS clean_pred FROM (SELECT * FROM records WHERE {where}) r LEFT JOIN "
            f"(SELECT {_names(_IMAGE_KEYS)}, pred_index FROM records WHERE word = {_CLEAN} AND {where}) c ON {on} "
            f"WHERE r.word <> {_CLEAN}")


def query_outcome_counts(records: RecordSet, where: str = "true", by_target: bool = False) -> pd.DataFrame:
    """OUTCOME_COUNT_COLUMNS per condition, computed by one aggregate over the records (the query
    form of `metrics.count_outcomes`).

    Args:
        records: The run's records.
        where: A SQL condition on the records' columns (default: all).
        by_target: Count the pseudo-word `random-class` per target it drew (else one condition,
            target PSEUDO_TARGET: `metrics.get_target_key`).

    Raises:
        ValueError: Two clean rows of one image, or an attacked record without its clean record.
    """
    check_clean_rows(records, where)
    keys = get_condition_keys(records.columns)
    c, a, y, t = "clean_pred", "pred_index", "true_index", "target_index"
    # The pseudo-word's records carry the class each image was shown; its row counts them all together.
    target_key = (t if by_target else f"CASE WHEN word = {quote_literal(RANDOM_CLASS_WORD)} THEN {PSEUDO_TARGET} "
                  f"ELSE {t} END")
    group = ", ".join("_target_key" if k == t else quote_name(k) for k in keys)
    select = ", ".join(f"{target_key} AS _target_key" if k == t else quote_name(k) for k in keys)
    sql = (f"SELECT {select}, count(*) AS n_images, "
           f"sum(CAST(round(pixel_cover * {PIXEL_COVER_SCALE}) AS HUGEINT)) AS pixel_cover_fixed, "
           f"count(*) FILTER (WHERE {c} = {y}) AS n_clean_correct, "
           f"count(*) FILTER (WHERE {a} = {y}) AS n_attacked_correct, "
           f"count(*) FILTER (WHERE {c} <> {t} AND {a} = {t}) AS n_changed_to, "
           f"count(*) FILTER (WHERE {c} = {t} AND {a} = {t}) AS n_already_target, "
           f"count(*) FILTER (WHERE {c} = {t} AND {a} <> {t}) AS n_changed_away, "
           f"count(*) FILTER (WHERE {c} <> {t} AND {a} <> {t}) AS n_neither, "
           f"count(*) FILTER (WHERE {c} = {y} AND {a} <> {y}) AS n_flipped, "
           f"count(*) FILTER (WHERE {c} IS NULL) AS n_no_clean "
           f"FROM ({_with_clean_sql(where, [*keys, 'pixel_cover', 'true_index', 'pred_index', 'image_id'])}) "
           f"GROUP BY {group} ORDER BY {group}")  # in key order, as `metrics.count_outcomes`
    counts = records.frame(sql).rename(columns={"_target_key": t})
    if counts["n_no_clean"].sum() > 0:
        image = records.scalar(f"SELECT image_id FROM ({_with_clean_sql(where)}) WHERE clean_pred IS NULL LIMIT 1")
        raise ValueError(f"attacked record of image {image!r} has no clean record")
    counts["pixel_cover_sum"] = counts.pop("pixel_cover_fixed").to_numpy(dtype=np.float64) / PIXEL_COVER_SCALE
    for col in OUTCOME_COUNT_COLUMNS:
        if col != "pixel_cover_sum":
            counts[col] = counts[col].to_numpy(dtype=np.int64)
    return counts[keys + OUTCOME_COUNT_COLUMNS]


def query_per_word_table(records: RecordSet, class_names: Sequence[str], where: str = "true",
                         by_target: bool = False) -> pd.DataFrame:
    """The per-word table (`metrics.build_per_word_table`) of the records, out of core."""
    return finish_per_word_table(query_outcome_counts(records, where, by_target), class_names)


CONFUSION_PART_ROWS = 500_000
"""confusion.parquet is written in parts of about this many cells, each sorted on its own: the
whole table is never sorted (nor held) at once."""


def write_confusion(records: RecordSet, parquet_path: Path, csv_path: Path,
                    max_csv_rows: int = CONFUSION_CSV_MAX_ROWS, top: int = CONFUSION_CSV_TOP) -> dict[str, object]:
    """Write confusion.parquet (every non-zero (true class x predicted class) cell of every
    condition, clean included: CONFUSION_COLUMNS then the style columns, in key order) and
    confusion.csv (all of them up to `max_csv_rows`, else the `top` cells with the most images of
    each condition, ties by true then predicted class).

    Out of core at any size: the conditions get integer ids in key order (a table of a few
    thousand rows), the records are counted per (condition id, true, predicted class) into a
    temporary table of integers (DuckDB spills it), and the file is written in ranges of condition
    ids, each range joined back to its conditions and sorted alone.

    Returns:
        What run.json says of them: cells in all, cells in the CSV, the CSV's rule.
    """
    import pyarrow.parquet as pq

    from typoattack.files import write_atomic, write_csv

    keys = get_confusion_condition_keys(records.columns)
    columns = ", ".join(f"c.{quote_name(c)}" for c in keys)
    records.execute(f"CREATE OR REPLACE TEMP TABLE _conditions AS SELECT {_names(keys)}, "
                    f"row_number() OVER (ORDER BY {_names(keys)}) AS cid FROM (SELECT DISTINCT {_names(keys)} "
                    f"FROM records)")
    records.execute(f"CREATE OR REPLACE TEMP TABLE _cells AS SELECT c.cid, r.true_index, r.pred_index, "
                    f"count(*) AS count FROM records r JOIN _conditions c ON {_match('r', 'c', keys)} GROUP BY ALL")
    sizes = records.frame("SELECT cid, count(*) AS n FROM _cells GROUP BY cid ORDER BY cid")
    select = (f"SELECT {columns}, g.true_index, g.pred_index, g.count FROM _cells g JOIN _conditions c USING (cid)")
    ordered = [*CONFUSION_COLUMNS, *(c for c in keys if c not in CONFUSION_COLUMNS)]
    order = ", ".join(quote_name(c) for c in ordered)

    def write(tmp: Path) -> None:
        writer = None
        try:
            for lo, hi in _split_ranges(sizes["cid"].to_numpy(), sizes["n"].to_numpy(), CONFUSION_PART_ROWS):
                for batch in records.iter_arrow(f"SELECT {order} FROM ({select} WHERE g.cid BETWEEN {lo} AND {hi} "
                                                "ORDER BY g.cid, g.true_index, g.pred_index)"):
                    writer = writer or pq.ParquetWriter(tmp, batch.schema)
                    writer.write_batch(batch)
            if writer is None:  # no record: an empty table with the columns
                empty = records.execute(f"SELECT {order} FROM ({select}) LIMIT 0").to_arrow_table()
                pq.write_table(empty, tmp)
        finally:
            if writer is not None:
                writer.close()

    write_atomic(Path(parquet_path), write)
    n_cells = int(sizes["n"].sum())
    if n_cells <= max_csv_rows:
        frame, rule = records.frame(f"SELECT {order} FROM ({select}) ORDER BY {order}"), "every cell"
    else:
        frame = records.frame(
            f"WITH best AS (SELECT cid, unnest(arg_max(struct_pack(true_index := true_index, pred_index := pred_index, "
            f"count := count), struct_pack(c := count, t := -true_index, p := -pred_index), {int(top)})) AS b "
            f"FROM _cells GROUP BY cid) "
            f"SELECT {order} FROM (SELECT {columns}, b.true_index, b.pred_index, b.count "
            f"FROM best JOIN _conditions c USING (cid)) ORDER BY {_names(keys)}, count DESC, true_index, pred_index")
        rule = f"the {top} cells with the most images per condition"
    records.execute("DROP TABLE _cells; DROP TABLE _conditions")
    for col in ("true_index", "pred_index", "count"):
        frame[col] = frame[col].astype(np.int64)
    write_csv(frame, csv_path)
    return {"cells": n_cells, "csv_cells": len(frame), "csv_rule": rule}


def _split_ranges(ids: np.ndarray, sizes: np.ndarray, rows: int) -> list[tuple[int, int]]:
    """Consecutive ranges of `ids` (sorted) whose sizes add up to about `rows` (a larger id alone)."""
    ranges: list[tuple[int, int]] = []
    total = 0
    for i, n in zip(ids.tolist(), sizes.tolist()):
        if ranges and total + n <= rows:
            ranges[-1] = (ranges[-1][0], i)
            total += n
        else:
            ranges.append((i, i))
            total = n
    return ranges


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


class ConfusionTables:
    """Queries over the confusion.parquet files of one or several runs (their cells added up): the
    top confusions, the heatmap words and the cells of one word, sharing one connection. The per
    condition counts they need (`n`: images; `gains`: per predicted class, the images of other
    classes predicted as it, on the attacked and on the clean images) are computed once, as
    temporary tables of one row per (condition, predicted class)."""

    def __init__(self, confusion_files: Sequence[Path]) -> None:
        self.files = list(confusion_files)
        self.table = RecordSet(self.files, view="confusion", with_run=False)
        self.keys = get_confusion_condition_keys(self.table.columns)
        self._ready = False

    def __enter__(self) -> ConfusionTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.table.close()

    def _prepare(self) -> None:
        """Integer ids for the conditions (`cid`, in key order) and the model-defence pairs (`mid`),
        then the cells and the per-condition counts as tables of integers: every aggregate below
        groups integers, which DuckDB spills, never the wide string keys."""
        if self._ready:
            return
        k, m = _names(self.keys), _names(MODEL_DEFENCE_KEYS)
        run = self.table.execute
        run(f"CREATE TEMP TABLE conds AS SELECT *, row_number() OVER (ORDER BY {k}) AS cid, "
            f"dense_rank() OVER (ORDER BY {m}) AS mid, word = {_CLEAN} AS clean FROM (SELECT DISTINCT {k} FROM confusion)")
        run(f"CREATE TEMP TABLE cells AS SELECT c.cid, c.mid, c.clean, x.true_index, x.pred_index, "
            f"sum(x.count) AS count FROM confusion x JOIN conds c ON {_match('x', 'c', self.keys)} GROUP BY ALL")
        run("CREATE TEMP TABLE n AS SELECT cid, sum(count) AS n_images FROM cells WHERE NOT clean GROUP BY cid")
        run("CREATE TEMP TABLE into_clean AS SELECT mid, pred_index, sum(count) AS into_clean FROM cells "
            "WHERE clean AND true_index <> pred_index GROUP BY ALL")
        run("CREATE TEMP TABLE gains AS SELECT i.*, coalesce(c.into_clean, 0) AS into_clean, "
            "i.into_count - coalesce(c.into_clean, 0) AS gain FROM (SELECT cid, mid, pred_index, "
            "sum(count) AS into_count FROM cells WHERE NOT clean AND true_index <> pred_index GROUP BY ALL) i "
            "LEFT JOIN into_clean c USING (mid, pred_index)")
        self._ready = True

    def top_confusions(self, n: int = TOP_CONFUSIONS_PER_WORD) -> pd.DataFrame:
        """`metrics.build_top_confusions`: the best cell of each condition is found by one aggregate
        (`arg_max` over (count, gain, -true, -pred)); only those rows (one per condition) reach
        pandas, which ranks them per word as the reference does."""
        self._prepare()
        columns = ", ".join(f"c.{quote_name(col)}" for col in self.keys)
        best = self.table.frame(
            "WITH best AS (SELECT a.cid, a.mid, arg_max(struct_pack(true_index := a.true_index, "
            "pred_index := a.pred_index, count := a.count, into_count := g.into_count, into_clean := g.into_clean, "
            "gain := g.gain), struct_pack(c := a.count, g := g.gain, t := -a.true_index, p := -a.pred_index)) AS b "
            "FROM cells a JOIN gains g USING (cid, pred_index) WHERE NOT a.clean AND a.true_index <> a.pred_index "
            "GROUP BY a.cid, a.mid) "
            f"SELECT {columns}, b.b.true_index, b.b.pred_index, b.b.count, n.n_images, "
            "coalesce(cc.count, 0) AS clean_count, b.b.into_count, b.b.into_clean, b.b.gain "
            "FROM best b JOIN conds c USING (cid) JOIN n USING (cid) LEFT JOIN (SELECT mid, true_index, pred_index, "
            "count FROM cells WHERE clean) cc ON cc.mid = b.mid AND cc.true_index = b.b.true_index "
            "AND cc.pred_index = b.b.pred_index")
        return rank_top_confusions(best, self.keys, n)

    def heatmap_words(self, defence: str | None = None, limit: int | None = None,
                      min_images: int = HEATMAP_MIN_IMAGES, min_share: float = HEATMAP_MIN_SHARE) -> list[str]:
        """`metrics.select_heatmap_words` (of one defence, or all)."""
        self._prepare()
        where = "true" if defence is None else f"c.defence = {quote_literal(defence)}"
        best = self.table.frame(
            "SELECT c.word, max(g.gain / n.n_images) AS share FROM gains g JOIN n USING (cid) JOIN conds c "
            f"USING (cid) WHERE {where} AND g.gain >= {int(min_images)} AND g.gain / n.n_images >= "
            f"{float(min_share)!r} GROUP BY c.word")
        best = best.sort_values(["share", "word"], ascending=[False, True], kind="stable")
        words = [str(w) for w in best["word"]]
        return words if limit is None else words[:limit]

    def cells(self, where: str) -> pd.DataFrame:
        """The cells matching a SQL condition (e.g. one word and the clean images of one defence)."""
        columns = list(self.table.columns)
        frame = self.table.frame(f"SELECT * FROM confusion WHERE {where}")
        if len(self.files) > 1:
            keys = [c for c in columns if c != "count"]
            frame = frame.groupby(keys, sort=True, dropna=False)["count"].sum().reset_index()[columns]
        frame["count"] = frame["count"].astype(np.int64)
        return frame


def query_top_confusions(confusion_files: Sequence[Path], n: int = TOP_CONFUSIONS_PER_WORD) -> pd.DataFrame:
    """`metrics.build_top_confusions` over confusion.parquet files, out of core."""
    with ConfusionTables(confusion_files) as tables:
        return tables.top_confusions(n)


def query_heatmap_words(confusion_files: Sequence[Path], defence: str | None = None, limit: int | None = None,
                        min_images: int = HEATMAP_MIN_IMAGES, min_share: float = HEATMAP_MIN_SHARE) -> list[str]:
    """`metrics.select_heatmap_words` over confusion.parquet files (of one defence, or all), out of core."""
    with ConfusionTables(confusion_files) as tables:
        return tables.heatmap_words(defence, limit, min_images, min_share)
