"""Tests of typoattack.records: the Condition type, the record schema and build_records."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from typoattack.config.types import ModelSpec, Placement, RenderStyle
from typoattack.constants import DEFAULT_FONT, FONTS_DIR
from typoattack.records import (
    CLEAN_COLUMNS, CONDITION_COLUMNS, CONDITION_DTYPES, RECORD_COLUMNS, STYLE_COLUMNS, Condition, build_records,
    get_style_columns,
)

STYLE = RenderStyle(font=str(FONTS_DIR / "DejaVuSans.ttf"), fill=(255, 0, 0), outline=(0, 0, 16), outline_width=2,
                    opacity=0.5)
CONDITIONS = [Condition("iPod", 605, 0.07, Placement.PAPER8, RenderStyle()),
              Condition("$$$", 719, 0.1, Placement.RANDOM, STYLE)]


def test_schema_is_declared_once_and_consistent() -> None:
    assert list(CLEAN_COLUMNS) == CONDITION_COLUMNS == list(CONDITION_DTYPES)
    assert set(STYLE_COLUMNS) <= set(CONDITION_COLUMNS)
    assert len(set(RECORD_COLUMNS)) == len(RECORD_COLUMNS)


def test_to_columns_spells_values_as_records_store_them() -> None:
    cols = CONDITIONS[1].to_columns()
    assert list(cols) == CONDITION_COLUMNS
    assert cols == {"word": "$$$", "target_index": 719, "fraction": 0.1, "placement": "random",
                    "font": "DejaVuSans.ttf", "fill": "#ff0000", "outline": "#000010", "outline_width": 2,
                    "opacity": 0.5}
    assert get_style_columns(RenderStyle())["font"] == DEFAULT_FONT.name


@pytest.mark.parametrize("condition", CONDITIONS)
def test_from_row_round_trip_with_known_styles(condition: Condition) -> None:
    row = condition.to_columns()
    assert Condition.from_row(row, [RenderStyle(), STYLE]) == condition


@pytest.mark.parametrize("condition", CONDITIONS)
def test_from_row_round_trip_finds_shipped_fonts(condition: Condition) -> None:
    # Without the run's styles the font is looked up by its file name in the shipped fonts.
    assert Condition.from_row(pd.Series(condition.to_columns())) == condition


def test_from_row_of_a_clean_record_raises() -> None:
    with pytest.raises(ValueError, match="clean"):
        Condition.from_row(CLEAN_COLUMNS)


def _records() -> pd.DataFrame:
    ids = ["b.jpg", "a.jpg"]
    n_cond, n_img = 1 + len(CONDITIONS), len(ids)
    job_cond, job_image = np.repeat(np.arange(n_cond), n_img), np.tile(np.arange(n_img), n_cond)
    n = len(job_cond)
    outcomes = [{"pred_index": np.arange(n, dtype=np.int64), "pred_top5": np.tile(np.arange(5, dtype=np.int64), (n, 1)),
                 "p_target": np.full(n, 0.25), "p_true": np.full(n, 0.5)}]
    return build_records(ModelSpec("m", "seed:0"), ids, np.array([3, 4]), CONDITIONS, job_cond, job_image,
                         np.linspace(0, 0.1, n), outcomes)


def test_build_records_columns_order_and_dtypes() -> None:
    records = _records()
    assert list(records.columns) == RECORD_COLUMNS
    for col, dtype in CONDITION_DTYPES.items():
        if dtype is object:  # pandas stores the text columns with its string dtype
            assert pd.api.types.is_string_dtype(records[col]), col
        else:
            assert records[col].dtype == np.dtype(dtype), col
    assert records["p_target"].dtype == np.float32 and records["pred_index"].dtype == np.int64
    # Image by image, clean first, then the conditions in order.
    assert list(records["image_id"]) == ["b.jpg"] * 3 + ["a.jpg"] * 3
    assert list(records["word"]) == ["", "iPod", "$$$"] * 2
    assert list(records["pred_index"]) == [0, 2, 4, 1, 3, 5]


def test_build_records_rows_read_back_as_their_conditions() -> None:
    records = _records()
    clean = records[records["word"] == ""].iloc[0]
    assert {c: clean[c] for c in CONDITION_COLUMNS if c != "opacity"} == {
        c: v for c, v in CLEAN_COLUMNS.items() if c != "opacity"}
    assert math.isnan(clean["opacity"])
    attacked = records[records["word"] != ""]
    for row, condition in zip(attacked.head(2).to_dict("records"), CONDITIONS):
        assert Condition.from_row(row, [RenderStyle(), STYLE]) == condition
