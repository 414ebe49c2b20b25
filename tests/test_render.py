"""Tests of typoattack.attack.render: coverage control, compositing, placement geometry, determinism.

Canvases are real ImageNet images from the sample shipped in typoattack/assets, prepared the way
open_clip prepares model inputs (bicubic resize of the short side, then centre crop).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from typoattack.attack import render, solver
from typoattack.attack.render import (
    AttackMask,
    TextLayers,
    apply_attack,
    composite,
    measure_pixel_cover,
    stable_hash,
)
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import Placement, RenderStyle
from typoattack.errors import RenderError

from typoattack.constants import SAMPLE_DIR
N_IMAGES = 40
SIZE = (224, 224)
SOLVE_RTOL = 0.04  # documented bound on |mask.coverage - fraction| / fraction
COVER_RTOL = 0.10  # allowed relative error of the measured pixel cover
WORD20 = "abcdefghijklmnopqrst"
assert len(WORD20) == 20

WORDS = ["trash", "iPod", "$$$", "library", "meow", WORD20]
FRACTIONS = [0.01, 0.04, 0.07, 0.15, 0.30]
STYLE = RenderStyle()

_REACH_RE = re.compile(r"the (largest|smallest) reachable fraction is ([0-9]*\.?[0-9]+)")
_NEAREST_RE = re.compile(r"the nearest reachable is ([0-9]*\.?[0-9]+)")


# --------------------------------------------------------------------------- fixtures / helpers


def _sample_rows() -> list[dict[str, str]]:
    labels = SAMPLE_DIR / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"real image sample not found at {SAMPLE_DIR}")
    with labels.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _load_canvases(size: int, n: int) -> list[tuple[str, np.ndarray]]:
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Resize

    tf = Compose([Resize(size, interpolation=InterpolationMode.BICUBIC), CenterCrop(size)])
    rows = _sample_rows()
    step = max(1, len(rows) // n)
    out = []
    for row in rows[::step][:n]:
        with Image.open(SAMPLE_DIR / row["file"]) as im:
            arr = np.asarray(tf(im.convert("RGB")), dtype=np.uint8)
        assert arr.shape == (size, size, 3) and arr.dtype == np.uint8
        out.append((row["file"], arr))
    assert len(out) == n
    return out


@pytest.fixture(scope="module")
def canvases() -> list[tuple[str, np.ndarray]]:
    """(image_id, uint8 [224, 224, 3]) for ~40 real ImageNet images."""
    return _load_canvases(224, N_IMAGES)


@pytest.fixture(scope="module")
def canvases_288() -> list[tuple[str, np.ndarray]]:
    return _load_canvases(288, 12)


def _full_alpha(layers: TextLayers, canvas_size: tuple[int, int], which: str = "outline") -> np.ndarray:
    """Place a layer's alpha on a zero canvas of `canvas_size` (independent of composite)."""
    H, W = canvas_size
    alpha = layers.outline_alpha if which == "outline" else layers.fill_alpha
    h, w = alpha.shape
    assert 0 <= layers.y0 and layers.y0 + h <= H and 0 <= layers.x0 and layers.x0 + w <= W
    full = np.zeros((H, W), np.float32)
    full[layers.y0:layers.y0 + h, layers.x0:layers.x0 + w] = alpha
    return full


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [start, stop) of True in a 1-D boolean array."""
    runs, start = [], None
    for i, f in enumerate(list(flags) + [False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _noise_canvas(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    # Mid-range values so no fill/outline colour can coincide with the background.
    return np.random.default_rng(seed).integers(40, 216, size=(*shape, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- coverage control


@pytest.mark.parametrize("fraction", FRACTIONS)
@pytest.mark.parametrize("word", WORDS)
@pytest.mark.parametrize("placement", list(Placement))
def test_coverage_control(canvases, placement: Placement, word: str, fraction: float) -> None:
    try:
        mask = create_attack_mask(word, fraction, placement, STYLE, SIZE)
    except RenderError as e:
        msg = str(e)
        m = _REACH_RE.search(msg)
        if m is not None:
            kind, value = m.group(1), float(m.group(2))
            if kind == "largest":
                assert value < fraction, msg
            else:
                assert value > fraction, msg
            return
        # The requested fraction lies inside the reachable range but in a jump of the
        # (step-shaped) coverage curve; then the message must name the nearest reachable value,
        # and that value must really be outside the documented tolerance.
        m = _NEAREST_RE.search(msg)
        assert m is not None, f"RenderError names no reachable fraction: {msg}"
        assert abs(float(m.group(1)) - fraction) > SOLVE_RTOL * fraction, msg
        return

    assert isinstance(mask, AttackMask)
    assert mask.placement is Placement(placement)
    assert mask.canvas_size == SIZE
    assert abs(mask.coverage - fraction) <= SOLVE_RTOL * fraction, (mask.coverage, fraction)
    covers = []
    for n, (image_id, canvas) in enumerate(canvases):
        if n < 5:
            # `coverage` is the share of canvas pixels under the layers drawn on this image.
            placed = mask.layers_for(image_id, 0)
            assert mask.coverage == pytest.approx(np.count_nonzero(placed.outline_alpha) / (SIZE[0] * SIZE[1]))
        attacked, cover = apply_attack(canvas, mask, image_id, seed=0)
        assert attacked.shape == canvas.shape and attacked.dtype == np.uint8
        covers.append(cover)
    covers = np.asarray(covers)
    rel = np.abs(covers - fraction) / fraction
    assert abs(covers.mean() - fraction) <= COVER_RTOL * fraction, (covers.mean(), fraction)
    assert np.mean(rel <= COVER_RTOL) >= 0.9, sorted(rel)[-5:]


PAPER8_WORDS = [
    # The Goh et al. (2021) vocabulary ...
    "trash", "iPod", "pizza", "rifle", "radio", "library", "shark", "meow", "$$$",
    # ... and ordinary words/class names of 1 to 20 characters.
    "a", "ox", "crossword", "conch", "drumstick", "police van", "electric guitar",
    "supercalifragilistic", "Hello World 12345678", WORD20,
]


@pytest.mark.parametrize("fraction", [0.04, 0.07, 0.10, 0.15, 0.30])
@pytest.mark.parametrize("word", PAPER8_WORDS)
def test_paper8_reaches_every_fraction_for_words_up_to_20_chars(word: str, fraction: float) -> None:
    """Requirement: paper8 never fails for words of <= 20 characters at fractions 0.04-0.30."""
    assert len(word) <= 20
    mask = create_attack_mask(word, fraction, Placement.PAPER8, STYLE, SIZE)
    assert abs(mask.coverage - fraction) <= SOLVE_RTOL * fraction


def test_fraction_just_above_largest_reachable_is_handled() -> None:
    """A fraction within 4% above the largest reachable one must give a mask or a RenderError."""
    with pytest.raises(RenderError, match="largest reachable fraction") as info:
        create_attack_mask("trash", 0.5, Placement.RANDOM, STYLE, SIZE)
    largest = float(_REACH_RE.search(str(info.value)).group(2))
    assert largest < 0.5
    # The largest reachable value itself can be requested ...
    exact = create_attack_mask("trash", largest, Placement.RANDOM, STYLE, SIZE)
    assert abs(exact.coverage - largest) <= SOLVE_RTOL * largest
    # ... and so can a value 2% above it (still inside the 4% tolerance), or else it is a
    # RenderError; anything else (e.g. StopIteration) is a bug.
    request = largest * 1.02
    try:
        mask = create_attack_mask("trash", request, Placement.RANDOM, STYLE, SIZE)
    except RenderError:
        return
    assert abs(mask.coverage - request) <= SOLVE_RTOL * request


# --------------------------------------------------------------------------- pixel cover, composite


@pytest.mark.parametrize("placement", list(Placement))
def test_pixel_cover_matches_independent_computation(canvases, placement: Placement) -> None:
    mask = create_attack_mask("library", 0.07, placement, STYLE, SIZE)
    for image_id, clean in canvases:
        attacked, cover = apply_attack(clean, mask, image_id, seed=3)
        expected = float((clean != attacked).any(-1).mean())
        assert cover == pytest.approx(expected, abs=1e-12)
        assert measure_pixel_cover(clean, attacked) == pytest.approx(expected, abs=1e-12)
        # The overlay never changes more pixels than the mask covers.
        assert cover <= mask.coverage + 1e-12


def test_measure_pixel_cover_counts_any_channel() -> None:
    clean = np.zeros((10, 10, 3), np.uint8)
    attacked = clean.copy()
    attacked[0, 0, 2] = 1          # one channel changed
    attacked[5, 5] = (9, 9, 9)     # all channels changed
    assert measure_pixel_cover(clean, attacked) == pytest.approx(2 / 100)
    assert measure_pixel_cover(clean, clean.copy()) == 0.0


@pytest.mark.parametrize("placement", list(Placement))
def test_composite_touches_only_the_layer_box(canvases, placement: Placement) -> None:
    mask = create_attack_mask("iPod", 0.07, placement, STYLE, SIZE)
    for image_id, clean in canvases[:10]:
        before = clean.copy()
        layers = mask.layers_for(image_id, 0)
        out = composite(clean, layers, STYLE)
        assert np.array_equal(clean, before), "composite modified its input"
        h, w = layers.shape
        inside = np.zeros(SIZE, bool)
        inside[layers.y0:layers.y0 + h, layers.x0:layers.x0 + w] = True
        assert np.array_equal(out[~inside], clean[~inside])
        # Inside the box, only pixels under the mask (alpha > 0) may change.
        changed = (out != clean).any(-1)
        under = _full_alpha(layers, SIZE) > 0
        assert not np.any(changed & ~under)
        assert changed.any()


def test_apply_attack_rejects_wrong_canvas_size(canvases_288) -> None:
    mask = create_attack_mask("trash", 0.07, Placement.CENTER, STYLE, SIZE)
    image_id, canvas = canvases_288[0]
    with pytest.raises(ValueError):
        apply_attack(canvas, mask, image_id, 0)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("placement", list(Placement))
def test_two_calls_are_identical(canvases, placement: Placement) -> None:

    mask = create_attack_mask("trash", 0.04, placement, STYLE, SIZE)
    image_id, canvas = canvases[7]
    a1, c1 = apply_attack(canvas, mask, image_id, 11)
    a2, c2 = apply_attack(canvas, mask, image_id, 11)
    assert np.array_equal(a1, a2) and c1 == c2

    # Solving again from scratch (caches cleared) gives byte-identical layers.
    create_attack_mask.cache_clear()
    render._draw_stamp.cache_clear()
    fresh = create_attack_mask("trash", 0.04, placement, STYLE, SIZE)
    assert fresh is not mask
    assert fresh.font_size == mask.font_size and fresh.coverage == mask.coverage
    assert (fresh.layers.y0, fresh.layers.x0) == (mask.layers.y0, mask.layers.x0)
    assert np.array_equal(fresh.layers.outline_alpha, mask.layers.outline_alpha)
    assert np.array_equal(fresh.layers.fill_alpha, mask.layers.fill_alpha)
    a3, c3 = apply_attack(canvas, fresh, image_id, 11)
    assert np.array_equal(a1, a3) and c1 == c3


def test_create_attack_mask_is_cached() -> None:
    before = create_attack_mask.cache_info()
    m1 = create_attack_mask("radio", 0.05, Placement.PAPER8, STYLE, SIZE)
    m2 = create_attack_mask("radio", 0.05, Placement.PAPER8, RenderStyle(), SIZE)
    after = create_attack_mask.cache_info()
    assert m1 is m2
    assert after.hits >= before.hits + 1
    # A different argument is a different entry.
    m3 = create_attack_mask("radio", 0.06, Placement.PAPER8, STYLE, SIZE)
    assert m3 is not m1 and m3.coverage > m1.coverage


IDS = [f"img_{i:04d}.JPEG" for i in range(60)]


def _positions(mask: AttackMask, ids, seed: int) -> list[tuple[int, int]]:
    return [(mask.layers_for(i, seed).y0, mask.layers_for(i, seed).x0) for i in ids]


def test_random_placement_positions() -> None:
    mask = create_attack_mask("trash", 0.04, Placement.RANDOM, STYLE, SIZE)
    assert (mask.layers.y0, mask.layers.x0) == (0, 0)
    h, w = mask.layers.shape
    H, W = SIZE
    assert h < H and w < W

    pos0 = _positions(mask, IDS, 0)
    # Same (image_id, seed, word) -> same layers.
    assert pos0 == _positions(mask, IDS, 0)
    l1, l2 = mask.layers_for(IDS[0], 0), mask.layers_for(IDS[0], 0)
    assert np.array_equal(l1.outline_alpha, l2.outline_alpha) and np.array_equal(l1.fill_alpha, l2.fill_alpha)
    # Positions vary across images.
    assert len(set(pos0)) >= 0.9 * len(IDS)
    assert len({y for y, _ in pos0}) > 1 and len({x for _, x in pos0}) > 1
    # A different seed moves (almost) every stamp.
    pos1 = _positions(mask, IDS, 1)
    assert sum(a != b for a, b in zip(pos0, pos1)) >= 0.9 * len(IDS)
    # Independent of call order.
    rev = _positions(mask, IDS[::-1], 0)[::-1]
    assert rev == pos0
    interleaved = []
    for i in IDS:
        mask.layers_for("some-other-image", 5)
        interleaved.append((mask.layers_for(i, 0).y0, mask.layers_for(i, 0).x0))
    assert interleaved == pos0
    # Keyed on the word too: another word's stamp (of another size) lands at an unrelated
    # relative position, not at a rescaled copy of this word's position.
    other = create_attack_mask("iPod", 0.04, Placement.RANDOM, STYLE, SIZE)
    rel0 = _relative_positions(mask, IDS, 0)
    rel1 = _relative_positions(other, IDS, 0)
    assert np.mean(np.abs(rel0 - rel1).max(axis=1) > 0.05) >= 0.8


def _relative_positions(mask: AttackMask, ids, seed: int) -> np.ndarray:
    """(y0, x0) as shares of the feasible range [0, H - h] x [0, W - w]."""
    h, w = mask.layers.shape
    H, W = mask.canvas_size
    return np.array([(mask.layers_for(i, seed).y0 / (H - h), mask.layers_for(i, seed).x0 / (W - w)) for i in ids])


@pytest.mark.parametrize("word,fraction", [("trash", 0.01), ("library", 0.07), (WORD20, 0.04), ("iPod", 0.15)])
def test_random_stamp_always_inside_canvas(word: str, fraction: float) -> None:
    mask = create_attack_mask(word, fraction, Placement.RANDOM, STYLE, SIZE)
    H, W = SIZE
    ys, xs = [], []
    for seed in (0, 1, 2):
        for image_id in IDS:
            layers = mask.layers_for(image_id, seed)
            h, w = layers.shape
            assert (h, w) == mask.layers.shape
            assert 0 <= layers.y0 <= H - h and 0 <= layers.x0 <= W - w
            ys.append(layers.y0)
            xs.append(layers.x0)
    # The whole feasible range is used (not e.g. stuck in a corner).
    assert max(ys) - min(ys) > 0.5 * (H - mask.layers.shape[0])
    assert max(xs) - min(xs) > 0.5 * (W - mask.layers.shape[1])


@pytest.mark.parametrize("word,fraction", [("trash", 0.15), ("library", 0.30), (WORD20, 0.30)])
def test_random_multi_stamp_bands(canvases, word: str, fraction: float) -> None:
    """When one stamp cannot cover the fraction, random uses k <= 8 stamps, one per band."""
    mask = create_attack_mask(word, fraction, Placement.RANDOM, STYLE, SIZE)
    H, W = SIZE
    h, w = mask.layers.shape
    assert 2 <= mask.copies <= 8
    assert abs(mask.coverage - fraction) <= SOLVE_RTOL * fraction
    ink = np.count_nonzero(mask.layers.outline_alpha)
    all_pos = []
    for image_id, canvas in canvases[:20]:
        positions = mask.positions_for(image_id, 0)
        assert positions == mask.positions_for(image_id, 0)
        assert len(positions) == mask.copies
        for k, (y0, x0) in enumerate(positions):
            top, bottom = k * H // mask.copies, (k + 1) * H // mask.copies
            assert top <= y0 and y0 + h <= bottom, (k, y0, h, top, bottom)
            assert 0 <= x0 and x0 + w <= W
        all_pos.append(tuple(positions))
        layers = mask.layers_for(image_id, 0)
        # Non-overlapping: the union holds copies x the ink of one stamp, on every image.
        assert np.count_nonzero(layers.outline_alpha) == mask.copies * ink
        assert np.count_nonzero(layers.outline_alpha) / (H * W) == pytest.approx(mask.coverage)
        attacked, cover = apply_attack(canvas, mask, image_id, 0)
        assert cover == pytest.approx(float((canvas != attacked).any(-1).mean()))
        assert cover <= mask.coverage + 1e-12
    assert len(set(all_pos)) == len(all_pos)
    assert mask.positions_for(IDS[0], 0) != mask.positions_for(IDS[0], 1)


def test_random_copies_grow_with_fraction() -> None:
    copies = [create_attack_mask("trash", f, Placement.RANDOM, STYLE, SIZE).copies for f in (0.04, 0.15, 0.30)]
    assert copies[0] == 1
    assert copies == sorted(copies) and copies[-1] > 1


def test_random_single_stamp_when_it_suffices() -> None:
    for word, fraction in [("trash", 0.04), ("iPod", 0.10), (WORD20, 0.04)]:
        mask = create_attack_mask(word, fraction, Placement.RANDOM, STYLE, SIZE)
        assert mask.copies == 1
        assert len(mask.positions_for("x", 0)) == 1
        layers = mask.layers_for("x", 0)
        assert [(layers.y0, layers.x0)] == mask.positions_for("x", 0)
        assert np.array_equal(layers.outline_alpha, mask.layers.outline_alpha)


def test_non_random_placements_ignore_image_and_seed() -> None:
    for placement in (Placement.PAPER8, Placement.CENTER):
        mask = create_attack_mask("pizza", 0.07, placement, STYLE, SIZE)
        a, b = mask.layers_for("x", 0), mask.layers_for("y", 99)
        assert (a.y0, a.x0) == (b.y0, b.x0)
        assert np.array_equal(a.outline_alpha, b.outline_alpha)


# --------------------------------------------------------------------------- placement geometry


@pytest.mark.parametrize("word", ["trash", "iPod", "meow"])
def test_paper8_draws_eight_stamps_on_a_diagonal(word: str) -> None:
    mask = create_attack_mask(word, 0.04, Placement.PAPER8, STYLE, SIZE)
    H, W = SIZE
    full = _full_alpha(mask.layers, SIZE) > 0
    runs = _runs(full.any(axis=1))
    assert len(runs) == 8, runs

    centres_y, centres_x, crops = [], [], []
    for r0, r1 in runs:
        band = full[r0:r1]
        cols = np.flatnonzero(band.any(axis=0))
        crops.append(band[:, cols[0]:cols[-1] + 1])
        centres_y.append((r0 + r1 - 1) / 2)
        centres_x.append((cols[0] + cols[-1]) / 2)
        # One stamp per band: its columns are contiguous up to letter gaps (no second copy).
        assert cols[-1] - cols[0] < W / 2
    # The 8 stamps are the same word at the same size (sub-pixel differences allowed).
    h0, w0 = np.median([c.shape for c in crops], axis=0)
    inks = np.array([c.sum() for c in crops], float)
    for crop in crops:
        assert abs(crop.shape[0] - h0) <= 1 and abs(crop.shape[1] - w0) <= 1, [c.shape for c in crops]
    assert inks.max() <= 1.15 * inks.min(), inks
    # From the top of the canvas to the bottom, evenly spaced ...
    cy = np.asarray(centres_y)
    assert cy[0] < 0.15 * H and cy[-1] > 0.85 * H
    gaps = np.diff(cy)
    assert np.all(gaps > 0) and gaps.max() - gaps.min() <= 2
    # ... and from left to right (a staggered diagonal: the trend is increasing).
    cx = np.asarray(centres_x)
    assert cx[0] < W / 3 and cx[-1] > 2 * W / 3
    assert np.corrcoef(np.arange(8), cx)[0, 1] > 0.9
    assert cx[:4].mean() < cx[4:].mean()


def test_paper8_bands_have_content_moving_right() -> None:
    """Coarser check at a larger fraction (stamps may touch): 8 bands, mean column increasing."""
    mask = create_attack_mask("library", 0.15, Placement.PAPER8, STYLE, SIZE)
    H, W = SIZE
    full = _full_alpha(mask.layers, SIZE) > 0
    bands = np.array_split(np.arange(H), 8)
    means = []
    for rows in bands:
        ys, xs = np.nonzero(full[rows])
        assert xs.size > 0, "a horizontal band has no text"
        means.append(xs.mean())
    assert means[0] < means[-1]
    assert np.corrcoef(np.arange(8), means)[0, 1] > 0.8


@pytest.mark.parametrize("word,fraction", [("trash", 0.04), ("iPod", 0.15), ("$$$", 0.30), (WORD20, 0.07)])
def test_center_placement_is_centred(word: str, fraction: float) -> None:
    mask = create_attack_mask(word, fraction, Placement.CENTER, STYLE, SIZE)
    H, W = SIZE
    full = _full_alpha(mask.layers, SIZE) > 0
    assert len(_runs(full.any(axis=1))) == 1
    rows = np.flatnonzero(full.any(axis=1))
    cols = np.flatnonzero(full.any(axis=0))
    # Bounding box centred to within a pixel ...
    assert abs((rows[0] + rows[-1] + 1) / 2 - H / 2) <= 1.0
    assert abs((cols[0] + cols[-1] + 1) / 2 - W / 2) <= 1.0
    # ... and the centroid of the ink near the canvas centre.
    ys, xs = np.nonzero(full)
    assert abs(ys.mean() - H / 2) < 0.08 * H and abs(xs.mean() - W / 2) < 0.08 * W


# --------------------------------------------------------------------------- errors


def test_unreachable_random_long_word() -> None:
    # Random placement may use up to 8 non-overlapping stamps (one per horizontal band), so a
    # 20-character word reaches 0.30; 0.60 is beyond what 8 bands of it can cover.
    with pytest.raises(RenderError, match="largest reachable fraction") as info:
        create_attack_mask(WORD20, 0.60, Placement.RANDOM, STYLE, SIZE)
    value = float(_REACH_RE.search(str(info.value)).group(2))
    assert 0.30 < value < 0.60


def test_unreachable_small_fraction_names_smallest() -> None:
    with pytest.raises(RenderError, match="smallest reachable fraction") as info:
        create_attack_mask(WORD20, 0.001, Placement.PAPER8, STYLE, SIZE)
    assert float(_REACH_RE.search(str(info.value)).group(2)) > 0.001


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval_raises(fraction: float) -> None:
    with pytest.raises(RenderError, match="fraction"):
        create_attack_mask("trash", fraction, Placement.CENTER, STYLE, SIZE)


@pytest.mark.parametrize("word,missing", [("猫", "猫"), ("cat猫", "猫"), ("fox\U0001F98A", "\U0001F98A"), ("क", "क")])
def test_missing_glyph_raises_naming_the_character(word: str, missing: str) -> None:
    with pytest.raises(RenderError) as info:
        create_attack_mask(word, 0.07, Placement.CENTER, STYLE, SIZE)
    msg = str(info.value)
    assert missing in msg
    assert f"U+{ord(missing):04X}" in msg


@pytest.mark.parametrize("word", ["", "   "])
def test_empty_word_raises(word: str) -> None:
    with pytest.raises(RenderError, match="empty"):
        create_attack_mask(word, 0.07, Placement.CENTER, STYLE, SIZE)


def test_line_break_raises() -> None:
    with pytest.raises(RenderError):
        create_attack_mask("two\nlines", 0.07, Placement.CENTER, STYLE, SIZE)


def test_supported_non_ascii_word_renders() -> None:
    # DejaVu covers Latin-1 and the Emoticons block; these must not be rejected.
    for word in ("café", "\U0001F600"):
        mask = create_attack_mask(word, 0.04, Placement.CENTER, STYLE, SIZE)
        assert abs(mask.coverage - 0.04) <= SOLVE_RTOL * 0.04


# --------------------------------------------------------------------------- style


def test_fill_colour_is_exact_where_fill_alpha_is_one(canvases) -> None:
    style = RenderStyle(fill=(255, 0, 0), outline_width=0, opacity=1.0)
    mask = create_attack_mask("library", 0.07, Placement.PAPER8, style, SIZE)
    # outline_width=0: the outline layer is the fill layer.
    assert np.array_equal(mask.layers.outline_alpha, mask.layers.fill_alpha)
    solid = _full_alpha(mask.layers, SIZE, "fill") == 1.0
    assert solid.sum() > 100
    for image_id, canvas in canvases[:8]:
        attacked, _ = apply_attack(canvas, mask, image_id, 0)
        assert np.all(attacked[solid] == np.array([255, 0, 0], np.uint8))


def test_outline_colour_appears(canvases) -> None:
    style = RenderStyle(fill=(255, 0, 0), outline=(0, 0, 255), outline_width=2, opacity=1.0)
    mask = create_attack_mask("library", 0.07, Placement.CENTER, style, SIZE)
    outline = _full_alpha(mask.layers, SIZE, "outline")
    fill = _full_alpha(mask.layers, SIZE, "fill")
    assert np.all(fill <= outline)
    ring = (outline == 1.0) & (fill == 0.0)
    solid = fill == 1.0
    assert ring.sum() > 100 and solid.sum() > 100
    for image_id, canvas in canvases[:8]:
        attacked, _ = apply_attack(canvas, mask, image_id, 0)
        assert np.all(attacked[ring] == np.array([0, 0, 255], np.uint8))
        assert np.all(attacked[solid] == np.array([255, 0, 0], np.uint8))


def test_wider_outline_means_smaller_font_for_same_fraction() -> None:
    thin = create_attack_mask("trash", 0.07, Placement.PAPER8, RenderStyle(outline_width=0), SIZE)
    thick = create_attack_mask("trash", 0.07, Placement.PAPER8, RenderStyle(outline_width=3), SIZE)
    assert thick.font_size < thin.font_size
    # With an outline, the outline layer extends beyond the fill.
    assert np.count_nonzero(thick.layers.outline_alpha) > np.count_nonzero(thick.layers.fill_alpha)


def test_half_opacity_blends(canvases) -> None:
    fill_rgb = np.array([255, 0, 0], np.float64)
    style = RenderStyle(fill=(255, 0, 0), outline_width=0, opacity=0.5)
    mask = create_attack_mask("library", 0.07, Placement.CENTER, style, SIZE)
    fa = _full_alpha(mask.layers, SIZE, "fill").astype(np.float64)[..., None]
    solid = fa[..., 0] == 1.0
    assert solid.sum() > 100
    n_strict = 0
    for image_id, canvas in canvases[:8]:
        attacked, _ = apply_attack(canvas, mask, image_id, 0)
        expected = canvas * (1 - 0.5 * fa) + fill_rgb * (0.5 * fa)
        diff = np.abs(attacked.astype(np.float64) - expected)
        assert diff.max() <= 0.5 + 1e-3  # rounding only
        # Where fully inked, the result is the midpoint, i.e. strictly between image and fill
        # whenever they differ by at least 2.
        a, c = attacked[solid].astype(int), canvas[solid].astype(int)
        f = np.broadcast_to(fill_rgb.astype(int), c.shape)
        far = np.abs(c - f) >= 2
        lo, hi = np.minimum(c, f), np.maximum(c, f)
        assert np.all((a[far] > lo[far]) & (a[far] < hi[far]))
        n_strict += int(far.sum())
    assert n_strict > 0
    # Opaque red would be exactly red there; half opacity never is on these images.
    assert not np.all(attacked[solid] == np.array([255, 0, 0], np.uint8))


# --------------------------------------------------------------------------- other canvas sizes


@pytest.mark.parametrize("placement", list(Placement))
def test_canvas_288(canvases_288, placement: Placement) -> None:
    size = (288, 288)
    fraction = 0.07
    mask = create_attack_mask("trash", fraction, placement, STYLE, size)
    assert mask.canvas_size == size
    assert abs(mask.coverage - fraction) <= SOLVE_RTOL * fraction
    assert mask.coverage == pytest.approx(np.count_nonzero(mask.layers.outline_alpha) / (288 * 288))
    # The same fraction needs more ink pixels on a bigger canvas (and a bigger font).
    small = create_attack_mask("trash", fraction, placement, STYLE, SIZE)
    assert np.count_nonzero(mask.layers.outline_alpha) > np.count_nonzero(small.layers.outline_alpha) * 1.4
    assert mask.font_size > small.font_size
    covers = []
    for image_id, canvas in canvases_288:
        attacked, cover = apply_attack(canvas, mask, image_id, 0)
        assert cover == pytest.approx(float((canvas != attacked).any(-1).mean()))
        covers.append(cover)
    covers = np.asarray(covers)
    assert abs(covers.mean() - fraction) <= COVER_RTOL * fraction
    assert np.mean(np.abs(covers - fraction) <= COVER_RTOL * fraction) >= 0.9


@pytest.mark.parametrize("placement", list(Placement))
def test_non_square_canvas(placement: Placement) -> None:
    size = (200, 320)
    H, W = size
    mask = create_attack_mask("radio", 0.07, placement, STYLE, size)
    assert abs(mask.coverage - 0.07) <= SOLVE_RTOL * 0.07
    assert mask.coverage == pytest.approx(np.count_nonzero(mask.layers.outline_alpha) / (H * W))
    canvas = _noise_canvas(size)
    for image_id in IDS[:10]:
        attacked, cover = apply_attack(canvas, mask, image_id, 0)
        layers = mask.layers_for(image_id, 0)
        h, w = layers.shape
        assert layers.y0 + h <= H and layers.x0 + w <= W
        assert cover == pytest.approx(float((canvas != attacked).any(-1).mean()))
        assert abs(cover - 0.07) <= COVER_RTOL * 0.07
    full = _full_alpha(mask.layers, size) > 0
    rows = np.flatnonzero(full.any(axis=1))
    cols = np.flatnonzero(full.any(axis=0))
    if placement is Placement.CENTER:
        assert abs((rows[0] + rows[-1] + 1) / 2 - H / 2) <= 1.0
        assert abs((cols[0] + cols[-1] + 1) / 2 - W / 2) <= 1.0
    elif placement is Placement.PAPER8:
        # The diagonal spans the canvas's own height and width.
        runs = _runs(full.any(axis=1))
        assert len(runs) == 8
        assert (runs[0][0] + runs[0][1]) / 2 < 0.15 * H and (runs[-1][0] + runs[-1][1]) / 2 > 0.85 * H
        first = np.flatnonzero(full[runs[0][0]:runs[0][1]].any(axis=0))
        last = np.flatnonzero(full[runs[-1][0]:runs[-1][1]].any(axis=0))
        assert (first[0] + first[-1]) / 2 < W / 3 and (last[0] + last[-1]) / 2 > 2 * W / 3
    else:
        rel = _relative_positions(mask, IDS, 0)
        assert rel.min() >= 0 and rel.max() <= 1
        assert rel[:, 0].std() > 0.1 and rel[:, 1].std() > 0.1


# --------------------------------------------------------------------------- stable_hash


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def test_stable_hash_is_blake2b_64() -> None:
    for text in ["", "a", "n01440764_tench.JPEG", "猫", "trash", "x" * 1000]:
        assert stable_hash(text) == _blake64(text)
        assert 0 <= stable_hash(text) < 2**64
    # Pinned value: identical on every machine and Python version.
    assert stable_hash("n01440764_tench.JPEG") == 6336230210421346735
    assert stable_hash("a") != stable_hash("b")


def test_stable_hash_is_the_same_in_other_processes() -> None:
    texts = ["n01440764_tench.JPEG", "trash", "猫"]
    code = (
        "import sys, json; from typoattack.attack.render import stable_hash; "
        "print(json.dumps([stable_hash(t) for t in json.loads(sys.argv[1])]))"
    )
    import json

    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-c", code, json.dumps(texts)], env=env,
                             capture_output=True, text=True, check=True, timeout=60)
        assert json.loads(res.stdout) == [stable_hash(t) for t in texts]


# --------------------------------------------------------------------------------------------
# The fast solver: secant steps on the size, then per-stamp sub-pixel phases


@pytest.mark.parametrize("placement", [Placement.PAPER8, Placement.CENTER, Placement.RANDOM])
def test_coverage_at_counts_what_layout_draws(placement) -> None:
    """The solver's outline-only count equals the coverage of the layers the mask is made of."""
    rng = np.random.default_rng(0)
    n = 8 if placement is Placement.PAPER8 else 1
    for word, size in (("pizza", 13.7), ("great white shark", 6.9), ("iPod", 40.25)):
        phases = tuple(int(p) for p in rng.integers(0, 16, n))
        layers = render._layout(word, size, placement, STYLE, SIZE, 1, phases)
        assert render._coverage_at(word, size, placement, STYLE, SIZE, 1, phases) == render._coverage(layers, SIZE)


