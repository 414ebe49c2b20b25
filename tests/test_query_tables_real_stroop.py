"""The `real` and `stroop` tables as out-of-core queries equal their pandas references: random small
record sets written as Parquet chunk files (a run's records.parquet/ folder), opened with
`typoattack.analysis.query.open_records`, several models, defences, variants with photos missing
(skipped), runs without a `defence` column, several runs opened together, and stroop.csv streamed
in batches byte for byte."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typoattack.analysis.query import open_records
from typoattack.files import write_csv
from typoattack.tasks.real.report import EXAMPLE_COLUMNS, query_real_example_rows, select_real_example_rows
from typoattack.tasks.real.tables import (
    REAL_RECORD_COLUMNS, build_paired_drop, build_per_attack_word, build_summary, check_unique_photos,
    query_paired_drop, query_per_attack_word, query_summary, with_defence_column, write_real_tables,
)
from typoattack.tasks.stroop.tables import (
    STROOP_COLUMNS, build_stroop_matrix, build_stroop_summary, list_inks_and_words, query_stroop_example_rows,
    query_stroop_matrices, query_stroop_summary, write_stroop_csv,
)

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODELS = [("m1", ""), ("m2", "p"), ("m1", "q")]
DEFENCES = ["none", "heads:0.0", "templates:simple"]
VARIANTS = ["SCAM", "NoSCAM", "SynthSCAM", "attacked", "custom-b", "custom-a"]
"""Known variants and two unknown ones (which tie in the sort, so their first appearance decides)."""
LABELS = ["dog", "cup", "cat", "ipod"]
INKS = ["black", "red", "green", "blue"]
FONTS = ["DejaVuSans-Bold.ttf", "/x/mine, \"quoted\".ttf"]
BACKGROUNDS = ["#ffffff", "image:n01_a.JPEG", "image:n02_b.JPEG", "#202020"]


def write_chunks(frame: pd.DataFrame, folder: Path, cuts: list[int]) -> Path:
    """`frame` as a records.parquet/ folder: consecutive chunks cut at `cuts`, one file per cell,
    named so their path order is the frame's order."""
    bounds = sorted({0, len(frame), *(c % (len(frame) + 1) for c in cuts)})
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        path = folder / f"{k // 2:02d}-model" / f"{k:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.iloc[lo:hi].to_parquet(path, index=False)
    if len(frame) == 0:
        (folder / "00-model").mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / "00-model" / "00000.parquet", index=False)
    return folder


# --------------------------------------------------------------------------------------------
# real


@st.composite
def real_records(draw: st.DrawFn, min_size: int = 1) -> pd.DataFrame:
    """Records of a real run: per (model, defence) a random set of (variant, photo) records (a
    photo missing from a variant is a skipped image), rows in a random order."""
    keys = draw(st.lists(st.tuples(st.sampled_from(range(len(MODELS))), st.sampled_from(DEFENCES),
                                   st.sampled_from(["scam", "paint"]), st.sampled_from(["union", "binary"]),
                                   st.sampled_from(VARIANTS), st.integers(0, 5)),
                         min_size=min_size, max_size=60, unique=True))
    rows = []
    for m, defence, dataset, protocol, variant, photo in keys:
        obj = draw(st.sampled_from(LABELS[:2]))
        word = draw(st.sampled_from(LABELS[2:]))
        rows.append({
            "image_id": f"{variant}/{photo}", "photo_id": f"img_{photo:04d}", "model": MODELS[m][0],
            "pretrained": MODELS[m][1], "defence": defence, "dataset": dataset, "variant": variant,
            "protocol": protocol, "object_label": obj, "attack_word": word,
            "pred_label": draw(st.sampled_from([obj, word, "apple"])),
            "p_object": np.float32(draw(st.floats(0, 1))), "p_attack": np.float32(draw(st.floats(0, 1))),
            "n_classes": 4, "postit_area_pct": draw(st.sampled_from([0.0, 14.5, 3.25])),
        })
    order = draw(st.permutations(range(len(rows))))
    frame = pd.DataFrame([rows[i] for i in order], columns=REAL_RECORD_COLUMNS)
    return frame.astype({"p_object": np.float32, "p_attack": np.float32, "n_classes": np.int64})


def _assert_frames(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True), check_exact=False,
                                  rtol=1e-9)


