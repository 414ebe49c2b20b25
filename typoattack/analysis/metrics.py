"""Attack metrics as pure functions of the per-image record table (no model code): the per-word,
confusion and clean tables, and the leaderboard computed from the per-word table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from typoattack.constants import CLEAN_WORD
from typoattack.config.defences import get_baseline
from typoattack.records import CONDITION_COLUMNS, DEFENCE_COLUMN, MODEL_COLUMNS, NO_DEFENCE, STYLE_COLUMNS

# A per-word row is one condition of one model under one defence; style columns join the key when
# records carry them.
CONDITION_KEYS = [*MODEL_COLUMNS, DEFENCE_COLUMN, *(c for c in CONDITION_COLUMNS if c not in STYLE_COLUMNS)]
# Model and defence: the rows of the leaderboard and the clean table.
MODEL_DEFENCE_KEYS = [*MODEL_COLUMNS, DEFENCE_COLUMN]
PER_WORD_COLUMNS = [
    "model", "pretrained", "defence", "word", "target_index", "target_name", "fraction", "placement",
    "n_images", "pixel_cover_mean", "clean_top1", "attacked_top1", "asr", "asr_ci_low",
    "asr_ci_high", "changed_to", "already_target", "changed_away", "neither", "flip_rate",
]
CONFUSION_COLUMNS = ["model", "pretrained", "defence", "word", "fraction", "placement", "true_index", "pred_index", "count"]
LEADERBOARD_BASE_COLUMNS = ["model", "pretrained", "defence", "n_images", "clean_top1", "attacked_top1", "mean_asr"]
_LEADERBOARD_REQUIRED = ["model", "pretrained", "fraction", "n_images", "clean_top1", "attacked_top1", "asr"]
_Z95 = 1.959963984540054


def wilson_interval(successes: np.ndarray | int, n: np.ndarray | int, z: float = _Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion.

    Args:
        successes: Number of successes (array or scalar).
        n: Number of trials; where 0 the bounds are NaN.
        z: Normal quantile (1.96 for 95%).

    Returns:
        (low, high), each in [0, 1].
    """
    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    # Exact bounds at the ends: float rounding would leave k/n = 0 or 1 just outside the interval.
    low = np.where(k == 0, 0.0, low)
    high = np.where(k == n, 1.0, high)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def with_defence(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a `defence` column (`none` on every row of a table written before defences
    existed, placed after `pretrained`); the table itself when it has one."""
    if DEFENCE_COLUMN in table.columns:
        return table
    table = table.copy()
    at = list(table.columns).index("pretrained") + 1 if "pretrained" in table.columns else len(table.columns)
    table.insert(at, DEFENCE_COLUMN, NO_DEFENCE)
    return table


def split_records(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split records into clean rows and attacked rows joined with their clean prediction.

    Returns:
        (clean, attacked); `attacked` gains a `clean_pred` column.

    Raises:
        ValueError: An attacked record has no clean record of the same model, defence and image.
    """
    records = with_defence(records)
    is_clean = records["word"] == CLEAN_WORD
    clean = records[is_clean]
    keys = ["model", "pretrained", DEFENCE_COLUMN, "image_id"]
    clean_pred = clean[keys + ["pred_index"]].rename(columns={"pred_index": "clean_pred"})
    if clean_pred.duplicated(keys).any():
        raise ValueError("records hold two clean rows for the same model, defence and image")
    attacked = records[~is_clean].merge(clean_pred, on=keys, how="left", validate="many_to_one")
    if attacked["clean_pred"].isna().any():
        missing = attacked.loc[attacked["clean_pred"].isna(), "image_id"].iloc[0]
        raise ValueError(f"attacked record of image {missing!r} has no clean record")
    attacked["clean_pred"] = attacked["clean_pred"].astype(np.int64)
    return clean, attacked


def build_per_word_table(records: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (model, pretrained, defence, word, fraction, placement) with Distill's outcome split.

    Outcomes per image (target t, clean prediction c, attacked prediction a):
    changed_to (c != t, a == t), already_target (c == t, a == t), changed_away (c == t, a != t),
    neither (c != t, a != t); they sum to 1. `asr` equals `changed_to` and has a 95% Wilson
    interval. `flip_rate` is the share of clean-correct images whose attacked prediction is wrong
    (NaN when no image is clean-correct). Top-1 values are over the same images.

    Args:
        records: The per-image record table (clean and attacked rows).
        class_names: Class names indexed by class index.

    Returns:
        A DataFrame with PER_WORD_COLUMNS (then the style columns the records carry), sorted by
        model, defence, placement, fraction, style, word.
    """
    _, att = split_records(records)
    style = [c for c in STYLE_COLUMNS if c in records.columns]
    keys = CONDITION_KEYS + style
    if att.empty:
        return pd.DataFrame(columns=PER_WORD_COLUMNS + style)
    t, c, a, y = att["target_index"], att["clean_pred"], att["pred_index"], att["true_index"]
    frame = pd.DataFrame({
        **{k: att[k] for k in keys},
        "pixel_cover": att["pixel_cover"],
        "clean_correct": (c == y).astype(float),
        "attacked_correct": (a == y).astype(float),
        "changed_to": ((c != t) & (a == t)).astype(float),
        "already_target": ((c == t) & (a == t)).astype(float),
        "changed_away": ((c == t) & (a != t)).astype(float),
        "neither": ((c != t) & (a != t)).astype(float),
        "flipped": ((c == y) & (a != y)).astype(float),
    })
    g = frame.groupby(keys, sort=True, dropna=False)
    out = g.agg(
        n_images=("pixel_cover", "size"),
        pixel_cover_mean=("pixel_cover", "mean"),
        clean_top1=("clean_correct", "mean"),
        attacked_top1=("attacked_correct", "mean"),
        changed_to=("changed_to", "mean"),
        already_target=("already_target", "mean"),
        changed_away=("changed_away", "mean"),
        neither=("neither", "mean"),
        n_clean_correct=("clean_correct", "sum"),
        n_flipped=("flipped", "sum"),
        n_changed_to=("changed_to", "sum"),
    ).reset_index()
    out["asr"] = out["changed_to"]
    out["asr_ci_low"], out["asr_ci_high"] = wilson_interval(out["n_changed_to"].to_numpy(), out["n_images"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        out["flip_rate"] = np.where(out["n_clean_correct"] > 0, out["n_flipped"] / out["n_clean_correct"], np.nan)
    out["target_name"] = [class_names[int(i)] for i in out["target_index"]]
    out["n_images"] = out["n_images"].astype(np.int64)
    out = out.sort_values(["model", "pretrained", DEFENCE_COLUMN, "placement", "fraction", *style, "word"],
                          kind="stable")
    return out[PER_WORD_COLUMNS + style].reset_index(drop=True)


def build_confusion_table(records: pd.DataFrame) -> pd.DataFrame:
    """Non-zero cells of (true class x predicted class) for every condition, clean included.

    Returns:
        A DataFrame with CONFUSION_COLUMNS (then the style columns the records carry); the clean
        condition has word "", fraction 0 and placement "".
    """
    records = with_defence(records)
    style = [c for c in STYLE_COLUMNS if c in records.columns]
    keys = ["model", "pretrained", DEFENCE_COLUMN, "word", "fraction", "placement", *style, "true_index", "pred_index"]
    counts = records.groupby(keys, sort=True, dropna=False).size().rename("count").reset_index()
    counts["count"] = counts["count"].astype(np.int64)
    return counts[CONFUSION_COLUMNS + style]


def build_clean_table(records: pd.DataFrame) -> pd.DataFrame:
    """Clean top-1 and top-5 accuracy per (model, pretrained, defence)."""
    records = with_defence(records)
    clean = records[records["word"] == CLEAN_WORD]
    top5 = [int(y) in set(p) for y, p in zip(clean["true_index"], clean["pred_top5"])]
    frame = pd.DataFrame({"model": clean["model"], "pretrained": clean["pretrained"],
                          DEFENCE_COLUMN: clean[DEFENCE_COLUMN],
                          "top1": (clean["pred_index"] == clean["true_index"]).astype(float),
                          "top5": np.asarray(top5, dtype=float)})
    g = frame.groupby(MODEL_DEFENCE_KEYS, sort=True)
    return g.agg(n_images=("top1", "size"), clean_top1=("top1", "mean"), clean_top5=("top5", "mean")).reset_index()


def build_leaderboard(per_word: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, pretrained, defence): clean and attacked accuracy and ASR, most robust first.

    Columns: `model, pretrained, defence, n_images` (the largest n_images of the model's conditions),
    `clean_top1` (mean of clean_top1 over its rows: the same value on every row), `attacked_top1`
    and `mean_asr` (means over all its conditions: words, fractions, placements, styles), then one
    column `asr@<fraction:g>` per fraction in ascending order (mean ASR over words, placements and
    styles at that fraction; NaN where the model was not run at that fraction). Sorted by ascending
    mean_asr, ties by descending clean_top1, then by model, pretrained and defence.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).

    Returns:
        The leaderboard; an empty DataFrame with the base columns when `per_word` is empty.

    Raises:
        ValueError: `per_word` lacks a needed column.
    """
    missing = [c for c in _LEADERBOARD_REQUIRED if c not in per_word.columns]
    if missing:
        raise ValueError(f"build_leaderboard: the per-word table lacks the column(s) {', '.join(missing)}")
    if per_word.empty:
        return pd.DataFrame(columns=LEADERBOARD_BASE_COLUMNS)
    per_word = with_defence(per_word)
    fractions = sorted(per_word["fraction"].unique())
    rows = []
    for (model, pretrained, defence), g in per_word.groupby(MODEL_DEFENCE_KEYS, sort=True, dropna=False):
        row: dict[str, Any] = {
            "model": model, "pretrained": pretrained, DEFENCE_COLUMN: defence,
            "n_images": int(g["n_images"].max()),
            "clean_top1": float(g["clean_top1"].mean()),
            "attacked_top1": float(g["attacked_top1"].mean()),
            "mean_asr": float(g["asr"].mean()),
        }
        for f in fractions:
            at = g.loc[g["fraction"] == f, "asr"]
            row[f"asr@{f:g}"] = float(at.mean()) if len(at) else np.nan
        rows.append(row)
    board = pd.DataFrame(rows)
    board = board.sort_values(["mean_asr", "clean_top1", "model", "pretrained", DEFENCE_COLUMN],
                              ascending=[True, False, True, True, True], kind="stable", na_position="last")
    board["n_images"] = board["n_images"].astype(np.int64)
    return board.reset_index(drop=True)



MANY_WORDS = 30
"""A table with more (word, target) pairs than this has a large vocabulary: per-word figures give
way to ranked views."""
RANKING_SIZE = 20
"""Rows at each end of the ranking of `build_asr_ranking`."""
RANKING_VALUE_COLUMNS = ["group", "rank", "n_words", "word", "target_index", "target_name", "n_images", "asr",
                         "asr_ci_low", "asr_ci_high"]
_RANKING_REQUIRED = ["model", "pretrained", "word", "target_index", "target_name", "fraction", "placement",
                     "n_images", "asr", "asr_ci_low", "asr_ci_high"]


def count_words(per_word: pd.DataFrame) -> int:
    """The number of distinct (word, target_index) pairs of the per-word table."""
    if per_word.empty:
        return 0
    return int(per_word[["word", "target_index"]].drop_duplicates().shape[0])


def is_large_vocabulary(per_word: pd.DataFrame, threshold: int = MANY_WORDS) -> bool:
    """True when the table holds more than `threshold` (word, target) pairs."""
    return count_words(per_word) > threshold


def rank_words(per_word: pd.DataFrame) -> list[str]:
    """The distinct words, highest mean ASR over all their conditions first (ties: by word)."""
    if per_word.empty:
        return []
    mean = per_word.groupby("word", sort=True)["asr"].mean().reset_index()
    mean = mean.sort_values(["asr", "word"], ascending=[False, True], kind="stable", na_position="last")
    return [str(w) for w in mean["word"]]


def get_ranking_keys(per_word: pd.DataFrame) -> list[str]:
    """The columns that name a condition of the ranking: model, pretrained, placement, fraction and
    the style columns the table carries."""
    return ["model", "pretrained", "placement", "fraction", *(c for c in STYLE_COLUMNS if c in per_word.columns)]


def build_asr_ranking(per_word: pd.DataFrame, n: int = RANKING_SIZE) -> pd.DataFrame:
    """The `n` highest and `n` lowest (word, target) pairs by ASR per condition.

    A condition is (model, pretrained, placement, fraction, style columns present). Within one,
    pairs are ranked by descending ASR (ties: word, then target index); `rank` 1 is the highest.
    `group` is "top" for the first min(n, k) of the k pairs and "bottom" for the last
    min(n, k - top) ones, so no pair is listed twice. Rows of a condition run in rank order.

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).
        n: Pairs at each end.

    Returns:
        The condition columns, then RANKING_VALUE_COLUMNS (`n_words`: k); conditions in the
        per-word table's order.

    Raises:
        ValueError: `n` < 1 or `per_word` lacks a needed column.
    """
    if n < 1:
        raise ValueError(f"build_asr_ranking: n must be at least 1, got {n}")
    missing = [c for c in _RANKING_REQUIRED if c not in per_word.columns]
    if missing:
        raise ValueError(f"build_asr_ranking: the per-word table lacks the column(s) {', '.join(missing)}")
    keys = get_ranking_keys(per_word)
    parts = []
    for _, rows in per_word.groupby(keys, sort=True, dropna=False):
        ranked = rows.sort_values(["asr", "word", "target_index"], ascending=[False, True, True], kind="stable")
        ranked = ranked.assign(rank=np.arange(1, len(ranked) + 1, dtype=np.int64), n_words=len(ranked))
        top = min(n, len(ranked))
        bottom = min(n, len(ranked) - top)
        chosen = pd.concat([ranked.iloc[:top].assign(group="top"),
                            ranked.iloc[len(ranked) - bottom:].assign(group="bottom")])
        parts.append(chosen)
    if not parts:
        return pd.DataFrame(columns=keys + RANKING_VALUE_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["n_images"] = out["n_images"].astype(np.int64)
    return out[keys + RANKING_VALUE_COLUMNS]


def build_defence_table(per_word: pd.DataFrame) -> pd.DataFrame:
    """Defences side by side: one row per (model, pretrained, defence), `none` first.

    Columns: the leaderboard's (`clean_top1`, `attacked_top1`, `mean_asr`, `asr@<f>`), then
    `baseline` (the defence each row is compared with: `config.defences.get_baseline`, e.g. a prefix
    with the one-prompt classifier `templates:photo`, the others with `none`) and
    `clean_top1_change` and `mean_asr_change`: the difference to the same model's baseline row
    (NaN when the run has no such row).

    Args:
        per_word: The per-word table.

    Returns:
        The table, rows by model, then `none`, then the other defences by name.
    """
    board = build_leaderboard(with_defence(per_word))
    if board.empty:
        return board
    board = board.assign(_first=board[DEFENCE_COLUMN] != NO_DEFENCE)
    board = board.sort_values([*MODEL_COLUMNS, "_first", DEFENCE_COLUMN], kind="stable").drop(columns="_first")
    labels = set(board[DEFENCE_COLUMN])
    board["baseline"] = [get_baseline(d, labels) for d in board[DEFENCE_COLUMN]]
    rows = board.set_index([*MODEL_COLUMNS, DEFENCE_COLUMN])[["clean_top1", "mean_asr"]]
    keys = pd.MultiIndex.from_frame(board[[*MODEL_COLUMNS, "baseline"]])
    for col in ("clean_top1", "mean_asr"):
        base = rows[col].reindex(keys).to_numpy()
        board[f"{col}_change"] = board[col].to_numpy() - base
    return board.reset_index(drop=True)
