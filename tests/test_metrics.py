"""Tests of typoattack.analysis.metrics against a plain-Python reference implementation."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

import synthetic_tables
from typoattack.analysis.table_cells import format_leaderboard_markdown
from typoattack.records import RECORD_COLUMNS, STYLE_COLUMNS
from typoattack.analysis.metrics import (
    CONFUSION_COLUMNS,
    LEADERBOARD_RULE,
    PER_WORD_COLUMNS,
    build_clean_table,
    build_confusion_table,
    build_leaderboard,
    build_per_word_table,
    split_records,
    wilson_interval,
)

FONT = "DejaVuSans-Bold.ttf"
# Class names deliberately differ from open_clip's so the test sees where target_name comes from.
CLASS_NAMES = [f"cls{i}" for i in range(1000)]
CLASS_NAMES[412] = "waste bin (test)"
CLASS_NAMES[605] = "music player (test)"
Z95 = 1.959963984540054


# --------------------------------------------------------------------------- record builders


def _top5(pred: int) -> list[int]:
    return [pred] + [(pred + k) % 1000 for k in range(1, 5)]


# Style of attacked records as the runner writes it; clean records carry empty values.
STYLE = {"font": FONT, "fill": "#ffffff", "outline": "#000000", "outline_width": 1, "opacity": 1.0}
CLEAN_STYLE = {"font": "", "fill": "", "outline": "", "outline_width": -1, "opacity": float("nan")}


def _record(image_id, true_index, model, pretrained, word, target_index, fraction, placement,
            pixel_cover, pred_index, style=None, defence="none") -> dict:
    return {
        "image_id": image_id, "true_index": int(true_index), "model": model, "pretrained": pretrained,
        "defence": defence,
        "word": word, "target_index": int(target_index), "fraction": float(fraction),
        "placement": placement, **(style or STYLE), "pixel_cover": float(pixel_cover),
        "pred_index": int(pred_index), "pred_top5": _top5(int(pred_index)),
        "p_target": 0.5, "p_true": 0.25,
    }


def _clean(image_id, true_index, model, pretrained, pred_index) -> dict:
    return _record(image_id, true_index, model, pretrained, "", -1, 0.0, "", 0.0, pred_index, CLEAN_STYLE)


def _frame(rows: list[dict]) -> pd.DataFrame:
    assert all(set(r) == set(RECORD_COLUMNS) for r in rows), "record schema changed"
    return pd.DataFrame(rows, columns=RECORD_COLUMNS)


def _style_cols(records: pd.DataFrame) -> list[str]:
    return [c for c in STYLE_COLUMNS if c in records.columns]


def _key(r: dict, cols: list[str]) -> tuple:
    # NaN (the clean rows' opacity) is not equal to itself; use a sentinel in keys.
    return tuple("<nan>" if isinstance(r[c], float) and math.isnan(r[c]) else r[c] for c in cols)


# --------------------------------------------------------------------------- reference implementation


def reference_per_word(records: pd.DataFrame, class_names) -> dict[tuple, dict]:
    """Per-word metrics with plain loops over images, keyed by
    (model, pretrained, word, target_index, fraction, placement, *style columns)."""
    cond_cols = ["model", "pretrained", "word", "target_index", "fraction", "placement"] + _style_cols(records)
    clean_pred = {}
    for r in records.to_dict("records"):
        if r["word"] == "":
            clean_pred[(r["model"], r["pretrained"], r["image_id"])] = r["pred_index"]
    groups = defaultdict(list)
    for r in records.to_dict("records"):
        if r["word"] != "":
            groups[_key(r, cond_cols)].append(r)
    out = {}
    for key, rows in groups.items():
        n = len(rows)
        counts = dict(changed_to=0, already_target=0, changed_away=0, neither=0)
        clean_ok = att_ok = n_clean_ok = n_flipped = 0
        cover = 0.0
        for r in rows:
            t, y, a = r["target_index"], r["true_index"], r["pred_index"]
            c = clean_pred[(r["model"], r["pretrained"], r["image_id"])]
            if c != t and a == t:
                counts["changed_to"] += 1
            elif c == t and a == t:
                counts["already_target"] += 1
            elif c == t and a != t:
                counts["changed_away"] += 1
            else:
                counts["neither"] += 1
            clean_ok += c == y
            att_ok += a == y
            if c == y:
                n_clean_ok += 1
                n_flipped += a != y
            cover += r["pixel_cover"]
        k = counts["changed_to"]
        p = k / n
        denom = 1 + Z95**2 / n
        centre = (p + Z95**2 / (2 * n)) / denom
        half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
        out[key] = {
            "target_name": class_names[key[3]],
            "n_images": n,
            "pixel_cover_mean": cover / n,
            "clean_top1": clean_ok / n,
            "attacked_top1": att_ok / n,
            "asr": k / n,
            "asr_ci_low": max(0.0, centre - half),
            "asr_ci_high": min(1.0, centre + half),
            **{name: v / n for name, v in counts.items()},
            "flip_rate": n_flipped / n_clean_ok if n_clean_ok else float("nan"),
        }
    return out


NUMERIC = ["n_images", "pixel_cover_mean", "clean_top1", "attacked_top1", "asr", "asr_ci_low",
           "asr_ci_high", "changed_to", "already_target", "changed_away", "neither", "flip_rate"]


def assert_matches_reference(table: pd.DataFrame, records: pd.DataFrame, class_names) -> None:
    ref = reference_per_word(records, class_names)
    style = _style_cols(records)
    assert list(table.columns) == PER_WORD_COLUMNS + style
    cond_cols = ["model", "pretrained", "word", "target_index", "fraction", "placement"] + style
    keys = [_key(r, cond_cols) for r in table.to_dict("records")]
    assert len(keys) == len(set(keys)), "a condition appears twice"
    assert set(keys) == set(ref)
    for key, row in zip(keys, table.to_dict("records")):
        exp = ref[key]
        assert row["target_name"] == exp["target_name"]
        for col in NUMERIC:
            assert row[col] == pytest.approx(exp[col], rel=1e-9, abs=1e-12, nan_ok=True), (key, col)
        total = row["changed_to"] + row["already_target"] + row["changed_away"] + row["neither"]
        assert total == pytest.approx(1.0)
        assert row["asr"] == row["changed_to"]
        # (1e-12 slack: the exact-containment edge case k = 0 / k = n has its own test below.)
        assert row["asr_ci_low"] - 1e-12 <= row["asr"] <= row["asr_ci_high"] + 1e-12
    assert table["n_images"].dtype.kind == "i"


# --------------------------------------------------------------------------- hand-built records

IMAGES = ["i0", "i1", "i2", "i3", "i4", "i5"]
TRUE = [1, 2, 3, 412, 5, 605]
MODELS = [("ViT-B-32", "openai"), ("RN50", "yfcc15m")]
CLEAN_PREDS = {
    ("ViT-B-32", "openai"): [1, 2, 412, 412, 9, 605],  # 4 of 6 correct; i2, i3 already 'trash can'
    ("RN50", "yfcc15m"): [7, 7, 7, 7, 605, 7],          # none correct -> flip_rate NaN
}
WORDS = [("trash", 412), ("iPod", 605)]
FRACTIONS = [0.07, 0.15]
PLACEMENTS = ["paper8", "center"]
# Attacked predictions of the hand-checked condition (ViT-B-32, trash, 0.07, paper8).
HAND_PREDS = [412, 2, 412, 8, 9, 412]
# Patterns for the other conditions: T = target, C = the clean prediction, Y = true class, digits as is.
PATTERNS = ["TCTCTC", "CCCCCC", "TTTTTT", "Y8TYCT", "CTYT8C", "8888TT"]


def _hand_records() -> pd.DataFrame:
    rows = []
    for model, pre in MODELS:
        for img, y, c in zip(IMAGES, TRUE, CLEAN_PREDS[(model, pre)]):
            rows.append(_clean(img, y, model, pre, c))
    n = 0
    for model, pre in MODELS:
        for word, target in WORDS:
            for frac in FRACTIONS:
                for place in PLACEMENTS:
                    if (model, word, frac, place) == ("ViT-B-32", "trash", 0.07, "paper8"):
                        preds = HAND_PREDS
                    else:
                        pattern = PATTERNS[n % len(PATTERNS)]
                        n += 1
                        preds = []
                        for ch, y, c in zip(pattern, TRUE, CLEAN_PREDS[(model, pre)]):
                            preds.append({"T": target, "C": c, "Y": y}.get(ch, int(ch) if ch.isdigit() else None))
                    for j, (img, y, a) in enumerate(zip(IMAGES, TRUE, preds)):
                        cover = frac * (0.95 + 0.02 * j)
                        rows.append(_record(img, y, model, pre, word, target, frac, place, cover, a))
    return _frame(rows)


@pytest.fixture(scope="module")
def hand_records() -> pd.DataFrame:
    return _hand_records()


def test_hand_records_cover_every_outcome(hand_records) -> None:
    ref = reference_per_word(hand_records, CLASS_NAMES)
    for outcome in ("changed_to", "already_target", "changed_away", "neither"):
        assert any(v[outcome] > 0 for v in ref.values()), outcome
    assert any(math.isnan(v["flip_rate"]) for v in ref.values())
    assert any(not math.isnan(v["flip_rate"]) and v["flip_rate"] > 0 for v in ref.values())
    assert len(ref) == 2 * 2 * 2 * 2


def test_per_word_table_matches_reference(hand_records) -> None:
    table = build_per_word_table(hand_records, CLASS_NAMES)
    assert len(table) == 16
    assert_matches_reference(table, hand_records, CLASS_NAMES)


def test_per_word_table_hand_computed_row(hand_records) -> None:
    table = build_per_word_table(hand_records, CLASS_NAMES)
    sel = table[(table["model"] == "ViT-B-32") & (table["word"] == "trash") & (table["fraction"] == 0.07)
                & (table["placement"] == "paper8")]
    assert len(sel) == 1
    row = sel.iloc[0]
    # i0: 1->412 changed_to; i1: 2->2 neither; i2: 412->412 already; i3: 412->8 away;
    # i4: 9->9 neither; i5: 605->412 changed_to.
    assert row["n_images"] == 6
    assert row["changed_to"] == pytest.approx(2 / 6)
    assert row["already_target"] == pytest.approx(1 / 6)
    assert row["changed_away"] == pytest.approx(1 / 6)
    assert row["neither"] == pytest.approx(2 / 6)
    assert row["asr"] == pytest.approx(2 / 6)
    assert row["clean_top1"] == pytest.approx(4 / 6)
    assert row["attacked_top1"] == pytest.approx(1 / 6)
    assert row["flip_rate"] == pytest.approx(3 / 4)  # clean-correct i0, i1, i3, i5; i0, i3, i5 flip
    assert row["pixel_cover_mean"] == pytest.approx(0.07 * (0.95 + 0.02 * 2.5))
    assert row["target_index"] == 412
    assert row["target_name"] == "waste bin (test)"
    low, high = wilson_interval(2, 6)
    assert (row["asr_ci_low"], row["asr_ci_high"]) == pytest.approx((float(low), float(high)))


def test_flip_rate_nan_when_no_image_is_clean_correct(hand_records) -> None:
    table = build_per_word_table(hand_records, CLASS_NAMES)
    rn50 = table[table["model"] == "RN50"]
    assert len(rn50) == 8
    assert rn50["flip_rate"].isna().all()
    assert (rn50["clean_top1"] == 0).all()
    assert table[table["model"] == "ViT-B-32"]["flip_rate"].notna().all()


def test_per_word_table_sorted_and_order_independent(hand_records) -> None:
    table = build_per_word_table(hand_records, CLASS_NAMES)
    order = list(zip(table["model"], table["pretrained"], table["placement"], table["fraction"], table["word"]))
    assert order == sorted(order)
    shuffled = hand_records.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(build_per_word_table(shuffled, CLASS_NAMES), table)


def test_target_name_comes_from_class_names(hand_records) -> None:
    names = [f"name-{i}" for i in range(1000)]
    table = build_per_word_table(hand_records, names)
    for t, name in zip(table["target_index"], table["target_name"]):
        assert name == f"name-{t}"
    other = build_per_word_table(hand_records, CLASS_NAMES)
    assert set(other.loc[other["word"] == "iPod", "target_name"]) == {"music player (test)"}


def test_per_word_table_of_clean_only_records_is_empty(hand_records) -> None:
    clean_only = hand_records[hand_records["word"] == ""]
    table = build_per_word_table(clean_only, CLASS_NAMES)
    assert table.empty
    assert list(table.columns) == PER_WORD_COLUMNS + STYLE_COLUMNS


def test_records_without_style_columns(hand_records) -> None:
    """Records of the original schema (no style columns) give exactly the spec's columns."""
    legacy = hand_records.drop(columns=[c for c in STYLE_COLUMNS if c != "font"] + ["font"])
    table = build_per_word_table(legacy, CLASS_NAMES)
    assert list(table.columns) == PER_WORD_COLUMNS
    assert_matches_reference(table, legacy, CLASS_NAMES)
    full = build_per_word_table(hand_records, CLASS_NAMES)
    pd.testing.assert_frame_equal(table, full[PER_WORD_COLUMNS])
    conf = build_confusion_table(legacy)
    assert list(conf.columns) == CONFUSION_COLUMNS


