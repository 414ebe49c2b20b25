"""The query layer: the `eval` tables computed out of core (DuckDB over chunk files) equal the
in-memory pandas reference on random record sets, and no module loads a whole run."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typoattack.analysis.metrics import (
    build_clean_table, build_confusion_table, build_per_word_table, build_top_confusions, select_heatmap_words,
)
from typoattack.analysis.query import open_records
from typoattack.analysis.tables import (
    query_clean_table, query_heatmap_words, query_outcome_counts, query_per_word_table,
    query_top_confusions, write_confusion,
)
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.records import CLEAN_COLUMNS, RECORD_COLUMNS, STYLE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
WORDS = [("pizza", 963), ("iPod", 605), ("$$$", 719), ("meow", 284)]


def make_records(rng: np.random.Generator, n_images: int, models: list[tuple[str, str]], defences: list[str],
                 n_words: int, fractions: list[float], placements: list[str], n_classes: int,
                 skip: float, styles: int) -> pd.DataFrame:
    """Random records in the real schema: per model, defence and image one clean row and one per
    condition (some images skipped under some conditions: their attacked rows are missing)."""
    rows = []
    fills = ["#ffffff", "#ff0000"][:styles]
    for model, pretrained in models:
        for defence in defences:
            for i in range(n_images):
                image_id, y = f"img{i:04d}", int(rng.integers(n_classes))
                clean_pred = int(y if rng.random() < 0.6 else rng.integers(n_classes))
                base = {"image_id": image_id, "true_index": y, "model": model, "pretrained": pretrained,
                        "defence": defence}
                rows.append({**base, **CLEAN_COLUMNS, "pixel_cover": 0.0, "pred_index": clean_pred})
                for p in placements:
                    for f in fractions:
                        for fill in fills:
                            for word, target in WORDS[:n_words]:
                                if rng.random() < skip:
                                    continue
                                roll = rng.random()
                                pred = target if roll < 0.3 else clean_pred if roll < 0.6 else int(rng.integers(n_classes))
                                rows.append({**base, "word": word, "target_index": target, "fraction": f,
                                             "placement": p, "font": "DejaVuSans-Bold.ttf", "fill": fill,
                                             "outline": "#000000", "outline_width": 1, "opacity": 1.0,
                                             "pixel_cover": float(f + rng.normal(0, 0.003)), "pred_index": pred})
    frame = pd.DataFrame(rows)
    frame["pred_top5"] = [np.array([p, (p + 1) % 1000, (p + 2) % 1000, (p + 3) % 1000, (p + 4) % 1000])
                          for p in frame["pred_index"]]
    frame["p_target"] = rng.random(len(frame)).astype(np.float32)
    frame["p_true"] = rng.random(len(frame)).astype(np.float32)
    for col in ("true_index", "target_index", "outline_width", "pred_index"):
        frame[col] = frame[col].astype(np.int64)
    return frame[RECORD_COLUMNS]


def write_chunks(records: pd.DataFrame, folder: Path, n_chunks: int) -> Path:
    """The records cut by image into chunk files under folder/records.parquet/, as a run commits them."""
    root = folder / "records.parquet"
    images = sorted(records["image_id"].unique())
    for k, part in enumerate(np.array_split(np.array(images, dtype=object), n_chunks)):
        chunk = records[records["image_id"].isin(set(part))]
        (root / "00-model").mkdir(parents=True, exist_ok=True)
        chunk.to_parquet(root / "00-model" / f"{k:05d}.parquet", index=False)
    return root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n_images=st.integers(1, 12), n_models=st.integers(1, 2),
       n_defences=st.integers(1, 2), n_words=st.integers(1, 4), n_fractions=st.integers(1, 2),
       n_placements=st.integers(1, 2), n_classes=st.sampled_from([3, 1000]), skip=st.sampled_from([0.0, 0.3]),
       styles=st.integers(1, 2), n_chunks=st.integers(1, 3))
def test_queries_equal_the_pandas_reference(tmp_path_factory, seed, n_images, n_models, n_defences, n_words,
                                            n_fractions, n_placements, n_classes, skip, styles, n_chunks) -> None:
    rng = np.random.default_rng(seed)
    models = [("ViT-B-32", "openai"), ("RN50", "")][:n_models]
    defences = ["none", "templates:photo"][:n_defences]
    records = make_records(rng, n_images, models, defences, n_words, [0.04, 0.1][:n_fractions],
                           ["paper8", "random"][:n_placements], n_classes, skip, styles)
    root = write_chunks(records, tmp_path_factory.mktemp("run"), min(n_chunks, n_images))
    with open_records(root) as view:
        assert view.count() == len(records)
        ours = query_per_word_table(view, IMAGENET_CLASSNAMES)
        ref = build_per_word_table(records, IMAGENET_CLASSNAMES)
        pd.testing.assert_frame_equal(ours, ref, check_exact=False, rtol=1e-9, check_dtype=False)
        assert list(ours.columns) == list(ref.columns)
        folder = root.parent
        write_confusion(view, folder / "confusion.parquet", folder / "confusion.csv")
        confusion = pd.read_parquet(folder / "confusion.parquet")
        pd.testing.assert_frame_equal(confusion, build_confusion_table(records), check_dtype=False)
        pd.testing.assert_frame_equal(query_clean_table(view), build_clean_table(records), check_exact=False,
                                      rtol=1e-12, check_dtype=False)


def test_tables_do_not_depend_on_how_records_are_chunked(tmp_path) -> None:
    records = make_records(np.random.default_rng(0), 40, [("m", "p")], ["none"], 4, [0.04, 0.1],
                           ["paper8", "random"], 1000, 0.0, 2)
    tables = []
    for n in (1, 7):
        with open_records(write_chunks(records, tmp_path / str(n), n)) as view:
            tables.append(query_outcome_counts(view))
    pd.testing.assert_frame_equal(tables[0], tables[1])  # fixed-point sums: bit-identical


def test_two_clean_rows_or_a_missing_one_are_refused(tmp_path) -> None:
    records = make_records(np.random.default_rng(1), 3, [("m", "p")], ["none"], 1, [0.1], ["paper8"], 10, 0.0, 1)
    doubled = pd.concat([records, records[records["word"] == ""].iloc[:1]], ignore_index=True)
    with open_records(write_chunks(doubled, tmp_path / "a", 1)) as view:
        with pytest.raises(ValueError, match="two clean rows"):
            query_per_word_table(view, IMAGENET_CLASSNAMES)
    orphan = records.drop(index=records.index[records["word"] == ""][0])
    with open_records(write_chunks(orphan, tmp_path / "b", 1)) as view:
        with pytest.raises(ValueError, match="has no clean record"):
            query_per_word_table(view, IMAGENET_CLASSNAMES)


def test_confusion_csv_stays_small_and_parquet_keeps_every_cell(tmp_path) -> None:
    records = make_records(np.random.default_rng(2), 60, [("m", "p")], ["none"], 4, [0.1], ["paper8"], 1000, 0.0, 1)
    with open_records(write_chunks(records, tmp_path, 2)) as view:
        full = write_confusion(view, tmp_path / "c.parquet", tmp_path / "c.csv")
        assert full == {"cells": full["cells"], "csv_cells": full["cells"], "csv_rule": "every cell"}
        small = write_confusion(view, tmp_path / "s.parquet", tmp_path / "s.csv", max_csv_rows=10, top=3)
    every = pd.read_parquet(tmp_path / "s.parquet")
    pd.testing.assert_frame_equal(every, build_confusion_table(records), check_dtype=False)
    csv = pd.read_csv(tmp_path / "s.csv", keep_default_na=False)
    assert small["csv_cells"] == len(csv) and small["csv_rule"].startswith("the 3 cells")
    keys = ["model", "pretrained", "defence", "word", "fraction", "placement", *STYLE_COLUMNS]
    assert csv.groupby(keys).size().max() <= 3
    # The kept cells of each condition are its largest.
    for _, group in csv.groupby(keys):
        cond = every[(every["word"] == group["word"].iloc[0]) & np.isclose(every["fraction"], group["fraction"].iloc[0])]
        assert group["count"].min() >= cond["count"].nlargest(3).min()


def test_no_module_loads_a_whole_run() -> None:
    """Tables are queries: nothing in the package reads records.parquet into pandas whole."""
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "typoattack").rglob("*.py")
                 if re.search(r"\b(pd|pandas)\.read_parquet\(|\bpq\.read_table\(|\bparquet\.read_table\(",
                              p.read_text())]
    assert offenders == []


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), n_images=st.integers(1, 40), n_models=st.integers(1, 2),
       n_defences=st.integers(1, 2), n_words=st.integers(1, 4), n_classes=st.sampled_from([2, 5, 1000]),
       styles=st.integers(1, 2), n_runs=st.integers(1, 2), top=st.integers(1, 4))
def test_confusion_queries_equal_the_pandas_reference(tmp_path_factory, seed, n_images, n_models, n_defences,
                                                      n_words, n_classes, styles, n_runs, top) -> None:
    rng = np.random.default_rng(seed)
    records = make_records(rng, n_images, [("ViT-B-32", "openai"), ("RN50", "")][:n_models],
                           ["none", "templates:photo"][:n_defences], n_words, [0.04, 0.1], ["paper8"], n_classes,
                           0.1, styles)
    confusion = build_confusion_table(records)
    folder = tmp_path_factory.mktemp("conf")
    # Several runs: the cells split between files (the same cell may be in both, and is added up).
    files = []
    for k, part in enumerate(np.array_split(np.arange(len(records)), n_runs)):
        path = folder / f"confusion{k}.parquet"
        build_confusion_table(records.iloc[part]).to_parquet(path, index=False)
        files.append(path)
    pd.testing.assert_frame_equal(query_top_confusions(files, top), build_top_confusions(confusion, top),
                                  check_dtype=False)
    for defence in (None, "none"):
        shown = confusion if defence is None else confusion[confusion["defence"] == defence]
        assert query_heatmap_words(files, defence, None, 2, 0.05) == select_heatmap_words(shown, None, 2, 0.05)
