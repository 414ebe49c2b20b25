"""Attack metrics as pure functions of the per-image record table (no model code): the per-word,
confusion and clean tables, and the leaderboard computed from the per-word table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from typoattack.constants import CLEAN_WORD, RANDOM_CLASS_WORD
from typoattack.config.defences import get_baseline
from typoattack.records import CONDITION_COLUMNS, DEFENCE_COLUMN, MODEL_COLUMNS, NO_DEFENCE, STYLE_COLUMNS

PSEUDO_TARGET = -1
"""The target_index of the pseudo-word `random-class`'s per-word row (its images were each shown another class)."""
PSEUDO_TARGET_NAME = "another class per image"
"""Its target_name."""
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
LEADERBOARD_BASE_COLUMNS = ["model", "pretrained", "defence", "n_images", "clean_top1", "clean_top1_vs_none", "attacked_top1",
                            "mean_asr"]
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


OUTCOME_COUNT_COLUMNS = ["n_images", "pixel_cover_sum", "n_clean_correct", "n_attacked_correct", "n_changed_to",
                         "n_already_target", "n_changed_away", "n_neither", "n_flipped"]
"""Per condition, what the per-word table is computed from (`finish_per_word_table`): the images, the
sum of their pixel cover, and the images of each outcome. Sums, so partial counts (of chunks, of
runs) add up."""


def get_condition_keys(columns: Sequence[str]) -> list[str]:
    """The columns that name a per-word row: CONDITION_KEYS, then the style columns present."""
    return CONDITION_KEYS + [c for c in STYLE_COLUMNS if c in columns]


def get_target_key(words: pd.Series, targets: pd.Series) -> pd.Series:
    """The target a per-word row is keyed by: the record's, but PSEUDO_TARGET for the pseudo-word
    `random-class` (its records carry the class each image was shown; its row counts them together)."""
    return targets.where(words != RANDOM_CLASS_WORD, PSEUDO_TARGET).astype(np.int64)


def count_outcomes(records: pd.DataFrame, by_target: bool = False) -> pd.DataFrame:
    """OUTCOME_COUNT_COLUMNS per condition (`get_condition_keys`) of in-memory records: the pandas
    reference of the query in `typoattack.analysis.tables`.

    Args:
        records: The records.
        by_target: Count the pseudo-word per target it drew (else one row: `get_target_key`).

    Raises:
        ValueError: An attacked record has no clean record of the same model, defence and image.
    """
    _, att = split_records(records)
    keys = get_condition_keys(list(records.columns))
    if att.empty:
        return pd.DataFrame(columns=keys + OUTCOME_COUNT_COLUMNS)
    t, c, a, y = att["target_index"], att["clean_pred"], att["pred_index"], att["true_index"]
    frame = pd.DataFrame({
        **{k: att[k] for k in keys},
        **({} if by_target else {"target_index": get_target_key(att["word"], t)}),
        "pixel_cover_sum": att["pixel_cover"].astype(np.float64),
        "n_images": 1,
        "n_clean_correct": (c == y).astype(np.int64),
        "n_attacked_correct": (a == y).astype(np.int64),
        "n_changed_to": ((c != t) & (a == t)).astype(np.int64),
        "n_already_target": ((c == t) & (a == t)).astype(np.int64),
        "n_changed_away": ((c == t) & (a != t)).astype(np.int64),
        "n_neither": ((c != t) & (a != t)).astype(np.int64),
        "n_flipped": ((c == y) & (a != y)).astype(np.int64),
    })
    return frame.groupby(keys, sort=True, dropna=False)[OUTCOME_COUNT_COLUMNS].sum().reset_index()