def test_styles_are_separate_conditions(hand_records) -> None:
    """The same word, fraction and placement in another colour is another row."""
    attacked = hand_records[hand_records["word"] != ""].copy()
    red = attacked.copy()
    red["fill"] = "#ff0000"
    red["pred_index"] = red["target_index"]  # the red text always wins
    records = pd.concat([hand_records, red], ignore_index=True)
    table = build_per_word_table(records, CLASS_NAMES)
    assert len(table) == 32
    assert_matches_reference(table, records, CLASS_NAMES)
    assert set(table.loc[table["fill"] == "#ff0000", "changed_to"] + table.loc[table["fill"] == "#ff0000", "already_target"]) == {1.0}
    white = table[table["fill"] == "#ffffff"].reset_index(drop=True)
    pd.testing.assert_frame_equal(white, build_per_word_table(hand_records, CLASS_NAMES))


# --------------------------------------------------------------------------- randomised records


RED_STYLE = {"font": "DejaVuSans.ttf", "fill": "#ff0000", "outline": "#000000", "outline_width": 0, "opacity": 0.5}


def _random_records(seed: int, n_images: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_classes = 10
    words = [("alpha", 3), ("beta", 5), ("gamma", 7)]
    models = [("ViT-B-32", "openai"), ("ViT-B-32", "laion2b_s34b_b79k")]
    true = rng.integers(0, n_classes, n_images)
    rows = []
    for model, pre in models:
        clean = np.where(rng.random(n_images) < 0.6, true, rng.integers(0, n_classes, n_images))
        for i in range(n_images):
            rows.append(_clean(f"img{i:03d}", true[i], model, pre, clean[i]))
        for word, target in words:
            for frac in (0.04, 0.1):
                for place in ("paper8", "random"):
                    u = rng.random(n_images)
                    attacked = np.where(u < 0.3, target, np.where(u < 0.7, clean, rng.integers(0, n_classes, n_images)))
                    cover = frac * rng.uniform(0.9, 1.05, n_images)
                    keep = rng.random(n_images) < 0.9  # some images missing, so n_images varies
                    for i in np.flatnonzero(keep):
                        rows.append(_record(f"img{i:03d}", true[i], model, pre, word, target, frac, place,
                                            cover[i], attacked[i]))
                    if word == "beta":  # the same condition in a second style
                        u = rng.random(n_images)
                        attacked2 = np.where(u < 0.5, target, np.where(u < 0.8, clean, rng.integers(0, n_classes, n_images)))
                        for i in range(n_images):
                            rows.append(_record(f"img{i:03d}", true[i], model, pre, word, target, frac, place,
                                                cover[i], attacked2[i], RED_STYLE))
    df = _frame(rows)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_word_table_matches_reference_on_random_records(seed: int) -> None:
    records = _random_records(seed)
    table = build_per_word_table(records, CLASS_NAMES)
    assert len(table) == 2 * 4 * 2 * 2  # (3 words + a second style of one) x 2 fractions x 2 placements
    assert set(table["fill"]) == {"#ffffff", "#ff0000"}
    assert table["n_images"].nunique() > 1
    ref = reference_per_word(records, CLASS_NAMES)
    for outcome in ("changed_to", "already_target", "changed_away", "neither"):
        assert np.mean([v[outcome] > 0 for v in ref.values()]) > 0.5, outcome
    assert_matches_reference(table, records, CLASS_NAMES)


def test_per_word_table_ignores_index_and_survives_parquet(hand_records, tmp_path) -> None:
    expected = build_per_word_table(hand_records, CLASS_NAMES)
    # Records concatenated from chunks keep duplicate index labels.
    half = len(hand_records) // 2
    chunked = pd.concat([hand_records.iloc[:half].reset_index(drop=True),
                         hand_records.iloc[half:].reset_index(drop=True)])
    assert chunked.index.duplicated().any()
    pd.testing.assert_frame_equal(build_per_word_table(chunked, CLASS_NAMES), expected)
    pytest.importorskip("pyarrow")
    path = tmp_path / "records.parquet"
    hand_records.to_parquet(path, index=False)
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(build_per_word_table(back, CLASS_NAMES), expected)
    pd.testing.assert_frame_equal(build_confusion_table(back), build_confusion_table(hand_records))
    pd.testing.assert_frame_equal(build_clean_table(back), build_clean_table(hand_records))


# --------------------------------------------------------------------------- wilson interval


def test_wilson_closed_form_values() -> None:
    low, high = wilson_interval(0, 10)
    assert float(low) == pytest.approx(0.0, abs=1e-12)
    assert float(high) == pytest.approx((Z95**2 / 10) / (1 + Z95**2 / 10))  # 0.2775
    low, high = wilson_interval(5, 10)
    assert float(low) == pytest.approx(0.2366, abs=1e-4)
    assert float(high) == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert float(high) == pytest.approx(1.0, abs=1e-12)
    assert float(low) == pytest.approx(1 - 0.2775328, abs=1e-6)
    low, high = wilson_interval(0, 0)
    assert math.isnan(float(low)) and math.isnan(float(high))


def test_wilson_vectorised_and_contains_proportion() -> None:
    k = np.array([0, 1, 3, 7, 20, 50, 99, 100, 0])
    n = np.array([1, 10, 10, 9, 40, 50, 100, 100, 0])
    low, high = wilson_interval(k, n)
    assert low.shape == high.shape == k.shape
    ok = n > 0
    p = k[ok] / n[ok]
    assert np.all(low[ok] <= p + 1e-12) and np.all(p <= high[ok] + 1e-12)
    assert np.all((0 <= low[ok]) & (high[ok] <= 1))
    assert np.isnan(low[~ok]).all() and np.isnan(high[~ok]).all()
    # Element-wise equal to the scalar calls.
    for i in np.flatnonzero(ok):
        lo_i, hi_i = wilson_interval(int(k[i]), int(n[i]))
        assert (low[i], high[i]) == pytest.approx((float(lo_i), float(hi_i)))
    # Wider with a larger z, narrower with more trials.
    lo99, hi99 = wilson_interval(5, 10, z=2.5758)
    lo95, hi95 = wilson_interval(5, 10)
    assert lo99 < lo95 and hi99 > hi95
    lo_big, hi_big = wilson_interval(50, 100)
    assert hi_big - lo_big < hi95 - lo95


def test_wilson_interval_contains_zero_and_one_exactly() -> None:
    """With k = 0 the interval must include 0 (= k/n), with k = n it must include 1."""
    n = np.arange(1, 201)
    low, _ = wilson_interval(np.zeros_like(n), n)
    _, high = wilson_interval(n, n)
    bad_low = n[low > 0].tolist()
    bad_high = n[high < 1].tolist()
    assert not bad_low, f"wilson_interval(0, n) has low > 0 = k/n for n in {bad_low[:10]} (e.g. {low[low > 0][0]!r})"
    assert not bad_high, f"wilson_interval(n, n) has high < 1 = k/n for n in {bad_high[:10]} (e.g. {high[high < 1][0]!r})"


# --------------------------------------------------------------------------- confusion table


def test_confusion_table(hand_records) -> None:
    table = build_confusion_table(hand_records)
    assert list(table.columns) == CONFUSION_COLUMNS + STYLE_COLUMNS
    assert (table["count"] > 0).all()
    assert table["count"].dtype.kind == "i"
    cond = ["model", "pretrained", "word", "fraction", "placement"]
    sums = table.groupby(cond)["count"].sum()
    # Every condition (16 attacked + 1 clean per model) covers all 6 images.
    assert len(sums) == 16 + 2
    assert (sums == 6).all()
    clean = table[table["word"] == ""]
    assert set(clean["fraction"]) == {0.0} and set(clean["placement"]) == {""}
    assert set(clean["model"]) == {"ViT-B-32", "RN50"}
    assert set(clean["font"]) == {""}
    # Reference counts with a Counter.
    cols = CONFUSION_COLUMNS[:-1] + STYLE_COLUMNS
    expected = Counter(_key(r, cols) for r in hand_records.to_dict("records"))
    got = {_key(r, cols): r["count"] for r in table.to_dict("records")}
    assert got == dict(expected)


def test_confusion_table_random_records() -> None:
    records = _random_records(5)
    table = build_confusion_table(records)
    assert (table["count"] > 0).all()
    cond = ["model", "pretrained", "word", "fraction", "placement", "fill"]
    n_per_cond = records.groupby(cond).size()
    sums = table.groupby(cond)["count"].sum()
    pd.testing.assert_series_equal(sums.sort_index(), n_per_cond.sort_index(), check_names=False)
    assert int(table["count"].sum()) == len(records)


# --------------------------------------------------------------------------- split_records


def test_split_records_joins_clean_prediction(hand_records) -> None:
    before = hand_records.copy()
    clean, attacked = split_records(hand_records)
    pd.testing.assert_frame_equal(hand_records, before)  # input untouched
    assert (clean["word"] == "").all() and len(clean) == 12
    assert (attacked["word"] != "").all() and len(attacked) == len(hand_records) - 12
    assert attacked["clean_pred"].dtype.kind == "i"
    lookup = {(m, p, i): c for (m, p), preds in CLEAN_PREDS.items() for i, c in zip(IMAGES, preds)}
    for r in attacked.to_dict("records"):
        assert r["clean_pred"] == lookup[(r["model"], r["pretrained"], r["image_id"])]


def test_split_records_missing_clean_record_raises(hand_records) -> None:
    drop = (hand_records["word"] == "") & (hand_records["image_id"] == "i4") & (hand_records["model"] == "RN50")
    with pytest.raises(ValueError, match="i4"):
        split_records(hand_records[~drop])
    with pytest.raises(ValueError):
        build_per_word_table(hand_records[~drop], CLASS_NAMES)


def test_split_records_clean_of_other_model_does_not_count(hand_records) -> None:
    # A clean record of the same image but another pretrained tag is not a match.
    recs = hand_records.copy()
    is_target = (recs["word"] == "") & (recs["image_id"] == "i0") & (recs["model"] == "RN50")
    recs.loc[is_target, "pretrained"] = "something-else"
    with pytest.raises(ValueError):
        split_records(recs)


def test_split_records_duplicate_clean_raises(hand_records) -> None:
    dup = hand_records[(hand_records["word"] == "")].iloc[[0]]
    with pytest.raises(ValueError):
        split_records(pd.concat([hand_records, dup], ignore_index=True))


# --------------------------------------------------------------------------- clean table


def test_clean_table(hand_records) -> None:
    recs = hand_records.copy()
    # RN50 is never right; give image i0 a top-5 hit with a wrong top-1.
    idx = recs.index[(recs["word"] == "") & (recs["model"] == "RN50") & (recs["image_id"] == "i0")][0]
    recs.at[idx, "pred_top5"] = [7, 1, 2, 3, 4]  # true class 1 in top-5, top-1 wrong
    table = build_clean_table(recs).set_index("model")
    assert table.loc["ViT-B-32", "n_images"] == 6
    assert table.loc["ViT-B-32", "clean_top1"] == pytest.approx(4 / 6)
    assert table.loc["ViT-B-32", "clean_top5"] == pytest.approx(4 / 6)
    assert table.loc["RN50", "clean_top1"] == pytest.approx(0.0)
    assert table.loc["RN50", "clean_top5"] == pytest.approx(1 / 6)


# --------------------------------------------------------------------------- leaderboard


@pytest.fixture(scope="module")
def synthetic_per_word() -> pd.DataFrame:
    return build_per_word_table(synthetic_tables.make_records(), synthetic_tables.CLASS_NAMES)


def test_leaderboard_matches_pandas(synthetic_per_word):
    per_word = synthetic_per_word
    board = build_leaderboard(per_word)
    assert list(board.columns) == ["model", "pretrained", "defence", "n_images", "clean_top1", "clean_top1_vs_none",
                                   "attacked_top1", "mean_asr", "asr@0.04", "asr@0.1"]
    assert len(board) == len(synthetic_tables.MODELS)
    g = per_word.groupby(["model", "pretrained"])
    for r in board.to_dict("records"):
        rows = g.get_group((r["model"], r["pretrained"]))
        assert r["n_images"] == synthetic_tables.N_IMAGES
        assert r["mean_asr"] == pytest.approx(rows["asr"].mean())
        assert r["attacked_top1"] == pytest.approx(rows["attacked_top1"].mean())
        assert r["clean_top1"] == pytest.approx(rows["clean_top1"].iloc[0])
        assert r["clean_top1_vs_none"] == 0.0  # every row is undefended
        for f in synthetic_tables.FRACTIONS:
            assert r[f"asr@{f:g}"] == pytest.approx(rows.loc[rows["fraction"] == f, "asr"].mean())
    # The rule: accuracy under attack, highest first.
    want = sorted(g, key=lambda item: -item[1]["attacked_top1"].mean())
    assert list(board["model"]) == [model for (model, _), _ in want]
    assert board["attacked_top1"].is_monotonic_decreasing


def _leaderboard_rows(entries: list[tuple]) -> pd.DataFrame:
    """Per-word rows at two fractions from (model, defence, clean, attacked, asr)."""
    rows = []
    for model, defence, clean, attacked, asr in entries:
        for f in (0.04, 0.1):
            rows.append({"model": model, "pretrained": "p", "defence": defence, "fraction": f, "n_images": 10,
                         "clean_top1": clean, "attacked_top1": attacked, "asr": asr + (0.05 if f == 0.1 else -0.05)})
    return pd.DataFrame(rows)


def test_leaderboard_ranks_by_attacked_top1_then_clean_then_asr():
    board = build_leaderboard(_leaderboard_rows([
        ("A", "none", 0.8, 0.5, 0.1), ("B", "none", 0.9, 0.5, 0.3), ("C", "none", 0.9, 0.5, 0.2),
        ("D", "none", 0.6, 0.6, 0.4)]))
    # D is attacked most (highest ASR) but keeps the most images right; C and B tie on both top-1s.
    assert list(board["model"]) == ["D", "C", "B", "A"]
    assert board.loc[1, "asr@0.1"] == pytest.approx(0.25) and board.loc[1, "asr@0.04"] == pytest.approx(0.15)


def test_leaderboard_shows_what_a_defence_costs_on_clean_images():
    # The defence cuts the ASR from 30% to 5% but halves clean accuracy: fewer attacked images stay right.
    board = build_leaderboard(_leaderboard_rows([
        ("M", "none", 0.8, 0.4, 0.3), ("M", "heads:0.1", 0.3, 0.25, 0.05), ("N", "heads:0.1", 0.7, 0.3, 0.1)]))
    assert list(zip(board["model"], board["defence"])) == [("M", "none"), ("N", "heads:0.1"), ("M", "heads:0.1")]
    change = dict(zip(zip(board["model"], board["defence"]), board["clean_top1_vs_none"]))
    assert change[("M", "none")] == 0.0
    assert change[("M", "heads:0.1")] == pytest.approx(0.3 - 0.8)
    assert np.isnan(change[("N", "heads:0.1")])  # N has no undefended row
    lines = format_leaderboard_markdown(board).splitlines()
    assert lines[0].startswith("| rank | model | pretrained | defence | n images | clean top-1 | Δ clean vs none | "
                               "attacked top-1 | mean ASR |")
    assert lines[2].startswith("| 1 | M | p | none | 10 | 80.0% |  | 40.0% | 30.0% |")
    assert lines[3].startswith("| 2 | N | p | heads:0.1 | 10 | 70.0% | n/a | 30.0% | 10.0% |")
    assert lines[4].startswith("| 3 | M | p | heads:0.1 | 10 | 30.0% | -50.0 pt | 25.0% | 5.0% |")


def test_leaderboard_rule_is_stated():
    assert "attacked top-1" in LEADERBOARD_RULE and "clean" in LEADERBOARD_RULE
    assert "highest attacked_top1 first" in build_leaderboard.__doc__.replace("`", "")


def test_leaderboard_missing_fraction_is_nan_and_na_in_markdown():
    rows = [{"model": "A", "pretrained": "p", "fraction": 0.04, "n_images": 5, "clean_top1": 0.5,
             "attacked_top1": 0.25, "asr": 0.125},
            {"model": "B", "pretrained": "q", "fraction": 0.1, "n_images": 5, "clean_top1": 0.5,
             "attacked_top1": 0.25, "asr": 0.5}]
    board = build_leaderboard(pd.DataFrame(rows))
    assert np.isnan(board.loc[0, "asr@0.1"])
    md = format_leaderboard_markdown(board)
    assert "| 1 | A | p | 5 | 50.0% | 25.0% | 12.5% | 12.5% | n/a |" in md


def test_leaderboard_markdown_format(synthetic_per_word):
    per_word = synthetic_per_word
    board = build_leaderboard(per_word)
    md = format_leaderboard_markdown(board)
    lines = md.strip().splitlines()
    assert lines[0].startswith("| rank | model | pretrained |") and "ASR @ 0.04" in lines[0]
    assert len(lines) == 2 + len(board)
    for rank, r in enumerate(board.to_dict("records"), start=1):
        cells = [c.strip() for c in lines[1 + rank].strip("|").split("|")]
        assert cells[:3] == [str(rank), r["model"], r["pretrained"]]
        assert cells[4] == f"{100 * r['clean_top1']:.1f}%"
        assert cells[6] == f"{100 * r['mean_asr']:.1f}%"
        assert cells[7] == f"{100 * r['asr@0.04']:.1f}%"


def test_leaderboard_empty():
    board = build_leaderboard(pd.DataFrame(columns=PER_WORD_COLUMNS))
    assert board.empty and "mean_asr" in board.columns
    assert format_leaderboard_markdown(board).count("\n") == 2
