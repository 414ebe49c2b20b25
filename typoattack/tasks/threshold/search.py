"""The threshold search, without a model: for every (image, series, defence) pair, the smallest pixel
fraction at which the prediction becomes the word's target (`target`) and at which it leaves the
image's true class (`flip`). No torch here: `search_thresholds` calls an `evaluate` function with the
jobs of one pass and reads predictions back, so the tests run it against a known rule.

A **series** is one word x placement x text style on one canvas size; its fractions lie on a lattice
that is log-spaced between the series' clipped range [lo, hi] with `(grid - 1) x 2^steps` intervals.
Lattice point j is `lo x (hi / lo)^(j / n)`. The grid is every `2^steps`-th point, and each
bisection step halves a bracket of lattice points, so every fraction the search evaluates is a
lattice point: a series needs at most n + 1 masks, whatever the number of images, and the mask cache
serves them to every cell and every model of the same input size.

Passes (each one batched call of `evaluate` over every pair still searching):

1. clean: every image, once;
2. grid: one pass per grid point, every image x series (these two in one call of `evaluate`: nothing in
   them depends on another, and the encoder's batches are then full);
3. bisection: `steps` passes; pass t evaluates the midpoint of each pair's bracket, once per
   (image, series, fraction): the target and flip searches, and the defences, share a canvas when
   their brackets share a midpoint.

So a pair costs at most grid + 2 x steps canvases (target and flip bracketed apart), grid + steps when
both outcomes change in the same bracket or only one is searched, and grid alone when nothing
changes; never `steps` x images. A pair whose outcome, once changed on the grid, changes back at a
later grid point is **non-monotone**: the search bisects inside the first bracket and flags it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

OUTCOMES = ("target", "flip")
"""The two thresholds of a pair: the prediction becomes the word's target class; it leaves the true class."""
FOUND, AT_MIN, NOT_REACHED, CLEAN_IS_TARGET, CLEAN_WRONG, UNREACHABLE = range(6)
REASONS = ("found", "at_min", "not_reached", "clean_is_target", "clean_wrong", "unreachable")
"""Why a threshold has the value it has (`target_reason`, `flip_reason`):

- found: bracketed and bisected; the threshold is the bracket's upper fraction.
- at_min: the outcome already holds at the smallest fraction of the range; the threshold is that
  fraction (an upper bound), the bracket's lower end the clean image (fraction 0).
- not_reached: the outcome never holds on the grid, up to the largest fraction: NaN.
- clean_is_target: (target) the clean prediction already is the word's target: NaN.
- clean_wrong: (flip) the clean prediction is not the true class: NaN.
- unreachable: the word and placement cannot be drawn anywhere in [--min-fraction, --max-fraction] on
  the model's canvas: NaN.
"""
CLEAN = -1
"""The series index of a clean job in `evaluate`'s input."""