def test_pick_phases_finds_the_closest_sum() -> None:
    import itertools

    counts = [40, 41, 43, 52, 52, 39, 44, 60, 40, 41, 43, 52, 52, 39, 44, 61]
    for n, target in ((1, 50), (3, 130), (8, 371), (8, 10), (8, 10_000)):
        best = min(abs(sum(counts[p] for p in c) - target) for c in itertools.combinations_with_replacement(range(16), n)) \
            if n <= 3 else None
        picked = solver._pick_phases(counts, n, target)
        assert len(picked) == n and list(picked) == sorted(picked)
        if best is not None:
            assert abs(sum(counts[p] for p in picked) - target) == best
    assert sum(counts[p] for p in solver._pick_phases(counts, 8, 10)) == 8 * 39
    assert sum(counts[p] for p in solver._pick_phases(counts, 8, 10_000)) == 8 * 61


def _pick_phases_reference(counts: list[int], n: int, target: float) -> tuple[int, ...]:
    """The solver's phase picking as first written: a dict of sums, overwritten in lexicographic order."""
    sums: dict[int, tuple[int, ...]] = {0: ()}
    for _ in range(n):
        sums = {total + counts[p]: chosen + (p,)
                for total, chosen in sums.items() for p in range(len(counts)) if not chosen or p >= chosen[-1]}
    return sums[min(sums, key=lambda total: (abs(total - target), total))]