def finish_per_word_table(counts: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """The per-word table from the outcome counts of each condition (see `build_per_word_table`).

    Args:
        counts: One row per condition: `get_condition_keys` columns and OUTCOME_COUNT_COLUMNS.
        class_names: Class names indexed by class index.
    """
    style = [c for c in STYLE_COLUMNS if c in counts.columns]
    keys = CONDITION_KEYS + style
    if counts.empty:
        return pd.DataFrame(columns=PER_WORD_COLUMNS + style)
    out = counts.sort_values(keys, kind="stable", na_position="last").reset_index(drop=True)
    n = out["n_images"].to_numpy(dtype=np.int64)
    out["n_images"] = n
    out["pixel_cover_mean"] = out["pixel_cover_sum"].to_numpy(dtype=np.float64) / n
    shares = {"clean_top1": "n_clean_correct", "attacked_top1": "n_attacked_correct", "changed_to": "n_changed_to",
              "already_target": "n_already_target", "changed_away": "n_changed_away", "neither": "n_neither"}
    for share, count in shares.items():
        out[share] = out[count].to_numpy(dtype=np.float64) / n
    out["asr"] = out["changed_to"]
    out["asr_ci_low"], out["asr_ci_high"] = wilson_interval(out["n_changed_to"].to_numpy(), n)
    clean_correct = out["n_clean_correct"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["flip_rate"] = np.where(clean_correct > 0, out["n_flipped"].to_numpy(dtype=np.float64) / clean_correct,
                                    np.nan)
    out["target_name"] = [class_names[int(i)] if i != PSEUDO_TARGET else PSEUDO_TARGET_NAME
                          for i in out["target_index"]]
    out["target_index"] = out["target_index"].astype(np.int64)
    out["fraction"] = out["fraction"].astype(np.float64)
    out = out.sort_values(["model", "pretrained", DEFENCE_COLUMN, "placement", "fraction", *style, "word"],
                          kind="stable")
    return out[PER_WORD_COLUMNS + style].reset_index(drop=True)


def build_per_word_table(records: pd.DataFrame, class_names: Sequence[str]) -> pd.DataFrame:
    """One row per (model, pretrained, defence, word, fraction, placement) with Distill's outcome split.

    Outcomes per image (target t, clean prediction c, attacked prediction a):
    changed_to (c != t, a == t), already_target (c == t, a == t), changed_away (c == t, a != t),
    neither (c != t, a != t); they sum to 1. `asr` equals `changed_to` and has a 95% Wilson
    interval. `flip_rate` is the share of clean-correct images whose attacked prediction is wrong
    (NaN when no image is clean-correct). Top-1 values are over the same images.

    This is the in-memory reference; runs compute the same table out of core
    (`typoattack.analysis.tables.query_per_word_table`).

    Args:
        records: The per-image record table (clean and attacked rows).
        class_names: Class names indexed by class index.

    Returns:
        A DataFrame with PER_WORD_COLUMNS (then the style columns the records carry), sorted by
        model, defence, placement, fraction, style, word.
    """
    return finish_per_word_table(count_outcomes(records), class_names)


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
    """One row per (model, pretrained, defence), ranked by accuracy under attack (LEADERBOARD_RULE).

    The rule: highest `attacked_top1` first (top-1 accuracy on the attacked images, the mean over
    every word, fraction, placement and style), ties by higher `clean_top1`, then lower `mean_asr`,
    then model, pretrained and defence. Accuracy under attack counts what a defence costs on clean
    images as well as what it saves under attack: a defence that lowers the ASR but misclassifies
    more images ranks below one that keeps them right, and `clean_top1_vs_none` shows the cost.

    Columns: `model, pretrained, defence, n_images` (the largest n_images of the model's conditions),
    `clean_top1` (mean of clean_top1 over its rows: the same value on every row),
    `clean_top1_vs_none` (clean_top1 minus that of the same model's `none` row: 0 on the `none` row,
    negative where the defence costs clean accuracy, NaN when the model has no `none` row),
    `attacked_top1` and `mean_asr` (means over all its conditions), then one column
    `asr@<fraction:g>` per fraction in ascending order (mean ASR over words, placements and styles at
    that fraction; NaN where the model was not run at that fraction).

    Args:
        per_word: The per-word table (PER_WORD_COLUMNS, optionally STYLE_COLUMNS).

    Returns:
        The leaderboard in rank order; an empty DataFrame with the base columns when `per_word` is
        empty.

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
    undefended = board[board[DEFENCE_COLUMN] == NO_DEFENCE]
    base = {(m, p): c for m, p, c in zip(undefended["model"], undefended["pretrained"].fillna(""),
                                         undefended["clean_top1"])}
    change = [c - base.get((m, p), np.nan)
              for m, p, c in zip(board["model"], board["pretrained"].fillna(""), board["clean_top1"])]
    board.insert(board.columns.get_loc("clean_top1") + 1, "clean_top1_vs_none", change)
    board = board.sort_values(["attacked_top1", "clean_top1", "mean_asr", "model", "pretrained", DEFENCE_COLUMN],
                              ascending=[False, False, True, True, True, True], kind="stable", na_position="last")
    board["n_images"] = board["n_images"].astype(np.int64)
    return board.reset_index(drop=True)


LEADERBOARD_RULE = ("Ranked by attacked top-1, highest first: the share of attacked images still classified "
                    "correctly (mean over words, fractions and placements), so a defence that lowers the attack "
                    "success rate but costs clean accuracy is not ranked up for it; ties by clean top-1 (higher "
                    "first), then mean ASR (lower first).")
"""The leaderboard's ranking rule in words (the report writes it above the table)."""


TOP_CONFUSIONS_PER_WORD = 4
"""Rows per (model, defence, word) of `build_top_confusions`."""
TOP_CONFUSION_COLUMNS = ["model", "pretrained", "defence", "word", "fraction", "placement", "rank", "true_index",
                         "pred_index", "count", "n_images", "share", "clean_count", "into_count", "into_clean"]
CLASS_GAIN_COLUMNS = ["model", "pretrained", "defence", "word", "fraction", "placement", "pred_index", "n_images",
                      "into_count", "into_clean", "gain", "gain_share"]
HEATMAP_MIN_IMAGES = 10
"""A word gets a heatmap when one class gained at least this many images (and HEATMAP_MIN_SHARE)."""
HEATMAP_MIN_SHARE = 0.05
"""... and at least this share of a condition's images; see `select_heatmap_words`."""
_CONFUSION_REQUIRED = ["model", "pretrained", "word", "fraction", "placement", "true_index", "pred_index", "count"]


def get_confusion_condition_keys(columns: Sequence[str]) -> list[str]:
    """The columns that name a condition of the confusion table (clean as word ""): model,
    pretrained, defence, word, fraction, placement, then the style columns present."""
    return [*MODEL_DEFENCE_KEYS, "word", "fraction", "placement", *(c for c in STYLE_COLUMNS if c in columns)]


def _split_confusion(confusion: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(clean cells, attacked cells with `n_images` of their condition, the condition keys)."""
    missing = [c for c in _CONFUSION_REQUIRED if c not in confusion.columns]
    if missing:
        raise ValueError(f"the confusion table lacks the column(s) {', '.join(missing)}")
    confusion = with_defence(confusion)
    keys = get_confusion_condition_keys(list(confusion.columns))
    is_clean = confusion["word"] == CLEAN_WORD
    clean = confusion[is_clean]
    attacked = confusion[~is_clean].copy()
    attacked["n_images"] = attacked.groupby(keys, sort=False, dropna=False)["count"].transform("sum").astype(np.int64)
    return clean, attacked, keys


def _count_into(cells: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per `keys` + pred_index: the images of other true classes predicted as that class."""
    off = cells[cells["true_index"] != cells["pred_index"]]
    return off.groupby([*keys, "pred_index"], sort=False, dropna=False)["count"].sum()


def _add_clean_counts(attacked: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """`attacked` with `into_clean`: the images of other true classes that the same model and
    defence predicted as pred_index on the clean images (0 when none)."""
    into_clean = _count_into(clean, MODEL_DEFENCE_KEYS).rename("into_clean").reset_index()
    out = attacked.merge(into_clean, on=[*MODEL_DEFENCE_KEYS, "pred_index"], how="left")
    out["into_clean"] = out["into_clean"].fillna(0).astype(np.int64)
    return out


def build_class_gains(confusion: pd.DataFrame) -> pd.DataFrame:
    """Where the attack sent images: per condition and predicted class, the images of other true
    classes predicted as that class, against the same count on the clean images.

    Args:
        confusion: The confusion table (`build_confusion_table`: CONFUSION_COLUMNS, optionally
            STYLE_COLUMNS; the clean condition as word "").

    Returns:
        CLASS_GAIN_COLUMNS (style columns after `placement` when the table has them), one row per
        (model, pretrained, defence, attacked condition, predicted class) that received an image of
        another class: `n_images` of the condition, `into_count` (images whose true class is not
        pred_index, predicted as pred_index), `into_clean` (the same on the clean images of that
        model and defence), `gain` = into_count - into_clean and `gain_share` = gain / n_images
        (may be negative). Sorted by the condition keys, then descending gain, then pred_index.

    Raises:
        ValueError: `confusion` lacks a needed column.
    """
    clean, attacked, keys = _split_confusion(confusion)
    n_images = attacked.groupby(keys, sort=False, dropna=False)["n_images"].first()
    into = _count_into(attacked, keys).rename("into_count").reset_index()
    into = into.merge(n_images.reset_index(), on=keys, how="left")
    out = _add_clean_counts(into, clean)
    out["into_count"] = out["into_count"].astype(np.int64)
    out["gain"] = out["into_count"] - out["into_clean"]
    out["gain_share"] = out["gain"] / out["n_images"]
    out = out.sort_values([*keys, "gain", "pred_index"], ascending=[True] * len(keys) + [False, True], kind="stable")
    columns = CLASS_GAIN_COLUMNS[:6] + keys[len(CLASS_GAIN_COLUMNS[:6]):] + CLASS_GAIN_COLUMNS[6:]
    return out[columns].reset_index(drop=True)


def select_heatmap_words(confusion: pd.DataFrame, limit: int | None = None, min_images: int = HEATMAP_MIN_IMAGES,
                         min_share: float = HEATMAP_MIN_SHARE) -> list[str]:
    """The words whose confusion heatmap carries information: the attack moved images to one class.

    The rule: a word qualifies when, for some model, defence and condition of it, one predicted
    class gained at least `min_images` images and at least `min_share` of the condition's images
    over the clean images (`build_class_gains`: images of other classes predicted as that class,
    attacked minus clean). A heatmap of a word whose attack sent no class more images than the clean
    images did would be a scatter of single counts.

    Args:
        confusion: The confusion table.
        limit: At most this many words (None: all).
        min_images: The least gain in images.
        min_share: The least gain as a share of the condition's images.

    Returns:
        The qualifying words, largest gain share first (ties: by word).
    """
    gains = build_class_gains(confusion)
    hits = gains[(gains["gain"] >= min_images) & (gains["gain_share"] >= min_share)]
    if hits.empty:
        return []
    best = hits.groupby("word", sort=True)["gain_share"].max().reset_index()
    best = best.sort_values(["gain_share", "word"], ascending=[False, True], kind="stable")
    words = [str(w) for w in best["word"]]
    return words if limit is None else words[:limit]


def build_top_confusions(confusion: pd.DataFrame, n: int = TOP_CONFUSIONS_PER_WORD) -> pd.DataFrame:
    """The most frequent confusions of each word: true class -> predicted class cells, off the diagonal.

    The rule: in each attacked condition, the cell (true class != predicted class) with the most
    images (ties: the predicted class that gained the most images in that condition, see
    `build_class_gains`, then the lower true and predicted class index); of these, per (model,
    pretrained, defence, word), the `n` with the most images (ties: the larger gain of the
    predicted class, then fraction, placement and style), numbered `rank` 1..n. So each word has at
    most `n` rows, from different conditions.

    Args:
        confusion: The confusion table (CONFUSION_COLUMNS, optionally STYLE_COLUMNS).
        n: Rows per (model, pretrained, defence, word).

    Returns:
        TOP_CONFUSION_COLUMNS (style columns after `placement` when the table has them): `count`
        the cell's images, `n_images` the condition's, `share` = count / n_images, `clean_count` the
        same cell on the clean images of that model and defence, `into_count` and `into_clean` the
        images of other classes predicted as pred_index under the condition and on the clean images.
        Sorted by model, pretrained, defence, word, rank; empty when no word has an off-diagonal cell.

    Raises:
        ValueError: `n` < 1 or `confusion` lacks a needed column.
    """
    if n < 1:
        raise ValueError(f"build_top_confusions: n must be at least 1, got {n}")
    clean, attacked, keys = _split_confusion(confusion)
    columns = TOP_CONFUSION_COLUMNS[:6] + keys[6:] + TOP_CONFUSION_COLUMNS[6:]
    off = attacked[attacked["true_index"] != attacked["pred_index"]]
    if off.empty:
        return pd.DataFrame(columns=columns)
    into = _count_into(attacked, keys).rename("into_count").reset_index()
    off = off.merge(into, on=[*keys, "pred_index"], how="left")
    off = _add_clean_counts(off, clean)
    cells = clean[[*MODEL_DEFENCE_KEYS, "true_index", "pred_index", "count"]].rename(columns={"count": "clean_count"})
    off = off.merge(cells, on=[*MODEL_DEFENCE_KEYS, "true_index", "pred_index"], how="left")
    off["clean_count"] = off["clean_count"].fillna(0).astype(np.int64)
    off["gain"] = off["into_count"] - off["into_clean"]
    off = off.sort_values(["count", "gain", "true_index", "pred_index"], ascending=[False, False, True, True],
                          kind="stable")
    return rank_top_confusions(off.groupby(keys, sort=False, dropna=False).head(1), keys, n)


def rank_top_confusions(best: pd.DataFrame, keys: list[str], n: int = TOP_CONFUSIONS_PER_WORD) -> pd.DataFrame:
    """The rows of `build_top_confusions` from the best cell of each condition: per (model,
    pretrained, defence, word) the `n` with the most images (ties: larger gain, then fraction,
    placement and style), numbered `rank`.

    Args:
        best: One row per condition (`keys`): true_index, pred_index, count, n_images, clean_count,
            into_count, into_clean, gain.
        keys: The condition keys (MODEL_DEFENCE_KEYS, word, fraction, placement, style columns).
        n: Rows per word.
    """
    columns = TOP_CONFUSION_COLUMNS[:6] + keys[6:] + TOP_CONFUSION_COLUMNS[6:]
    if best.empty:
        return pd.DataFrame(columns=columns)
    word_keys = [*MODEL_DEFENCE_KEYS, "word"]
    best = best.sort_values([*word_keys, "count", "gain", *keys[4:]],
                            ascending=[True] * len(word_keys) + [False, False] + [True] * len(keys[4:]),
                            kind="stable", na_position="last")
    top = best.groupby(word_keys, sort=False, dropna=False).head(n).copy()
    top["rank"] = top.groupby(word_keys, sort=False, dropna=False).cumcount().astype(np.int64) + 1
    top["share"] = top["count"] / top["n_images"]
    for c in ("true_index", "pred_index", "count", "n_images", "clean_count", "into_count", "into_clean"):
        top[c] = top[c].astype(np.int64)
    return top[columns].reset_index(drop=True)



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