Evaluate = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""(image index [n], series index [n] (CLEAN for a clean job), lattice index [n]) -> (int64 [n, n_defences]
predictions, float64 [n] measured pixel cover)."""


def get_lattice_fraction(lo: float, hi: float, n_intervals: int, j: int | np.ndarray) -> np.ndarray:
    """Fractions of lattice points `j` (0..n_intervals) between `lo` and `hi`: log-spaced, exactly `lo` at 0
    and `hi` at n_intervals. The same float in every process (what keys the mask cache and what
    `typoattack eval --fraction` is given to reproduce a prediction)."""
    j = np.asarray(j, dtype=np.int64)
    out = np.exp(math.log(lo) + (j / n_intervals) * (math.log(hi) - math.log(lo)))
    out = np.where(j == 0, lo, np.where(j == n_intervals, hi, out))
    return out.astype(np.float64)


@dataclass(frozen=True)
class SeriesRange:
    """The range one series can be drawn in on one canvas, within [min_fraction, max_fraction].

    Attributes:
        lo: The smallest fraction searched (None: nothing in the range can be drawn).
        hi: The largest fraction searched.
    """

    lo: float | None
    hi: float | None

    @property
    def reachable(self) -> bool:
        return self.lo is not None and self.hi is not None and self.lo < self.hi


@dataclass
class SearchResult:
    """Per (image, series, defence, outcome) [I, S, D, 2]: the search's outcome.

    Attributes:
        clean_pred: int64 [I, D] clean prediction.
        reason: int8 codes into REASONS.
        j_lo, j_hi: Lattice indices of the bracket (-1: the clean image below the range for at_min; -2: none).
        pred_lo, pred_hi: Predictions at the bracket's ends (-1: none).
        cover_lo, cover_hi: Measured pixel cover at the bracket's ends (NaN: none).
        non_monotone: The outcome changed back at a later grid point.
        n_jobs: Canvases evaluated per pass (clean, grid points, bisection steps).
    """

    clean_pred: np.ndarray
    reason: np.ndarray
    j_lo: np.ndarray
    j_hi: np.ndarray
    pred_lo: np.ndarray
    pred_hi: np.ndarray
    cover_lo: np.ndarray
    cover_hi: np.ndarray
    non_monotone: np.ndarray
    n_jobs: list[int]


def search_thresholds(true_index: np.ndarray, target_index: np.ndarray, ranges: Sequence[SeriesRange], n_defences: int,
                      grid: int, steps: int, evaluate: Evaluate,
                      advance: Callable[[int], None] = lambda n: None) -> SearchResult:
    """Search both thresholds of every (image, series, defence) pair.

    Args:
        true_index: int [I] true class of each image.
        target_index: int [S] target class of each series' word.
        ranges: The clipped range of each series (on the model's canvas).
        n_defences: Predictions per job (one per defence).
        grid: Grid points (>= 2).
        steps: Bisection steps (>= 0).
        evaluate: Runs one pass (see `Evaluate`).
        advance: Called with the slots each call covers: I clean + I x S per grid point, then I x S per step
            (pairs done early count too, so the total is I x (1 + S x (grid + steps))).

    Returns:
        The search's outcome per pair (`SearchResult`).
    """
    trues = np.asarray(true_index, dtype=np.int64)
    targets = np.asarray(target_index, dtype=np.int64)
    n_img, n_ser, n_def = len(trues), len(targets), n_defences
    shape = (n_img, n_ser, n_def, len(OUTCOMES))
    span = 2 ** steps
    n_jobs: list[int] = []

    # The clean canvases and every grid point do not depend on one another: they go through `evaluate`
    # together (its batches are then full), one pass per grid point in effect.
    reachable = np.array([r.reachable for r in ranges], dtype=bool)
    ii, ss = np.nonzero(np.broadcast_to(reachable[None, :], (n_img, n_ser)))
    image = np.concatenate([np.arange(n_img), np.tile(ii, grid)])
    series = np.concatenate([np.full(n_img, CLEAN), np.tile(ss, grid)])
    lattice = np.concatenate([np.zeros(n_img, dtype=np.int64), np.repeat(np.arange(grid) * span, len(ii))])
    pred, cover = evaluate(image, series, lattice)
    pred = np.asarray(pred, dtype=np.int64).reshape(len(image), n_def)
    clean_pred = pred[:n_img]
    n_jobs += [n_img] + [len(ii)] * grid
    advance(n_img + n_img * n_ser * grid)

    reason = np.full(shape, FOUND, dtype=np.int8)
    reason[:, ~reachable] = UNREACHABLE
    clean = clean_pred[:, None, :]  # [I, 1, D]
    is_target = (clean == targets[None, :, None]) & reachable[None, :, None]
    reason[..., 0][is_target] = CLEAN_IS_TARGET
    wrong = (clean != trues[:, None, None]) & reachable[None, :, None]
    reason[..., 1][np.broadcast_to(wrong, (n_img, n_ser, n_def))] = CLEAN_WRONG
    eligible = reason == FOUND

    grid_pred = np.full((n_img, n_ser, grid, n_def), -1, dtype=np.int64)
    grid_cover = np.full((n_img, n_ser, grid), np.nan)
    kk = np.repeat(np.arange(grid), len(ii))
    grid_pred[np.tile(ii, grid), np.tile(ss, grid), kk] = pred[n_img:]
    grid_cover[np.tile(ii, grid), np.tile(ss, grid), kk] = np.asarray(cover, dtype=np.float64)[n_img:]
    values = _outcomes(grid_pred.transpose(0, 1, 3, 2), trues, targets)  # [I, S, D, 2, G]
    values &= eligible[..., None]
    hit = values.any(axis=-1)
    first = np.argmax(values, axis=-1)
    later = np.arange(grid) > first[..., None]
    non_monotone = hit & (~values & later).any(axis=-1)

    j_lo = np.full(shape, -2, dtype=np.int64)
    j_hi = np.full(shape, -2, dtype=np.int64)
    pred_lo = np.full(shape, -1, dtype=np.int64)
    pred_hi = np.full(shape, -1, dtype=np.int64)
    cover_lo = np.full(shape, np.nan)
    cover_hi = np.full(shape, np.nan)
    gp = grid_pred.transpose(0, 1, 3, 2)[..., None, :]  # [I, S, D, 1, G]
    gc = np.broadcast_to(grid_cover[:, :, None, None, :], (*shape, grid))
    gp = np.broadcast_to(gp, (*shape, grid))

    def take(a: np.ndarray, k: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, k[..., None], axis=-1)[..., 0]

    at_min = eligible & hit & (first == 0)
    reason[at_min] = AT_MIN
    j_lo[at_min], j_hi[at_min] = -1, 0
    pred_lo[at_min] = np.broadcast_to(clean_pred[:, None, :, None], shape)[at_min]
    cover_lo[at_min] = 0.0
    pred_hi[at_min], cover_hi[at_min] = gp[..., 0][at_min], gc[..., 0][at_min]
    missed = eligible & ~hit
    reason[missed] = NOT_REACHED
    j_lo[missed] = (grid - 1) * span
    pred_lo[missed], cover_lo[missed] = gp[..., -1][missed], gc[..., -1][missed]
    found = eligible & hit & (first > 0)
    k_hi = np.maximum(first, 1)
    j_lo[found], j_hi[found] = ((k_hi - 1) * span)[found], (k_hi * span)[found]
    pred_lo[found], pred_hi[found] = take(gp, k_hi - 1)[found], take(gp, k_hi)[found]
    cover_lo[found], cover_hi[found] = take(gc, k_hi - 1)[found], take(gc, k_hi)[found]

    # Bisection: one pass per step over the midpoints of every bracket still wider than one lattice step.
    flat = [a.reshape(-1) for a in (j_lo, j_hi, pred_lo, pred_hi, cover_lo, cover_hi)]  # views
    for _ in range(steps):
        active = np.flatnonzero(found & (j_hi - j_lo > 1))
        if len(active):
            idx = np.unravel_index(active, shape)
            mid = (flat[0][active] + flat[1][active]) // 2
            jobs, inverse = np.unique(np.stack([idx[0], idx[1], mid], axis=1), axis=0, return_inverse=True)
            inverse = inverse.reshape(-1)
            pred, cover = evaluate(jobs[:, 0], jobs[:, 1], jobs[:, 2])
            p = np.asarray(pred, dtype=np.int64).reshape(len(jobs), n_def)[inverse, idx[2]]
            c = np.asarray(cover, dtype=np.float64)[inverse]
            holds = np.where(idx[3] == 0, p == targets[idx[1]], p != trues[idx[0]])
            for side, sel in ((1, holds), (0, ~holds)):  # the upper end moves down where it holds
                flat[side][active[sel]] = mid[sel]
                flat[side + 2][active[sel]] = p[sel]
                flat[side + 4][active[sel]] = c[sel]
        n_jobs.append(len(jobs) if len(active) else 0)
        advance(n_img * n_ser)
    return SearchResult(clean_pred, reason, j_lo, j_hi, pred_lo, pred_hi, cover_lo, cover_hi, non_monotone, n_jobs)


def _outcomes(pred: np.ndarray, trues: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """bool [I, S, D, 2, G] outcomes of predictions [I, S, D, G]: [..., 0, :] the target, [..., 1, :] off the true class."""
    target = pred == targets[None, :, None, None]
    flip = (pred != trues[:, None, None, None]) & (pred >= 0)
    return np.stack([target, flip], axis=3)
