"""Solve the font size (and the stamps' sub-pixel phases) at which a word covers a requested share
of the canvas: `create_attack_mask`. Pure PIL + numpy, no model code."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from typoattack.attack.render import (
    _PHASES,
    PAPER8_CENTERS,
    AttackMask,
    _coverage_at,
    _default_phases,
    _draw_stamp,
    _layout,
    check_glyphs,
)
from typoattack.config.types import Placement, RenderStyle
from typoattack.errors import RenderError

# Font sizes (pixels) searched when solving for a fraction.
_MIN_FONT_SIZE = 2.0
_SIZE_GRID = 48
_BISECT_STEPS = 24
# The solver aims at this relative error of the mask coverage and fails beyond _SOLVE_RTOL.
# Coverage is a step function of the font size (glyphs snap to pixels), so it cannot be exact.
_SOLVE_TARGET_RTOL = 0.01
_SOLVE_RTOL = 0.04


# Most stamps the random placement may use.
_MAX_RANDOM_COPIES = 8


class UnreachableFractionError(RenderError):
    """A fraction no font size reaches for a word on a canvas (a `RenderError`).

    Attributes:
        fraction: The requested fraction.
        bound: "smallest" (the smallest font already covers more: the canvas is too small), "largest"
            (the largest covers less) or "nearest" (coverage jumps over the fraction).
        limit: The reachable fraction the message names (the smallest, the largest or the nearest).
    """

    def __init__(self, message: str, fraction: float, bound: str, limit: float) -> None:
        super().__init__(message)
        self.fraction, self.bound, self.limit = fraction, bound, limit

    def __reduce__(self) -> tuple[Any, ...]:  # raised in a mask worker process, read in the parent
        return type(self), (str(self), self.fraction, self.bound, self.limit)

    def suggest_fix(self, larger_canvas: str) -> str:
        """What to pass instead, e.g. "pass --fraction 0.0124 or more, or {larger_canvas}".

        Args:
            larger_canvas: How the user gets a larger canvas in the command at hand, e.g.
                "a model with a larger input" or "a larger --image-size".
        """
        if self.bound == "smallest":
            return f"pass --fraction {math.ceil(self.limit * 1e4) / 1e4:.4f} or more, or {larger_canvas}"
        if self.bound == "largest":
            return f"pass --fraction {math.floor(self.limit * 1e4) / 1e4:.4f} or less"
        return f"pass a --fraction near {self.limit:.4f}"

    def with_fix(self, larger_canvas: str) -> UnreachableFractionError:
        """The same error with `suggest_fix` appended to its message."""
        return UnreachableFractionError(f"{self}; {self.suggest_fix(larger_canvas)}", self.fraction, self.bound,
                                        self.limit)


@lru_cache(maxsize=1024)
def create_attack_mask(word: str, fraction: float, placement: Placement, style: RenderStyle,
                       canvas_size: tuple[int, int]) -> AttackMask:
    """Solve the font size at which `word` covers `fraction` of the canvas and render it.

    Args:
        word: The attack text (one line).
        fraction: Requested share of canvas pixels changed by the overlay, in (0, 1).
        placement: paper8 (8 stamps on a diagonal), center (one stamp) or random (one stamp
            that fits inside the canvas, moved per image; the fewest non-overlapping stamps,
            one per horizontal band, when one stamp cannot cover the fraction).
        style: Font, colours, outline width and opacity.
        canvas_size: (height, width) of the model-input canvas.

    Returns:
        The mask; its `coverage` is within 4% (relative) of `fraction`, usually within 1%.

    Raises:
        RenderError: The font lacks a glyph. UnreachableFractionError (a RenderError): The
            fraction cannot be reached (the message names the largest or smallest reachable
            fraction; `with_fix` adds what to pass instead).
    """
    if not 0 < fraction < 1:
        raise RenderError(f"fraction {fraction} must be in (0, 1)")
    check_glyphs(word, style.font)
    placement = Placement(placement)
    H, W = canvas_size
    where = f"{word!r} with placement {placement.value} on a {H}x{W} canvas"
    # Random: one stamp if it can cover the fraction, else the fewest non-overlapping stamps.
    max_copies = _MAX_RANDOM_COPIES if placement is Placement.RANDOM else 1
    largest = 0.0
    for copies in range(1, max_copies + 1):
        try:
            return _solve(word, fraction, placement, style, canvas_size, copies, where)
        except _Unreachable as e:
            largest = max(largest, e.largest)
            if e.smallest is not None:
                raise UnreachableFractionError(
                    f"fraction {fraction:g} cannot be reached for {where}: the smallest reachable fraction is {e.smallest:.4f}",
                    fraction, "smallest", e.smallest) from None
    raise UnreachableFractionError(
        f"fraction {fraction:g} cannot be reached for {where}: the largest reachable fraction is {largest:.4f}",
        fraction, "largest", largest)


class _Unreachable(Exception):
    """No font size reaches the fraction with this many stamps (largest, smallest coverage)."""

    def __init__(self, largest: float, smallest: float | None = None) -> None:
        self.largest, self.smallest = largest, smallest


def _solve(word: str, fraction: float, placement: Placement, style: RenderStyle, canvas_size: tuple[int, int],
           copies: int, where: str) -> AttackMask:
    """Solve the font size (and the stamps' phases) for `fraction`: the fast solver first, the
    grid search when it does not converge; raise _Unreachable when no size reaches it."""
    solved = _solve_fast(word, fraction, placement, style, canvas_size, copies)
    if solved is None:
        solved = _solve_grid(word, fraction, placement, style, canvas_size, copies, where)
    size, phases, coverage = solved
    layers = _layout(word, size, placement, style, canvas_size, copies, phases)
    assert layers is not None  # a solved size always has a layout
    return AttackMask(word, fraction, placement, canvas_size, round(size, 3), coverage, layers, style, copies, phases)


# Secant steps of the fast solver, then rounds of phase picking (each may move the size once).
_FAST_STEPS = 8
_PHASE_ROUNDS = 5
# The pixel count of a phase that must never be picked (a random stamp too large for its band).
_NEVER = 2 ** 40
# Share of a text stamp's box that glyphs cover, roughly: only the fast solver's first guess uses it.
_GLYPH_DENSITY = 0.3


def _secant(cov: Callable[[float], float], fraction: float, size: float, tol: float,
            max_size: float) -> tuple[float, float] | None:
    """Secant steps on log coverage against log size, from `size`, until `cov` is within `tol`
    of `fraction` or the steps run out; sizes above `max_size` are clamped to it. Returns (best
    size, its coverage), or None when a size falls below _MIN_FONT_SIZE or draws nothing."""
    best: tuple[float, float] | None = None
    previous: tuple[float, float] | None = None
    for _ in range(_FAST_STEPS):
        size = min(size, max_size)
        if size < _MIN_FONT_SIZE:
            return None
        c = cov(size)
        if c <= 0:
            return None
        if best is None or abs(c - fraction) < abs(best[1] - fraction):
            best = (size, c)
        if abs(c - fraction) <= tol:
            break
        slope = 2.0  # coverage grows about as the square of the font size
        if previous is not None and previous[0] != size and previous[1] != c:
            slope = min(max(math.log(c / previous[1]) / math.log(size / previous[0]), 1.0), 3.0)
        previous = (size, c)
        size = round(size * (fraction / c) ** (1.0 / slope), 3)
    return best


def _pick_phases(counts: Sequence[int], n: int, target: float) -> tuple[int, ...]:
    """The n stamp phases (a multiset, sorted) whose pixel counts sum closest to `target` (the smaller sum
    on a tie).

    Args:
        counts: Drawn pixels of one stamp at each phase 0-15 (same size).
        n: Number of stamps.
        target: Wanted total of drawn pixels.
    """
    # Every sum reachable with sorted phases, grown one stamp at a time. Of the multisets with the same
    # sum, each round keeps the last in lexicographic order (chosen so far, next phase): the choice a
    # dict of sums overwritten in that order keeps, and which the masks cached before this was
    # vectorized were solved with.
    c = np.asarray(counts, dtype=np.int64)
    P = len(c)
    totals = np.zeros(1, dtype=np.int64)
    chosen = np.zeros((1, 0), dtype=np.int64)
    last = np.full(1, -1, dtype=np.int64)
    for _ in range(n):
        rows, phases = np.nonzero(np.arange(P)[None, :] >= last[:, None])  # row-major: lexicographic order
        new = totals[rows] + c[phases]
        keys, first = np.unique(new, return_index=True)
        _, from_end = np.unique(new[::-1], return_index=True)
        latest = len(new) - 1 - from_end  # the last (row, phase) of each sum, in `keys` order
        order = np.argsort(first, kind="stable")  # sums in order of their first appearance
        keys, latest = keys[order], latest[order]
        totals, last = keys, phases[latest]
        chosen = np.concatenate([chosen[rows[latest]], last[:, None]], axis=1)
    distance = np.abs(totals.astype(np.float64) - target)
    best = np.lexsort((totals, distance))[0]
    return tuple(int(p) for p in chosen[best])


def _largest_fitting_size(word: str, style: RenderStyle, size: float, height: int, width: int) -> float | None:
    """About the largest font size (within 0.5%) at which one stamp fits a `height` x `width`
    box, from a first guess `size`; None when even the smallest size does not fit."""

    def fits(s: float) -> bool:
        h, w = _draw_stamp(word, style.font, s, style.outline_width, 0, False)[0].shape
        return h <= height and w <= width

    def scale(s: float) -> float:  # stamp sides grow in proportion to the size
        h, w = _draw_stamp(word, style.font, s, style.outline_width, 0, False)[0].shape
        return min((height + 0.5) / h, (width + 0.5) / w)

    # A stamp that draws nothing (too small a size) has a 1x1 box: keep guesses below the box's size.
    limit = 2.0 * max(height, width)
    lo = round(min(size * scale(size), limit), 3)
    while not fits(lo):
        lo = round(lo * 0.97 * min(scale(lo), 1.0), 3)
        if lo < _MIN_FONT_SIZE:
            return None
    hi = round(min(lo * 1.1, limit), 3)
    while hi < limit and fits(hi):
        lo, hi = hi, round(min(hi * 1.1, limit), 3)
    while hi - lo > 0.005 * lo:
        mid = round((lo + hi) / 2, 3)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _phase_counts(word: str, style: RenderStyle, size: float, placement: Placement, canvas_size: tuple[int, int],
                  copies: int, n: int, target: float, tol: float) -> list[int]:
    """Drawn pixels of one stamp at each sub-pixel phase (a random stamp that does not fit its
    band counts as never chosen). For a single stamp the phases are drawn in turn, and the list
    ends at the first one within `tol` pixels of `target`."""
    H, W = canvas_size
    counts = []
    for p in range(_PHASES):
        alpha = _draw_stamp(word, style.font, size, style.outline_width, p, False)[0]
        fits = placement is not Placement.RANDOM or (alpha.shape[0] <= H // copies and alpha.shape[1] <= W)
        counts.append(int(np.count_nonzero(alpha)) if fits else _NEVER)
        if n == 1 and abs(counts[-1] - target) <= tol:
            break
    return counts


def _solve_fast(word: str, fraction: float, placement: Placement, style: RenderStyle,
                canvas_size: tuple[int, int], copies: int) -> tuple[float, tuple[int, ...], float] | None:
    """(size, phases, coverage) within _SOLVE_TARGET_RTOL of `fraction`, or None.

    First secant steps on one stamp, scaled by the number of stamps (one render a step), bring
    the size within about 2%. Coverage is a step function of the size (a glyph gains a whole row
    of pixels at once), so the size alone cannot always hit the target; each stamp's sub-pixel
    phase is then chosen (16 renders of one stamp) so that the stamps' counts sum to it, and the
    exact layout checks the result. None means no convergence here (a fraction near the
    reachable limit, a stamp that does not fit): the grid search then decides.
    """
    H, W = canvas_size
    tol = _SOLVE_TARGET_RTOL * fraction
    max_size = 2.0 * max(H, W)
    n = len(PAPER8_CENTERS) if placement is Placement.PAPER8 else 1

    def one_stamp(size: float) -> float:
        if placement is Placement.RANDOM:
            return _coverage_at(word, size, placement, style, canvas_size, copies)
        alpha = _draw_stamp(word, style.font, size, style.outline_width, 0, False)[0]
        return n * copies * float(np.count_nonzero(alpha)) / (H * W)

    guess = round(math.sqrt(fraction * H * W / (n * copies * _GLYPH_DENSITY * max(len(word), 1))), 3)
    found = _secant(one_stamp, fraction, guess, 2 * tol, max_size)
    if found is None and placement is Placement.RANDOM:
        # The stamp outgrew its band on the way: is the fraction reachable by a stamp that fits?
        max_size = _largest_fitting_size(word, style, guess, H // copies, W) or 0.0
        largest = _coverage_at(word, max_size, placement, style, canvas_size, copies) if max_size else -1.0
        if max_size and largest < fraction * (1 - _SOLVE_RTOL):
            raise _Unreachable(largest)
        found = _secant(one_stamp, fraction, min(guess, max_size), 2 * tol, max_size) if max_size else None
    if found is None:
        return None
    size = found[0]
    target = fraction * H * W / copies  # drawn pixels wanted from the stamps together
    for _ in range(_PHASE_ROUNDS):
        counts = _phase_counts(word, style, size, placement, canvas_size, copies, n, target, tol * H * W / copies)
        phases = _pick_phases(counts, n, target)
        c = _coverage_at(word, size, placement, style, canvas_size, copies, phases)
        if c <= 0:
            return None
        if abs(c - fraction) <= tol:
            return size, phases, c
        if n * min(counts) <= target <= n * max(counts):
            target += (fraction - c) * H * W / copies  # stamps clipped at the edges or overlapping
        else:  # no choice of phases reaches it at this size: a step on the size
            drawable = [count for count in counts if count < _NEVER]
            if not drawable:
                return None
            size = round(min(size * (target / (n * float(np.median(drawable)))) ** 0.5, max_size), 3)
            if size < _MIN_FONT_SIZE:
                return None
    return None


def _solve_grid(word: str, fraction: float, placement: Placement, style: RenderStyle, canvas_size: tuple[int, int],
                copies: int, where: str) -> tuple[float, tuple[int, ...], float]:
    """Bisect the font size for `fraction` from a grid of sizes; (size, default phases, coverage).

    Slow (about a hundred renders) but it finds the reachable limits, which the error names.
    """
    H, W = canvas_size

    def cov(size: float) -> float:
        return _coverage_at(word, size, placement, style, canvas_size, copies)

    sizes = np.geomspace(_MIN_FONT_SIZE, 2.0 * max(H, W), _SIZE_GRID)
    covs = [cov(float(s)) for s in sizes]
    if max(covs) < fraction * (1 - _SOLVE_RTOL):
        raise _Unreachable(max(covs))
    valid = [c for c in covs if c >= 0]
    if valid and valid[0] > fraction * (1 + _SOLVE_RTOL):
        raise _Unreachable(max(covs), valid[0])
    i = next((k for k, c in enumerate(covs) if c >= fraction), int(np.argmax(covs)))
    best_size, best_cov = float(sizes[i]), covs[i]
    if i > 0 and covs[i] >= fraction:
        if abs(covs[i - 1] - fraction) < abs(best_cov - fraction):
            best_size, best_cov = float(sizes[i - 1]), covs[i - 1]
        lo, hi = float(sizes[i - 1]), float(sizes[i])
        for _ in range(_BISECT_STEPS):
            mid = (lo + hi) / 2
            c = cov(mid)
            if c >= 0 and abs(c - fraction) < abs(best_cov - fraction):
                best_size, best_cov = mid, c
            if c >= fraction:
                hi = mid
            else:
                lo = mid
            if abs(best_cov - fraction) <= _SOLVE_TARGET_RTOL * fraction:
                break
    if abs(best_cov - fraction) > _SOLVE_TARGET_RTOL * fraction:
        # Bisection stopped at a jump of the step function: try sizes around the best one.
        for size in best_size * np.linspace(0.92, 1.08, 65):
            c = cov(float(size))
            if c >= 0 and abs(c - fraction) < abs(best_cov - fraction):
                best_size, best_cov = float(size), c
    if abs(best_cov - fraction) > _SOLVE_RTOL * fraction:
        raise UnreachableFractionError(
            f"fraction {fraction:g} cannot be matched for {where}: the nearest reachable is {best_cov:.4f}",
            fraction, "nearest", best_cov)
    return best_size, _default_phases(placement), best_cov
