"""Tests of the top-confusions table, the class gains and the heatmap rule (typoattack.analysis.metrics)
against hand-built confusion tables and a plain-Python reimplementation."""

from __future__ import annotations

from collections import Counter, defaultdict

import pandas as pd
import pytest

import synthetic_tables
from typoattack.analysis.metrics import (
    HEATMAP_MIN_IMAGES, TOP_CONFUSIONS_PER_WORD, build_class_gains, build_confusion_table, build_top_confusions,
    select_heatmap_words,
)
from typoattack.analysis.report_sections import build_top_confusion_cells, format_class_name

# (word, fraction, placement) -> cells (true, pred, count); the clean condition is ("", 0.0, "").
CELLS = {
    ("", 0.0, ""): [(1, 1, 2), (1, 5, 1), (2, 2, 2), (2, 5, 1), (3, 3, 2), (3, 9, 1)],
    ("w", 0.1, "paper8"): [(1, 5, 3), (2, 5, 2), (2, 2, 1), (3, 9, 1), (3, 3, 2)],
    ("w", 0.1, "random"): [(1, 1, 3), (2, 7, 2), (2, 2, 1), (3, 3, 3)],
    ("v", 0.1, "paper8"): [(1, 1, 3), (2, 2, 3), (3, 3, 2), (3, 8, 1)],
    ("u", 0.1, "paper8"): [(1, 5, 1), (2, 7, 1), (3, 7, 1)],
}


def _confusion(cells: dict = CELLS, model: str = "M", defence: str = "none") -> pd.DataFrame:
    rows = [{"model": model, "pretrained": "p", "defence": defence, "word": w, "fraction": f, "placement": pl,
             "true_index": t, "pred_index": p, "count": c}
            for (w, f, pl), entries in cells.items() for t, p, c in entries]
    return pd.DataFrame(rows)


def test_class_gains_by_hand() -> None:
    gains = build_class_gains(_confusion())
    got = {(r.word, r.placement, r.pred_index): (r.n_images, r.into_count, r.into_clean, r.gain)
           for r in gains.itertuples()}
    # Clean: 9 images; class 5 receives 2 images of other classes, class 9 one.
    assert got == {
        ("w", "paper8", 5): (9, 5, 2, 3), ("w", "paper8", 9): (9, 1, 1, 0),
        ("w", "random", 7): (9, 2, 0, 2),
        ("v", "paper8", 8): (9, 1, 0, 1),
        ("u", "paper8", 7): (3, 2, 0, 2), ("u", "paper8", 5): (3, 1, 2, -1),
    }
    assert gains.loc[(gains["word"] == "u") & (gains["pred_index"] == 7), "gain_share"].item() == pytest.approx(2 / 3)
    # Within a condition, the largest gain first.
    u = gains[gains["word"] == "u"]
    assert list(u["pred_index"]) == [7, 5]


def test_top_confusions_by_hand() -> None:
    top = build_top_confusions(_confusion())
    got = [(r.word, r.placement, r.rank, r.true_index, r.pred_index, r.count, r.n_images, r.clean_count,
            r.into_count, r.into_clean) for r in top.itertuples()]
    assert got == [
        # u: three cells of one image; class 7 gained 2 images, class 5 lost one -> the first cell into 7.
        ("u", "paper8", 1, 2, 7, 1, 3, 0, 2, 0),
        ("v", "paper8", 1, 3, 8, 1, 9, 0, 1, 0),
        # w: one row per condition, the larger cell first; tench->5 also happens once on the clean images.
        ("w", "paper8", 1, 1, 5, 3, 9, 1, 5, 2),
        ("w", "random", 2, 2, 7, 2, 9, 0, 2, 0),
    ]
    assert top["share"].tolist() == pytest.approx([1 / 3, 1 / 9, 3 / 9, 2 / 9])
    assert list(build_top_confusions(_confusion(), n=1)["word"]) == ["u", "v", "w"]


def test_top_confusions_keep_models_and_defences_apart() -> None:
    both = pd.concat([_confusion(), _confusion(model="N"), _confusion(defence="heads:0.1")], ignore_index=True)
    top = build_top_confusions(both)
    assert len(top) == 3 * 4
    one = top[(top["model"] == "N")].drop(columns="model").reset_index(drop=True)
    pd.testing.assert_frame_equal(one, build_top_confusions(_confusion()).drop(columns="model"))


