"""Text of condition values for figure titles, legends and report cells (no model code).

Shared by `typoattack.analysis.plots` and `typoattack.analysis.report`, so a condition reads the
same in a figure and in a table.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from typoattack.records import STYLE_COLUMNS


def is_missing(value: Any) -> bool:
    """True for None and NaN-like scalars."""
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False



def get_model_label(model: Any, pretrained: Any) -> str:
    """`model/pretrained`, or `model` alone when pretrained is empty or missing."""
    if is_missing(pretrained) or str(pretrained) == "":
        return str(model)
    return f"{model}/{pretrained}"



def list_varying_styles(frame: pd.DataFrame) -> list[str]:
    """The style columns present in `frame` that take more than one value (missing counts as one)."""
    return [c for c in STYLE_COLUMNS if c in frame.columns and frame[c].nunique(dropna=False) > 1]



def format_style(keys: dict[str, Any], styles: Sequence[str]) -> str:
    """`fill=red, opacity=0.5` for the style columns `styles` of a condition."""
    return ", ".join(f"{c}={format_value(keys[c])}" for c in styles)



def format_value(value: Any) -> str:
    """A short text for a style value (floats with %g, missing as n/a)."""
    if is_missing(value):
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:g}"
    text = str(value)
    # Font paths: the file name is what tells them apart.
    return os.path.basename(text) if ("/" in text or "\\" in text) else text



def format_percent(value: Any) -> str:
    """A share as a percentage with one decimal, `n/a` when missing."""
    return "n/a" if is_missing(value) else f"{100 * float(value):.1f}%"



def iter_groups(frame: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """Iterate (key dict, rows) over the groups of `frame` by `keys`, sorted, missing kept."""
    if not keys:
        yield {}, frame
        return
    for values, rows in frame.groupby(keys, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), rows
