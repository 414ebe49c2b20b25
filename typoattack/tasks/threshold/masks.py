"""The series of a threshold run (word x placement x text style), the range each can be drawn in on a
canvas, and the text masks of lattice fractions. PIL and numpy only (no model code).

A series' range is [--min-fraction, --max-fraction] clipped to what the solver can draw for that word
and placement on that canvas: paper8's eight stamps cannot go below about 0.005 at 224 px, and a long
word may not reach 0.25. The solver says so (`UnreachableFractionError` with the smallest or largest
reachable fraction); the range moves to that fraction, rounded inwards to 4 significant digits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from typoattack.attack.masks import MaskPool, MaskRequest, create_attack_masks, decode_mask, start_attack_masks
from typoattack.attack.render import AttackMask
from typoattack.attack.solver import UnreachableFractionError, create_attack_mask
from typoattack.config.types import Placement, RenderStyle, Vocabulary
from typoattack.data.class_sets import ClassSet
from typoattack.data.fonts import resolve_font
from typoattack.data.vocab import load_attack_vocab
from typoattack.errors import ConfigError
from typoattack.records import get_style_columns
from typoattack.tasks.threshold.search import SeriesRange, get_lattice_fraction

_TRIES = 12
"""Solver calls at most when moving a range end to a fraction it can draw."""
_NUDGE = 1.02
"""Step of a range end past a fraction the solver cannot hit within its tolerance (coverage jumps over it)."""


@dataclass(frozen=True)
class Series:
    """One word drawn with one placement and text style: what a threshold is searched along.

    Attributes:
        word: The attack text.
        target_index: The class the word aims at.
        placement: Where it is drawn.
        style: Its font, colours, outline and opacity.
    """

    word: str
    target_index: int
    placement: Placement
    style: RenderStyle

    def to_columns(self) -> dict[str, Any]:
        """The series' record columns: word, target_index, placement and the style's columns."""
        return {"word": self.word, "target_index": self.target_index, "placement": self.placement.value,
                **get_style_columns(self.style)}


def load_threshold_vocab(value: str | Sequence[str], classes: ClassSet) -> Vocabulary:
    """The run's vocabulary as eval reads it (a YAML file, a built-in name, `babel:LANG`, `classes`, several
    combined), its targets classes of the run's class set.

    Raises:
        ConfigError: The vocabulary cannot be read, or it is a pseudo-word (`random-class`, one text per
            image: a threshold is searched per word).
    """
    vocab = load_attack_vocab(value, classes)
    if vocab.pseudo_word:
        raise ConfigError(f"--vocab {vocab.pseudo_word} draws another word on each image; threshold searches the "
                          "fraction per word: give words (e.g. --vocab classes for every class name)")
    return vocab


def list_series(cfg: Any, vocab: Vocabulary) -> list[Series]:
    """The product of placements x styles x words, in a fixed order (eval's condition order without fractions),
    each style's font resolved for its word as eval resolves it (`auto`, or the default font's fallback for a
    word it cannot draw).

    Raises:
        RenderError: No font draws a word.
    """
    return [Series(w.text, w.target_index, p, replace(st, font=resolve_font(w.text, st.font)))
            for p, st, w in itertools.product(cfg.placements, cfg.styles, vocab.words)]


def _round(value: float, up: bool) -> float:
    """`value` rounded to 4 significant digits, up or down."""
    scale = 10 ** (3 - math.floor(math.log10(value)))
    return (math.ceil if up else math.floor)(value * scale) / scale


def _reachable_from(series: Series, fraction: float, canvas_size: tuple[int, int], upwards: bool) -> float | None:
    """The first fraction at or beyond `fraction` (upwards: above it; else below it) that the solver draws
    for `series` on the canvas; None when there is none in that direction."""
    f = fraction
    for _ in range(_TRIES):
        if not 0 < f < 1:
            return None
        try:
            create_attack_mask(series.word, f, series.placement, series.style, canvas_size)
            return f
        except UnreachableFractionError as e:
            if e.bound == ("largest" if upwards else "smallest"):
                return None  # the whole canvas's range lies on the other side
            if e.bound in ("smallest", "largest"):
                f = _round(e.limit, up=upwards)
            elif (e.limit > f) == upwards and e.limit != f:  # "nearest", on our side
                f = e.limit
            else:
                f = f * _NUDGE if upwards else f / _NUDGE
    return None


@lru_cache(maxsize=4096)
def find_series_range(series: Series, min_fraction: float, max_fraction: float,
                      canvas_size: tuple[int, int]) -> SeriesRange:
    """[min_fraction, max_fraction] clipped to what `series` can be drawn at on a canvas of `canvas_size`
    (unreachable when nothing in it can be drawn). Cached in memory: a fraction the solver refuses is
    solved again on every call (its errors are not cached), and the plan and each model context ask."""
    lo = _reachable_from(series, min_fraction, canvas_size, upwards=True)
    hi = _reachable_from(series, max_fraction, canvas_size, upwards=False)
    if lo is None or hi is None or not lo < hi:
        return SeriesRange(None, None)
    return SeriesRange(lo, hi)


def find_series_ranges(series: Sequence[Series], min_fraction: float, max_fraction: float,
                       canvas_size: tuple[int, int]) -> list[SeriesRange]:
    """`find_series_range` of each series (the solver's in-memory cache makes a second call cheap)."""
    return [find_series_range(s, min_fraction, max_fraction, canvas_size) for s in series]


def describe_ranges(series: Sequence[Series], ranges: Sequence[SeriesRange]) -> list[dict[str, Any]]:
    """run.json's `ranges` of a model: each series' columns with its clipped range (None: unreachable)."""
    return [{**s.to_columns(), "lo": r.lo, "hi": r.hi} for s, r in zip(series, ranges, strict=True)]


def get_mask_requests(series: Sequence[Series], ranges: Sequence[SeriesRange], n_intervals: int,
                      keys: Sequence[tuple[int, int]], canvas_size: tuple[int, int]) -> list[MaskRequest]:
    """The mask request of each (series index, lattice index) key."""
    requests = []
    for s, j in keys:
        r = ranges[s]
        assert r.lo is not None and r.hi is not None, "an unreachable series has no masks"
        fraction = float(get_lattice_fraction(r.lo, r.hi, n_intervals, j))
        requests.append(MaskRequest(series[s].word, fraction, series[s].placement, series[s].style, canvas_size))
    return requests


def solve_masks(requests: Sequence[MaskRequest], cache_dir: str | None, workers: int | MaskPool,
                advance: Callable[[int], None] | None = None) -> Sequence[AttackMask]:
    """The masks of `requests`, in order, from the mask cache or solved on `workers` processes (or a running
    `MaskPool`). A lattice fraction no font size hits within the solver's tolerance (coverage jumps over
    it; rare, at the smallest fractions) is drawn at the nearest fraction the solver reaches: its measured
    cover says so.

    Raises:
        RenderError: A mask cannot be drawn at all.
    """
    try:
        return create_attack_masks(requests, cache_dir, workers=workers, advance=advance)
    except UnreachableFractionError:
        pass
    masks = []
    for request in requests:  # the solvable ones are cached by now
        try:
            masks.append(create_attack_masks([request], cache_dir)[0])
        except UnreachableFractionError as e:
            masks.append(create_attack_masks([replace(request, fraction=e.limit)], cache_dir)[0])
    return masks


def iter_masks(requests: Sequence[MaskRequest], cache_dir: str | None, pool: MaskPool,
               block: int) -> Iterator[AttackMask]:
    """The masks of `requests`, in order, as `solve_masks` makes them, while the pool solves ahead: the
    missing masks of `block` requests at a time go to the workers, the next block's as soon as the
    caller starts on a block's first mask; so at most two blocks of masks are held, and the caller
    composites and encodes the first masks of a pass while the workers solve the rest.

    Raises:
        RenderError: A mask cannot be drawn at all.
    """
    starts = list(range(0, len(requests), block))
    first = start_attack_masks(requests[:block], cache_dir, pool) if starts else None  # submitted now

    def masks() -> Iterator[AttackMask]:
        pending = first
        for n, b in enumerate(starts):
            current, part = pending, requests[b:b + block]
            pending = (start_attack_masks(requests[b + block:b + 2 * block], cache_dir, pool)
                       if n + 1 < len(starts) else None)
            done = 0
            try:
                for data, _ in current:
                    yield decode_mask(data, part[done].style)
                    done += 1
            except UnreachableFractionError:  # the rest of the block one by one, as solve_masks does
                yield from solve_masks(part[done:], cache_dir, pool)

    return masks()
