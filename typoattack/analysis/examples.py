"""Which examples a report draws: the conditions and images of each word, chosen the same way by
every task's report (pure functions; no model code)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.labels import format_style
from typoattack.records import STYLE_COLUMNS

EXAMPLE_MAX_CONDITIONS = 4
"""An examples figure shows at most this many conditions (columns) beside the clean image."""


def select_example_conditions(conditions: pd.DataFrame, limit: int = EXAMPLE_MAX_CONDITIONS) -> pd.DataFrame:
    """The conditions examples.png shows: all when there are at most `limit`, else `limit` evenly
    spaced ones (first and last included) in the order placement, fraction, style.

    Args:
        conditions: Distinct condition rows (CONDITION_COLUMNS).
        limit: The most conditions returned.

    Returns:
        The chosen rows in that order.
    """
    order = conditions.sort_values(["placement", "fraction", *STYLE_COLUMNS], kind="stable", na_position="last")
    if len(order) <= limit:
        return order.reset_index(drop=True)
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, limit)).astype(int))
    return order.iloc[picks].reset_index(drop=True)


def select_example_images(candidates: Sequence[str], word: str, seed: int, n: int,
                          used: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The images examples.png shows for `word`: `n` drawn without replacement by a generator keyed
    on (seed, word), so each word gets its own images and a rerun the same ones.

    Images in `used` (shown for earlier words) are left out while at least `n` others remain.

    Args:
        candidates: Image ids that have a clean record and one under every shown condition.
        word: The attack word (keys the draw).
        seed: The run's seed.
        n: Images wanted.
        used: Image ids already shown.

    Returns:
        Up to `n` image ids, in draw order.
    """
    pool = sorted(set(candidates))
    fresh = [c for c in pool if c not in used]
    pool = fresh if len(fresh) >= n else pool
    rng = np.random.default_rng([seed, zlib.crc32(word.encode("utf-8"))])
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False) if pool else []
    return [pool[int(i)] for i in picks]


def format_condition(row: Any, styles: Sequence[str] = ()) -> str:
    """`fraction 0.04 · paper8` (and the varying styles) for a condition row or dict."""
    text = f"fraction {float(row['fraction']):g} · {row['placement']}"
    return text + (f" · {format_style(dict(row), styles)}" if styles else "")