@SETTINGS
@given(frame=real_records(), cuts=st.lists(st.integers(0, 60), max_size=4), drop_defence=st.booleans())
def test_real_queries_equal_the_pandas_tables(frame, cuts, drop_defence) -> None:
    if drop_defence:  # records written before real runs had defences: one defence, no column
        frame = frame[frame["defence"] == frame["defence"].iloc[0]].drop(columns="defence").reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_chunks(frame, Path(tmp) / "records.parquet", cuts)
        with open_records(folder) as records:
            _assert_frames(query_summary(records), build_summary(frame))
            _assert_frames(query_per_attack_word(records), build_per_attack_word(frame))
            _assert_frames(query_paired_drop(records), build_paired_drop(frame))
            rows = with_defence_column(frame)
            assert check_unique_photos(records) == (
                not rows.duplicated(["model", "pretrained", "defence", "dataset", "protocol", "image_id"]).any())
            for model, pretrained in dict.fromkeys(zip(frame["model"], frame["pretrained"])):
                for n in (1, 5, 8):
                    want = select_real_example_rows(rows, model, pretrained, n)[EXAMPLE_COLUMNS]
                    _assert_frames(query_real_example_rows(records, model, pretrained, n), want)
            for name in ("query", "pandas"):
                (Path(tmp) / name).mkdir()
            write_real_tables(records, Path(tmp) / "query")
        write_real_tables(frame, Path(tmp) / "pandas")
        for table in ("summary.csv", "per_attack_word.csv"):
            assert (Path(tmp) / "query" / table).read_bytes() == (Path(tmp) / "pandas" / table).read_bytes()


@SETTINGS
@given(first=real_records(), second=real_records(), old=st.booleans())
def test_real_queries_over_several_runs_equal_the_concatenated_records(first, second, old) -> None:
    """The report's view: two runs behind one view (the second maybe without `defence`), each run
    alone by `run = k`, and the two together as the concatenation of their records."""
    second = second.assign(model=second["model"] + "-other")
    if old:
        second = second[second["defence"] == second["defence"].iloc[0]].drop(columns="defence").reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = [write_chunks(f, Path(tmp) / f"run{k}" / "records.parquet", [3, 7])
                   for k, f in enumerate((first, second))]
        with open_records(folders) as records:
            for k, frame in enumerate((first, second)):
                _assert_frames(query_summary(records, f"run = {k}"), build_summary(frame))
                _assert_frames(query_per_attack_word(records, f"run = {k}"), build_per_attack_word(frame))
            both = pd.concat([with_defence_column(first), with_defence_column(second)], ignore_index=True)
            _assert_frames(query_summary(records), build_summary(both))
            _assert_frames(query_per_attack_word(records), build_per_attack_word(both))
            model, pretrained = first["model"].iloc[0], first["pretrained"].iloc[0]
            _assert_frames(query_real_example_rows(records, model, pretrained, 8, "run = 0"),
                           select_real_example_rows(with_defence_column(first), model, pretrained, 8)[EXAMPLE_COLUMNS])


def test_real_queries_of_no_records_and_of_two_noscam_twins(tmp_path) -> None:
    empty = pd.DataFrame(columns=REAL_RECORD_COLUMNS).astype(str)
    with open_records(write_chunks(empty, tmp_path / "empty", [])) as records:
        _assert_frames(query_summary(records), build_summary(empty))
        _assert_frames(query_per_attack_word(records), build_per_attack_word(empty))
    base = {"image_id": "a", "photo_id": "p", "model": "m", "pretrained": "", "defence": "none", "dataset": "scam",
            "protocol": "binary", "object_label": "o", "attack_word": "w", "pred_label": "o", "p_object": 0.5,
            "p_attack": 0.5, "n_classes": 2, "postit_area_pct": 0.0}
    twice = pd.DataFrame([{**base, "variant": "NoSCAM"}, {**base, "variant": "NoSCAM", "image_id": "b"},
                          {**base, "variant": "SCAM", "image_id": "c"}])
    with pytest.raises(ValueError):
        build_paired_drop(twice)
    with open_records(write_chunks(twice, tmp_path / "twice", [1])) as records, pytest.raises(ValueError, match="two"):
        query_paired_drop(records)


# --------------------------------------------------------------------------------------------
# stroop


def _condition(ink: str, word: str) -> str:
    return "neutral" if word not in INKS else "congruent" if word == ink else "incongruent"


