"""The records of `typoattack threshold` (one row per image x model x defence x word x placement x style)
and its tables, as queries over them (no model code):

- per_word_threshold.csv: per model, defence, word, placement and style, for each threshold (f_target,
  f_flip): the pairs it applies to, the share reached at or below the largest fraction, the median with a
  seeded bootstrap 95% interval, the quartiles, and the share of non-monotone pairs;
- leaderboard_threshold.csv: per model and defence, the same pooled over every word, placement and
  style, most robust first (highest median fraction to flip);
- threshold_curve.csv: the robustness curve, the share of pairs whose threshold is at or below each
  fraction of a fixed log grid (the empirical CDF, read at the grid), per model, defence and threshold.

**Medians of censored values.** A threshold not reached below the largest fraction is counted as larger
than every fraction (+inf), so the median is the fraction by which half of the pairs have changed (the
point where the robustness curve crosses 50%); it is NaN when fewer than half change at all (the report
says "> max"), and so are quartiles and interval ends beyond the largest fraction. A pair that already
changed at the smallest fraction counts at that fraction (`at_min`: an upper bound). Quantile q is the
smallest value v with at least ceil(q x n) values <= v.

**Bounded queries.** The searched fractions lie on a lattice (`search.get_lattice_fraction`), so a group's
thresholds take at most a few thousand distinct values whatever the number of images: SQL counts the
pairs per (group, value) and streams them in group order; the quantiles and the bootstrap (multinomial
resampling of those counts, seeded by the group's key) are finished in numpy. `build_*_reference` compute
the same from records in memory (the reference the property test holds the queries to).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.engine.rundir import RunInfo
from typoattack.files import write_csv
from typoattack.records import STYLE_COLUMNS
from typoattack.tasks.threshold.search import (
    AT_MIN, CLEAN_IS_TARGET, CLEAN_WRONG, FOUND, OUTCOMES, REASONS, UNREACHABLE, SearchResult,
)

SERIES_COLUMNS = ["word", "target_index", "placement", *STYLE_COLUMNS]
OUTCOME_FIELDS = {"f": "float64", "reason": "object", "lo": "float64", "hi": "float64", "pred_lo": "int64",
                  "pred_hi": "int64", "cover_lo": "float64", "cover": "float64", "non_monotone": "bool"}


def _outcome_column(outcome: str, name: str) -> str:
    return f"f_{outcome}" if name == "f" else f"{outcome}_{name}"


THRESHOLD_COLUMNS: dict[str, str] = {
    "image_id": "object", "true_index": "int64", "model": "object", "pretrained": "object", "defence": "object",
    "word": "object", "target_index": "int64", "placement": "object", "font": "object", "fill": "object",
    "outline": "object", "outline_width": "int64", "opacity": "float64",
    "range_lo": "float64", "range_hi": "float64", "clean_pred": "int64",
    **{_outcome_column(o, name): dtype for o in OUTCOMES for name, dtype in OUTCOME_FIELDS.items()},
}
"""The record columns and their dtypes, in order (records.parquet/ is the run's thresholds table):

- image_id, true_index: the image; model, pretrained, defence: who classified it.
- word, target_index, placement, font, fill, outline, outline_width, opacity: the series searched.
- range_lo, range_hi: [--min-fraction, --max-fraction] clipped to what the word and placement can be
  drawn at on the model's canvas (NaN: nothing in it can be drawn).
- clean_pred: the clean prediction (under this defence).
- for each threshold, `target` (the prediction becomes target_index) and `flip` (it leaves true_index):
  f_target / f_flip: the smallest fraction found (the bracket's upper end), NaN unless the reason is
  found or at_min; target_reason / flip_reason: `search.REASONS`; target_lo, target_hi: the bracketing
  fractions (lo 0.0: the clean image, for at_min; hi NaN when not reached); target_pred_lo,
  target_pred_hi: the predictions there (-1: none); target_cover_lo, target_cover: the measured pixel
  cover there (target_cover is the cover at the threshold); target_non_monotone: the outcome, once
  reached on the grid, was lost again at a later grid point.
"""
KEY_COLUMNS = ["model", "pretrained", "defence", *SERIES_COLUMNS]
MODEL_KEYS = ["model", "pretrained", "defence"]
STATS = ["n", "reached", "at_min", "median", "median_ci_low", "median_ci_high", "q25", "q75", "non_monotone"]
"""Per threshold, the columns `<outcome>_<stat>` of the tables: n (pairs it applies to), reached (share
found or at_min), at_min (share already changed at the smallest fraction), the median with its bootstrap
interval, the quartiles, non_monotone (share)."""
PER_WORD_COLUMNS = [*KEY_COLUMNS, "n_pairs", "range_lo", "range_hi", *[f"{o}_{s}" for o in OUTCOMES for s in STATS]]
LEADERBOARD_COLUMNS = ["rank", *MODEL_KEYS, "n_pairs", *[f"{o}_{s}" for o in OUTCOMES for s in STATS]]
CURVE_COLUMNS = [*MODEL_KEYS, "outcome", "fraction", "n", "share"]
PER_WORD_CSV = "per_word_threshold.csv"
LEADERBOARD_CSV = "leaderboard_threshold.csv"
CURVE_CSV = "threshold_curve.csv"
OUTPUT_FILES = (PER_WORD_CSV, LEADERBOARD_CSV, CURVE_CSV)
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
"""The bootstrap's generator is keyed on (BOOTSTRAP_SEED, a hash of the group's key and threshold), so a
group's interval does not depend on which other groups a run or report holds."""
CURVE_STEPS_PER_DECADE = 64
CURVE_DECADES = 4
"""The robustness curve is read at 10^(-k / 64), k = 0..256 (fractions 1e-4 to 1, 3.7% apart)."""
_ELIGIBLE = {o: f"{o}_reason NOT IN ({', '.join(quote_literal(REASONS[r]) for r in (CLEAN_IS_TARGET, CLEAN_WRONG, UNREACHABLE))})"
             for o in OUTCOMES}
_REACHED = {o: f"{o}_reason IN ({quote_literal(REASONS[FOUND])}, {quote_literal(REASONS[AT_MIN])})" for o in OUTCOMES}


def build_threshold_records(result: SearchResult, image_ids: Sequence[str], true_index: np.ndarray,
                            series_columns: Sequence[dict[str, Any]], ranges: Sequence[tuple[float | None, float | None]],
                            fractions: Sequence[np.ndarray], model: str, pretrained: str | None,
                            defences: Sequence[str]) -> pd.DataFrame:
    """The records of one cell's search (THRESHOLD_COLUMNS), image by image, then defence by defence, then
    series in run order.

    Args:
        result: The search.
        image_ids, true_index: The cell's images [I].
        series_columns: Per series, its SERIES_COLUMNS values.
        ranges: Per series, its clipped range (None, None when unreachable).
        fractions: Per series, float64 [n_intervals + 1] its lattice fractions (empty when unreachable).
        model, pretrained: The model.
        defences: The defence labels [D].
    """
    n_img, n_ser, n_def, _ = result.reason.shape
    order = (n_img, n_def, n_ser)  # records: image, defence, series

    def lay(a: np.ndarray) -> np.ndarray:  # [I, S, D] -> flat in record order
        return np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(-1)

    img = np.repeat(np.arange(n_img), n_def * n_ser)
    ser = np.tile(np.arange(n_ser), n_img * n_def)
    dfn = np.tile(np.repeat(np.arange(n_def), n_ser), n_img)
    columns: dict[str, Any] = {
        "image_id": np.asarray(list(image_ids), dtype=object)[img], "true_index": np.asarray(true_index)[img],
        "model": model, "pretrained": pretrained or "", "defence": np.asarray(list(defences), dtype=object)[dfn],
    }
    for name in SERIES_COLUMNS:
        columns[name] = np.asarray([c[name] for c in series_columns], dtype=object)[ser]
    columns["range_lo"] = np.array([np.nan if r[0] is None else r[0] for r in ranges], dtype=np.float64)[ser]
    columns["range_hi"] = np.array([np.nan if r[1] is None else r[1] for r in ranges], dtype=np.float64)[ser]
    columns["clean_pred"] = result.clean_pred[img, dfn]
    reasons = np.asarray(REASONS, dtype=object)

    def fraction_of(j: np.ndarray) -> np.ndarray:
        out = np.full(len(j), np.nan)
        out[j == -1] = 0.0
        for s in range(n_ser):
            sel = (ser == s) & (j >= 0)
            if sel.any():
                out[sel] = fractions[s][j[sel]]
        return out

    for o, outcome in enumerate(OUTCOMES):
        reason = lay(result.reason[..., o])
        lo, hi = fraction_of(lay(result.j_lo[..., o])), fraction_of(lay(result.j_hi[..., o]))
        reached = (reason == FOUND) | (reason == AT_MIN)
        values = {"f": np.where(reached, hi, np.nan), "reason": reasons[reason], "lo": lo, "hi": hi,
                  "pred_lo": lay(result.pred_lo[..., o]), "pred_hi": lay(result.pred_hi[..., o]),
                  "cover_lo": lay(result.cover_lo[..., o]), "cover": lay(result.cover_hi[..., o]),
                  "non_monotone": lay(result.non_monotone[..., o])}
        for name, value in values.items():
            columns[_outcome_column(outcome, name)] = value
    frame = pd.DataFrame(columns, index=pd.RangeIndex(int(np.prod(order))))
    return frame[list(THRESHOLD_COLUMNS)].astype(THRESHOLD_COLUMNS)


def empty_threshold_records() -> pd.DataFrame:
    """A chunk without records (every image of the cell skipped), with the columns' dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in THRESHOLD_COLUMNS.items()})


# ---------------------------------------------------------------------------------------------------------
# Finishing: quantiles and the bootstrap of one group's counted thresholds.

def _group_seed(key: Sequence[Any], outcome: str) -> list[int]:
    text = json.dumps([str(k) for k in key] + [outcome])
    return [BOOTSTRAP_SEED, int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")]


def _quantile_index(cum: np.ndarray, n: int, q: float) -> np.ndarray:
    """Index of the smallest value with at least ceil(q n) values at or below it, per row of `cum`."""
    rank = max(1, math.ceil(q * n - 1e-9))
    return np.argmax(cum >= rank, axis=-1)


def _finite(value: float) -> float:
    return float(value) if np.isfinite(value) else float("nan")


def summarize_thresholds(values: np.ndarray, counts: np.ndarray, key: Sequence[Any], outcome: str) -> dict[str, float]:
    """Median (with its seeded bootstrap 95% interval) and quartiles of one group's thresholds.

    Args:
        values: float64 [K] distinct thresholds, ascending (+inf: not reached).
        counts: int [K] pairs at each.
        key: The group's key (seeds its bootstrap).
        outcome: target or flip (seeds it too).

    Returns:
        median, median_ci_low, median_ci_high, q25, q75 (NaN where beyond the largest fraction or no pair).
    """
    nan = float("nan")
    n = int(np.sum(counts))
    if n == 0:
        return {"median": nan, "median_ci_low": nan, "median_ci_high": nan, "q25": nan, "q75": nan}
    cum = np.cumsum(counts)
    out = {name: _finite(values[_quantile_index(cum, n, q)]) for name, q in (("median", 0.5), ("q25", 0.25),
                                                                               ("q75", 0.75))}
    rng = np.random.default_rng(_group_seed(key, outcome))
    p = np.asarray(counts, dtype=np.float64) / n
    block = max(1, 2_000_000 // max(len(values), 1))
    medians = []
    for start in range(0, BOOTSTRAP_RESAMPLES, block):
        draws = rng.multinomial(n, p, size=min(block, BOOTSTRAP_RESAMPLES - start))
        medians.append(values[_quantile_index(np.cumsum(draws, axis=1), n, 0.5)])
    ordered = np.sort(np.concatenate(medians))
    low = ordered[int(math.floor(0.025 * BOOTSTRAP_RESAMPLES))]
    high = ordered[int(math.ceil(0.975 * BOOTSTRAP_RESAMPLES)) - 1]
    out["median_ci_low"], out["median_ci_high"] = _finite(low), _finite(high)
    return {k: out[k] for k in ("median", "median_ci_low", "median_ci_high", "q25", "q75")}


def _finish(counts: pd.DataFrame, values: dict[str, dict[tuple, tuple[np.ndarray, np.ndarray]]],
            keys: list[str]) -> pd.DataFrame:
    """The table rows of `counts` (a row per group: n_pairs, `<o>_n`, `<o>_reached_n`, `<o>_at_min_n`,
    `<o>_non_monotone_n` and any extra columns) with the shares and each group's quantiles."""
    rows = []
    for row in counts.to_dict("records"):
        key = tuple(row[k] for k in keys)
        out = {k: row[k] for k in row if not k.endswith("_n") or k == "n_pairs"}
        for o in OUTCOMES:
            n = int(row[f"{o}_n"])
            out[f"{o}_n"] = n
            for stat in ("reached", "at_min", "non_monotone"):
                out[f"{o}_{stat}"] = row[f"{o}_{stat}_n"] / n if n else float("nan")
            v, c = values[o].get(key, (np.zeros(0), np.zeros(0, dtype=np.int64)))
            out.update({f"{o}_{k}": x for k, x in summarize_thresholds(v, c, key, o).items()})
        rows.append(out)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------
# The queries.

def _count_sql(keys: list[str], extra: Sequence[str] = ()) -> str:
    """Per group of `keys` (all records when empty), in key order: n_pairs and, per threshold, the pairs it
    applies to (`<o>_n`), reached, at_min and non-monotone (`<o>_<stat>_n`), and `extra` aggregates."""
    parts = ["count(*) AS n_pairs", *extra]
    for o in OUTCOMES:
        parts += [f"count(*) FILTER (WHERE {_ELIGIBLE[o]}) AS {o}_n",
                  f"count(*) FILTER (WHERE {_REACHED[o]}) AS {o}_reached_n",
                  f"count(*) FILTER (WHERE {o}_reason = {quote_literal(REASONS[AT_MIN])}) AS {o}_at_min_n",
                  f"count(*) FILTER (WHERE {_ELIGIBLE[o]} AND {o}_non_monotone) AS {o}_non_monotone_n"]
    if not keys:
        return f"SELECT {', '.join(parts)} FROM records"
    cols = ", ".join(quote_name(k) for k in keys)
    return f"SELECT {cols}, {', '.join(parts)} FROM records GROUP BY {cols} ORDER BY {cols}"


def _iter_value_groups(records: RecordSet, keys: list[str], outcome: str) -> Iterator[tuple[tuple, np.ndarray, np.ndarray]]:
    """(group key, ascending distinct thresholds (+inf: not reached), pairs at each) of every group, in key
    order, streamed (a group may span two batches)."""
    cols = ", ".join(quote_name(k) for k in keys)
    value = f"CASE WHEN {_REACHED[outcome]} THEN f_{outcome} ELSE 'inf'::DOUBLE END"
    sql = (f"SELECT {cols}, {value} AS v, count(*) AS k FROM records WHERE {_ELIGIBLE[outcome]} "
           f"GROUP BY {cols}, v ORDER BY {cols}, v")
    pending: tuple[tuple, list[np.ndarray], list[np.ndarray]] | None = None
    for batch in records.iter_batches(sql):
        key_frame = batch[keys]
        starts = np.flatnonzero(np.r_[True, (key_frame.iloc[1:].to_numpy() != key_frame.iloc[:-1].to_numpy()).any(axis=1)])
        bounds = list(zip(starts, np.r_[starts[1:], len(batch)]))
        v, k = batch["v"].to_numpy(np.float64), batch["k"].to_numpy(np.int64)
        for a, b in bounds:
            key = tuple(key_frame.iloc[a])
            if pending is not None and pending[0] == key:
                pending[1].append(v[a:b])
                pending[2].append(k[a:b])
                continue
            if pending is not None:
                yield pending[0], np.concatenate(pending[1]), np.concatenate(pending[2])
            pending = (key, [v[a:b]], [k[a:b]])
    if pending is not None:
        yield pending[0], np.concatenate(pending[1]), np.concatenate(pending[2])


def _plain_key(key: tuple) -> tuple:
    return tuple(x.item() if isinstance(x, np.generic) else x for x in key)


def _query_table(records: RecordSet, keys: list[str], extra: Sequence[str] = ()) -> pd.DataFrame:
    counts = records.frame(_count_sql(keys, extra))
    values = {o: {_plain_key(key): (v, c) for key, v, c in _iter_value_groups(records, keys, o)} for o in OUTCOMES}
    return _finish(counts, values, keys)


def query_per_word_threshold(records: RecordSet) -> pd.DataFrame:
    """per_word_threshold.csv (PER_WORD_COLUMNS), one row per model, defence and series, in key order."""
    table = _query_table(records, KEY_COLUMNS, ["min(range_lo) AS range_lo", "max(range_hi) AS range_hi"])
    return table.reindex(columns=PER_WORD_COLUMNS) if not table.empty else pd.DataFrame(columns=PER_WORD_COLUMNS)


def rank_leaderboard(table: pd.DataFrame) -> pd.DataFrame:
    """Most robust first: highest median fraction to flip (NaN, more than half never flip, first), then
    highest median fraction to reach the target; `rank` from 1."""
    if table.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    flip = table["flip_median"].fillna(np.inf).where(table["flip_n"] > 0, -np.inf)
    target = table["target_median"].fillna(np.inf).where(table["target_n"] > 0, -np.inf)
    ranked = table.assign(_f=-flip, _t=-target).sort_values(["_f", "_t", *MODEL_KEYS], kind="stable")
    ranked = ranked.drop(columns=["_f", "_t"]).reset_index(drop=True)
    ranked.insert(0, "rank", np.arange(1, len(ranked) + 1))
    return ranked.reindex(columns=LEADERBOARD_COLUMNS)


def query_leaderboard(records: RecordSet) -> pd.DataFrame:
    """leaderboard_threshold.csv: per model and defence, every series pooled, most robust first."""
    return rank_leaderboard(_query_table(records, MODEL_KEYS))


def get_curve_fractions() -> np.ndarray:
    """The fractions the robustness curve is read at, ascending."""
    k = np.arange(CURVE_STEPS_PER_DECADE * CURVE_DECADES, -1, -1)
    return 10.0 ** (-k / CURVE_STEPS_PER_DECADE)


def _curve_from_counts(groups: Iterator[tuple[tuple, np.ndarray, np.ndarray]], outcome: str) -> list[dict[str, Any]]:
    grid = get_curve_fractions()
    rows = []
    for key, v, c in groups:
        n = int(c.sum())
        reached = np.r_[0, np.cumsum(c)][np.searchsorted(v, grid, side="right")]  # +inf is never at or below
        rows += [{**dict(zip(MODEL_KEYS, key)), "outcome": outcome, "fraction": float(f), "n": n,
                  "share": float(r) / n if n else float("nan")} for f, r in zip(grid, reached)]
    return rows


def query_curve(records: RecordSet) -> pd.DataFrame:
    """threshold_curve.csv: per model, defence and threshold, the share of pairs whose threshold is at or
    below each fraction of `get_curve_fractions` (the empirical CDF; pairs not reached never count)."""
    rows = [r for o in OUTCOMES for r in _curve_from_counts(_iter_value_groups(records, MODEL_KEYS, o), o)]
    frame = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    return frame.sort_values([*MODEL_KEYS, "outcome", "fraction"], kind="stable").reset_index(drop=True)


def write_threshold_tables(records: RecordSet, out: Path, info: RunInfo | None = None) -> pd.DataFrame:
    """Write per_word_threshold.csv, leaderboard_threshold.csv and threshold_curve.csv into `out` from the
    records; return the leaderboard (the summary). Fills run.json's `thresholds` with the non-monotone
    shares when `info` is given."""
    out.mkdir(parents=True, exist_ok=True)
    per_word = query_per_word_threshold(records)
    leaderboard = query_leaderboard(records)
    write_csv(per_word, out / PER_WORD_CSV)
    write_csv(leaderboard, out / LEADERBOARD_CSV)
    write_csv(query_curve(records), out / CURVE_CSV)
    if info is not None:
        totals = records.frame(_count_sql([])).iloc[0]
        info.extra["thresholds"] = {"n_pairs": int(totals["n_pairs"]), **{
            f"{o}_non_monotone": float(totals[f"{o}_non_monotone_n"] / totals[f"{o}_n"]) if totals[f"{o}_n"] else None
            for o in OUTCOMES}}
    return leaderboard


# ---------------------------------------------------------------------------------------------------------
# The pandas reference (records in memory): what the property test compares the queries with.

def _reference(records: pd.DataFrame, keys: list[str], extra: dict[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    frame = records.copy()
    agg: dict[str, Any] = {"n_pairs": ("image_id", "size")}
    for o in OUTCOMES:
        eligible = ~frame[f"{o}_reason"].isin([REASONS[r] for r in (CLEAN_IS_TARGET, CLEAN_WRONG, UNREACHABLE)])
        reached = frame[f"{o}_reason"].isin([REASONS[FOUND], REASONS[AT_MIN]])
        frame[f"_{o}_e"] = eligible.astype(int)
        frame[f"_{o}_r"] = reached.astype(int)
        frame[f"_{o}_m"] = (frame[f"{o}_reason"] == REASONS[AT_MIN]).astype(int)
        frame[f"_{o}_nm"] = (eligible & frame[f"{o}_non_monotone"].astype(bool)).astype(int)
        frame[f"_{o}_v"] = np.where(reached, frame[f"f_{o}"], np.inf)
        agg.update({f"{o}_n": (f"_{o}_e", "sum"), f"{o}_reached_n": (f"_{o}_r", "sum"),
                    f"{o}_at_min_n": (f"_{o}_m", "sum"), f"{o}_non_monotone_n": (f"_{o}_nm", "sum")})
    agg.update(extra or {})
    counts = frame.groupby(keys, sort=True, dropna=False).agg(**agg).reset_index()
    values: dict[str, dict[tuple, tuple[np.ndarray, np.ndarray]]] = {}
    for o in OUTCOMES:
        eligible = frame[frame[f"_{o}_e"] == 1]
        values[o] = {}
        for key, rows in eligible.groupby(keys, sort=True):
            v, c = np.unique(rows[f"_{o}_v"].to_numpy(np.float64), return_counts=True)
            values[o][_plain_key(key if isinstance(key, tuple) else (key,))] = (v, c)
    return _finish(counts, values, keys)


def build_per_word_threshold_reference(records: pd.DataFrame) -> pd.DataFrame:
    """`query_per_word_threshold` computed in pandas from records in memory."""
    table = _reference(records, KEY_COLUMNS, {"range_lo": ("range_lo", "min"), "range_hi": ("range_hi", "max")})
    return table.reindex(columns=PER_WORD_COLUMNS)


def build_leaderboard_reference(records: pd.DataFrame) -> pd.DataFrame:
    """`query_leaderboard` computed in pandas from records in memory."""
    return rank_leaderboard(_reference(records, MODEL_KEYS))