def test_top_confusions_without_errors_is_empty() -> None:
    right = {("", 0.0, ""): [(1, 1, 2)], ("w", 0.1, "paper8"): [(1, 1, 2)]}
    assert build_top_confusions(_confusion(right)).empty
    assert select_heatmap_words(_confusion(right)) == []
    with pytest.raises(ValueError, match="n must be at least 1"):
        build_top_confusions(_confusion(), n=0)
    with pytest.raises(ValueError, match="lacks the column"):
        build_top_confusions(_confusion().drop(columns="count"))


def test_heatmap_rule() -> None:
    confusion = _confusion()
    # u: class 7 gained 2 of 3 images (67%); w: class 5 gained 3 of 9 (33%); v: one image (11%).
    assert select_heatmap_words(confusion, min_images=2, min_share=0.2) == ["u", "w"]
    assert select_heatmap_words(confusion, limit=1, min_images=2, min_share=0.2) == ["u"]
    assert select_heatmap_words(confusion, min_images=3, min_share=0.2) == ["w"]
    assert select_heatmap_words(confusion, min_images=1, min_share=0.5) == ["u"]
    # A class the model already fills on clean images gains nothing: no heatmap.
    pulled = {("", 0.0, ""): [(1, 5, 30), (5, 5, 1)], ("w", 0.1, "paper8"): [(1, 5, 30), (5, 5, 1)]}
    assert select_heatmap_words(_confusion(pulled)) == []
    moved = {("", 0.0, ""): [(1, 1, 30), (5, 5, 1)], ("w", 0.1, "paper8"): [(1, 5, HEATMAP_MIN_IMAGES), (1, 1, 20),
                                                                              (5, 5, 1)]}
    assert select_heatmap_words(_confusion(moved)) == ["w"]


def _reference_top(records: pd.DataFrame, n: int) -> dict[tuple, list[tuple]]:
    """Top confusions recomputed with Counters: per (model, word) the (placement, fraction, true, pred, count)."""
    clean_into: dict[tuple, Counter] = defaultdict(Counter)
    cond_cells: dict[tuple, Counter] = defaultdict(Counter)
    for r in records.itertuples():
        if r.word == "":
            if r.true_index != r.pred_index:
                clean_into[r.model][r.pred_index] += 1
        else:
            cond_cells[(r.model, r.word, r.fraction, r.placement)][(r.true_index, r.pred_index)] += 1
    best: dict[tuple, list[tuple]] = defaultdict(list)
    for (model, word, fraction, placement), cells in cond_cells.items():
        into = Counter()
        for (t, p), c in cells.items():
            if t != p:
                into[p] += c
        off = [(c, into[p] - clean_into[model][p], -t, -p) for (t, p), c in cells.items() if t != p]
        c, gain, t, p = max(off)
        best[(model, word)].append((c, gain, fraction, placement, -t, -p))
    out = {}
    for key, rows in best.items():
        rows.sort(key=lambda x: (-x[0], -x[1], x[2], x[3]))
        out[key] = [(pl, f, t, p, c) for c, _, f, pl, t, p in rows[:n]]
    return out


def test_top_confusions_match_a_counter_reference() -> None:
    records = synthetic_tables.make_records()
    top = build_top_confusions(build_confusion_table(records))
    want = _reference_top(records, TOP_CONFUSIONS_PER_WORD)
    got: dict[tuple, list[tuple]] = defaultdict(list)
    for r in top.itertuples():
        got[(r.model, r.word)].append((r.placement, r.fraction, r.true_index, r.pred_index, r.count))
    assert dict(got) == want
    assert (top["rank"] <= TOP_CONFUSIONS_PER_WORD).all() and (top["true_index"] != top["pred_index"]).all()


def test_top_confusion_cells_read_class_names() -> None:
    names = [f"c{i}" for i in range(10)]
    names[5] = names[7] = "crane"  # two classes with one name: the index tells them apart
    header, cells = build_top_confusion_cells(build_top_confusions(_confusion()), names, {"w": 9, "u": 7})
    assert header == ["word → target", "fraction", "placement", "true class → predicted class", "n", "share",
                      "n clean", "into class", "into class clean"]
    assert cells[0] == ["`u` → crane (7)", "0.1", "paper8", "c2 → crane (7)", "1", "33.3%", "0", "2", "0"]
    assert cells[2][0] == "`w` → c9" and cells[2][3] == "c1 → crane (5)"
    assert format_class_name(3, names) == "c3"
    two = pd.concat([_confusion(), _confusion(model="N")], ignore_index=True)
    header, cells = build_top_confusion_cells(build_top_confusions(two), names)
    assert header[1] == "model" and cells[0][1] == "M/p" and cells[0][0] == "`u`"
    assert {len(row) for row in cells} == {len(header)}