@st.composite
def stroop_rows(draw: st.DrawFn) -> pd.DataFrame:
    """stroop.csv rows: per model a random set of stimuli (ink, word, variant, font, background),
    in model order as a run writes them, stimuli in a random order."""
    words = ["example", *INKS[1:]]
    stimuli = st.tuples(st.sampled_from(INKS), st.sampled_from(words), st.integers(0, 1), st.sampled_from(FONTS),
                        st.sampled_from(BACKGROUNDS))
    rows = []
    for model, pretrained in draw(st.lists(st.sampled_from(MODELS), min_size=1, max_size=3, unique=True)):
        for ink, word, variant, font, background in draw(st.lists(stimuli, min_size=1, max_size=30, unique=True)):
            condition = _condition(ink, word)
            rows.append({
                "model": model, "pretrained": pretrained, "ink": ink, "word": word, "condition": condition,
                "variant": variant, "font": font, "background": background,
                "font_size": draw(st.integers(10, 60)), "x": draw(st.integers(0, 200)), "y": draw(st.integers(0, 200)),
                "pred": draw(st.sampled_from(INKS)),
                "p_ink": draw(st.floats(0, 1, allow_subnormal=False)),
                "p_word": np.nan if condition == "neutral" else draw(st.floats(0, 1, allow_subnormal=False)),
            })
    return pd.DataFrame(rows, columns=STROOP_COLUMNS)


def _example_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows `collect_stroop_examples` draws (its selection, without the rendering)."""
    first = rows.iloc[0]
    return rows[(rows["model"] == first["model"]) & (rows["pretrained"] == first["pretrained"])
                & (rows["font"] == first["font"]) & (rows["background"] == first["background"])
                & (rows["variant"] == 0)]


@SETTINGS
@given(rows=stroop_rows(), cuts=st.lists(st.integers(0, 90), max_size=4), batch=st.integers(1, 50))
def test_stroop_queries_equal_the_pandas_tables(rows, cuts, batch) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_chunks(rows, Path(tmp) / "records.parquet", cuts)
        with open_records(folder) as records:
            _assert_frames(query_stroop_summary(records), build_stroop_summary(rows))
            models, inks, words, matrices = query_stroop_matrices(records)
            assert (inks, words) == list_inks_and_words(rows)
            assert models == list(dict.fromkeys(zip(rows["model"], rows["pretrained"])))
            for (model, pretrained), (as_ink, as_word) in zip(models, matrices):
                mine = rows[(rows["model"] == model) & (rows["pretrained"] == pretrained)]
                want_ink, want_word = build_stroop_matrix(mine, inks, words)
                np.testing.assert_array_equal(as_ink, want_ink)
                np.testing.assert_array_equal(as_word, want_word)
            _assert_frames(_example_rows(query_stroop_example_rows(records)), _example_rows(rows))
            write_stroop_csv(records, Path(tmp) / "streamed.csv", batch_rows=batch)
        write_csv(rows, Path(tmp) / "whole.csv")
        assert (Path(tmp) / "streamed.csv").read_bytes() == (Path(tmp) / "whole.csv").read_bytes()


@SETTINGS
@given(first=stroop_rows(), second=stroop_rows())
def test_stroop_queries_over_several_runs(first, second) -> None:
    second = second.assign(model=second["model"] + "-other")
    with tempfile.TemporaryDirectory() as tmp:
        folders = [write_chunks(f, Path(tmp) / f"run{k}" / "records.parquet", [5, 11])
                   for k, f in enumerate((first, second))]
        with open_records(folders) as records:
            for k, frame in enumerate((first, second)):
                _assert_frames(query_stroop_summary(records, f"run = {k}"), build_stroop_summary(frame))
            both = pd.concat([first, second], ignore_index=True)
            _assert_frames(query_stroop_summary(records), build_stroop_summary(both))
            _, inks, words, _ = query_stroop_matrices(records)
            assert (inks, words) == list_inks_and_words(both)
            _assert_frames(_example_rows(query_stroop_example_rows(records, "run = 1")), _example_rows(second))


def test_stroop_csv_of_no_rows_is_the_header(tmp_path) -> None:
    rows = pd.DataFrame(columns=STROOP_COLUMNS)
    with open_records(write_chunks(rows.astype(str), tmp_path / "records.parquet", [])) as records:
        assert write_stroop_csv(records, tmp_path / "streamed.csv") == 0
    write_csv(rows, tmp_path / "whole.csv")
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