def test_pick_phases_keeps_the_choice_cached_masks_were_solved_with() -> None:
    # Of the multisets with the closest sum, the same one as before it was vectorized: a mask solved
    # today equals the one in a cache filled before.
    rng = np.random.default_rng(3)
    for _ in range(400):
        n_phases, n = int(rng.choice([1, 3, 16])), int(rng.choice([1, 2, 8]))
        low, spread = int(rng.integers(0, 400)), int(rng.choice([0, 2, 9, 150]))
        counts = [int(c) for c in rng.integers(low, low + spread + 1, n_phases)]
        if rng.random() < 0.2:
            counts[int(rng.integers(n_phases))] = solver._NEVER
        target = float(rng.uniform(0, 1.2 * n * (low + spread)))
        if rng.random() < 0.3:
            target = float(round(target))
        assert solver._pick_phases(counts, n, target) == _pick_phases_reference(counts, n, target)


def _draw_stamp_reference(word: str, font_path: str, size: float, outline_width: int, phase: int,
                          fill_only: bool) -> np.ndarray:
    """One stamp layer drawn at its own sub-pixel offset, as the renderer did before it drew each size
    once for all phases (uncropped, before the alpha floor)."""
    from PIL import ImageDraw, ImageFont

    s = render._supersample(size)
    py, px = render._phase_offset(phase, s)
    font = ImageFont.truetype(font_path, size=size * s)
    stroke = outline_width * s
    left, top, right, bottom = font.getbbox(word, stroke_width=stroke)
    w = -(-(max(right - left, 1) + s) // s) * s
    h = -(-(max(bottom - top, 1) + s) // s) * s
    layer = Image.new("L", (w, h), 0)
    extra = {} if fill_only else {"stroke_width": stroke, "stroke_fill": 255}
    ImageDraw.Draw(layer).text((px - left, py - top), word, font=font, fill=255, **extra)
    return np.asarray(layer.reduce(s), dtype=np.float32) / 255.0


@pytest.mark.parametrize("size", [2.5, 13.37, 63.9, 64.0, 100.25, 127.99, 128.0, 190.0])
def test_each_phase_is_the_drawing_at_its_offset(size: float) -> None:
    # The renderer draws a size once and cuts each phase's layer out of it: pixel for pixel the layer
    # drawn at that phase's offset, at each supersampling factor (4, 2, 1), with and without outline.
    from typoattack.constants import ALPHA_FLOOR, DEFAULT_FONT

    for word, outline in (("Tjy,", 0), ("pizza", 2), ("W", 1)):
        for phase in range(render._PHASES):
            outline_a, crop = render._draw_stamp(word, str(DEFAULT_FONT), size, outline, phase, False)
            fill_a, fill_crop = render._draw_stamp(word, str(DEFAULT_FONT), size, outline, phase, True)
            expected = _draw_stamp_reference(word, str(DEFAULT_FONT), size, outline, phase, False)
            expected[expected < ALPHA_FLOOR] = 0.0
            assert expected.any() and fill_crop == crop
            np.testing.assert_array_equal(expected[crop], outline_a)
            rows, cols = np.flatnonzero(expected.any(axis=1)), np.flatnonzero(expected.any(axis=0))
            assert crop == (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            fill = np.minimum(_draw_stamp_reference(word, str(DEFAULT_FONT), size, outline, phase, True),
                              np.where(expected > 0, expected, 0.0))
            fill[fill < ALPHA_FLOOR] = 0.0
            np.testing.assert_array_equal(fill[crop], fill_a)


@pytest.mark.parametrize("placement", [Placement.PAPER8, Placement.RANDOM])
def test_fast_solver_meets_one_percent_on_class_names(placement) -> None:
    """On 60 ImageNet class names at 0.07, every mask is within 4% and at least 95% within 1%,
    and the stored phases redraw the mask's layers exactly."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    errors = []
    for word in IMAGENET_CLASSNAMES[::17][:60]:
        mask = create_attack_mask(word, 0.07, placement, STYLE, SIZE)
        errors.append(abs(mask.coverage - 0.07) / 0.07)
        redrawn = render._layout(word, mask.font_size, placement, STYLE, SIZE, mask.copies, mask.phases)
        np.testing.assert_array_equal(redrawn.outline_alpha, mask.layers.outline_alpha)
    assert max(errors) <= SOLVE_RTOL
    assert np.mean(np.asarray(errors) <= 0.01) >= 0.95


def test_drawing_and_solving_import_no_model_code() -> None:
    code = ("import sys, typoattack.attack.render, typoattack.attack.solver, typoattack.attack.masks; "
            "bad = [m for m in ('torch', 'open_clip', 'typer') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_random_stamp_near_the_band_limit_is_solved() -> None:
    """'indigo bunting' at 0.07: most phases of the solved size make the single stamp a pixel too
    large for the canvas; the solver must step the size from the phases that fit (it once asked
    FreeType for a size of almost zero)."""
    mask = create_attack_mask("indigo bunting", 0.07, Placement.RANDOM, STYLE, SIZE)
    assert abs(mask.coverage - 0.07) <= 0.01 * 0.07
    assert mask.layers.shape[0] <= SIZE[0] // mask.copies and mask.layers.shape[1] <= SIZE[1]
