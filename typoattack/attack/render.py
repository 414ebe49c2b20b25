"""Draw attack words on model-input canvases so that they cover a controlled share of the pixels.

Pure PIL + numpy: no model code. A text mask is rendered once per (word, fraction, placement,
style, canvas size) and composited onto any number of canvases, only inside its bounding box.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from typoattack.config.types import Placement, RenderStyle
from typoattack.constants import ALPHA_FLOOR
from typoattack.errors import RenderError

# Stamp centres of `paper8` as (x, y) shares of the canvas: a staggered diagonal from the
# top-left to the bottom-right, as in the example images of Goh et al. (2021).
PAPER8_CENTERS: tuple[tuple[float, float], ...] = tuple(
    (0.2 + 0.6 * i / 7 + (0.08 if i % 2 else -0.08), 0.08 + 0.84 * i / 7) for i in range(8)
)

# Font sizes (pixels) searched when solving for a fraction.
_MIN_FONT_SIZE = 2.0
_SIZE_GRID = 48
_BISECT_STEPS = 24
# The solver aims at this relative error of the mask coverage and fails beyond _SOLVE_RTOL.
# Coverage is a step function of the font size (glyphs snap to pixels), so it cannot be exact.
_SOLVE_TARGET_RTOL = 0.01
_SOLVE_RTOL = 0.04


@dataclass(frozen=True, eq=False)
class TextLayers:
    """Alpha layers of drawn text, cropped to their bounding box on the canvas.

    Attributes:
        y0: Row of the box's top edge on the canvas.
        x0: Column of the box's left edge on the canvas.
        outline_alpha: float32 [h, w] in [0, 1]: coverage of text plus outline.
        fill_alpha: float32 [h, w] in [0, 1]: coverage of the text fill (<= outline_alpha).
    """

    y0: int
    x0: int
    outline_alpha: np.ndarray
    fill_alpha: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width of the box."""
        h, w = self.outline_alpha.shape
        return h, w


@dataclass(frozen=True, eq=False)
class AttackMask:
    """A word rendered at the size that makes it cover `fraction` of a canvas.

    Attributes:
        word: The text.
        fraction: The requested share of canvas pixels.
        placement: Where the text goes.
        canvas_size: (height, width) of the canvas.
        font_size: The solved font size in pixels.
        coverage: Share of canvas pixels under the mask (alpha > 0) at that size.
        layers: For paper8 and center, the layers placed on the canvas; for random, the single
            stamp with y0 = x0 = 0, moved per image by `layers_for`.
        style: The style the mask was rendered with.
        copies: For random, how many stamps are drawn (1 unless one stamp that fits the canvas
            cannot cover the fraction; then k <= 8 stamps, one per horizontal band, never
            overlapping, so the coverage is the same on every image).
    """

    word: str
    fraction: float
    placement: Placement
    canvas_size: tuple[int, int]
    font_size: float
    coverage: float
    layers: TextLayers
    style: RenderStyle
    copies: int = 1

    def positions_for(self, image_id: str, seed: int) -> list[tuple[int, int]]:
        """Top-left (y0, x0) of each random stamp on the canvas of image `image_id`.

        The positions come from a generator keyed on (seed, image id, word), so they do not
        depend on batch size, order or sharding. Stamp k lies inside band k of `copies` equal
        horizontal bands.
        """
        H, W = self.canvas_size
        h, w = self.layers.shape
        rng = np.random.default_rng([seed % 2**64, stable_hash(image_id), stable_hash(self.word)])
        positions = []
        for k in range(self.copies):
            top, bottom = k * H // self.copies, (k + 1) * H // self.copies
            y0 = top + int(rng.integers(0, bottom - top - h + 1))
            x0 = int(rng.integers(0, W - w + 1))
            positions.append((y0, x0))
        return positions

    def layers_for(self, image_id: str, seed: int) -> TextLayers:
        """Return the layers to composite on the canvas of image `image_id`.

        For `random`, see `positions_for`. Other placements ignore the arguments.
        """
        if self.placement is not Placement.RANDOM:
            return self.layers
        positions = self.positions_for(image_id, seed)
        if self.copies == 1:
            (y0, x0), = positions
            return TextLayers(y0, x0, self.layers.outline_alpha, self.layers.fill_alpha)
        return _place([(y0, x0, self.layers) for y0, x0 in positions], self.canvas_size)


def stable_hash(text: str) -> int:
    """Return a 64-bit hash of `text` that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@lru_cache(maxsize=16)
def _font_codepoints(font_path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(font_path, lazy=True, fontNumber=0) as tt:
            return frozenset(tt.getBestCmap() or {})
    except Exception as e:  # fontTools raises many types for files that are not fonts
        raise RenderError(f"cannot read font {font_path}: {e}") from None


def check_glyphs(word: str, font_path: str) -> None:
    """Raise RenderError naming the characters of `word` that the font cannot draw."""
    if not word or not word.strip():
        raise RenderError("the attack word is empty")
    if any(ch in word for ch in "\n\r\t"):
        raise RenderError(f"the attack word {word!r} contains a line break or tab; use one line of text")
    cmap = _font_codepoints(font_path)
    missing = sorted({ch for ch in word if ord(ch) not in cmap})
    if missing:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in missing)
        raise RenderError(
            f"font {font_path} has no glyph for {shown} in {word!r}; choose a font that covers them"
        )


# Text is drawn at this multiple of the target size and box-filtered down: coverage then grows
# smoothly with the font size instead of jumping where FreeType's hinting snaps glyphs to pixels.
_SUPERSAMPLE = 4


def _supersample(size: float) -> int:
    # Hinting jumps matter only at small sizes; large text is drawn at 1x to bound memory.
    return _SUPERSAMPLE if size < 64 else 2 if size < 128 else 1


@lru_cache(maxsize=4096)
def _render_stamp(word: str, font_path: str, size: float, outline_width: int, phase: int = 0) -> TextLayers:
    """Render one stamp; `phase` shifts it by a fraction of a pixel (in supersampled pixels)."""
    s = _supersample(size)
    py, px = phase % s, (3 * phase) % s
    try:
        font = ImageFont.truetype(font_path, size=size * s)
    except OSError as e:
        raise RenderError(f"cannot open font {font_path}: {e}") from None
    stroke = outline_width * s
    left, top, right, bottom = font.getbbox(word, stroke_width=stroke)
    # Pad to a multiple of the supersampling factor so reduce() keeps every pixel.
    w = -(-(max(right - left, 1) + s) // s) * s
    h = -(-(max(bottom - top, 1) + s) // s) * s
    outline = Image.new("L", (w, h), 0)
    ImageDraw.Draw(outline).text((px - left, py - top), word, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    fill = Image.new("L", (w, h), 0)
    ImageDraw.Draw(fill).text((px - left, py - top), word, font=font, fill=255)
    outline_a = np.asarray(outline.reduce(s), dtype=np.float32) / 255.0
    fill_a = np.minimum(np.asarray(fill.reduce(s), dtype=np.float32) / 255.0, outline_a)
    outline_a[outline_a < ALPHA_FLOOR] = 0.0
    fill_a[fill_a < ALPHA_FLOOR] = 0.0
    # Crop to the pixels actually drawn so the stamp's box is as tight as possible.
    rows = np.flatnonzero(outline_a.any(axis=1))
    cols = np.flatnonzero(outline_a.any(axis=0))
    if rows.size == 0:
        return TextLayers(0, 0, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return TextLayers(0, 0, outline_a[sl].copy(), fill_a[sl].copy())


def _place(stamps: list[tuple[int, int, TextLayers]], canvas_size: tuple[int, int]) -> TextLayers:
    """Union of stamps placed at their (y0, x0), clipped to the canvas and cropped to its box."""
    H, W = canvas_size
    outline = np.zeros((H, W), np.float32)
    fill = np.zeros((H, W), np.float32)
    for y0, x0, stamp in stamps:
        h, w = stamp.shape
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y0 + h, H), min(x0 + w, W)
        if cy0 >= cy1 or cx0 >= cx1:
            continue
        src = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        dst = (slice(cy0, cy1), slice(cx0, cx1))
        np.maximum(outline[dst], stamp.outline_alpha[src], out=outline[dst])
        np.maximum(fill[dst], stamp.fill_alpha[src], out=fill[dst])
    rows = np.flatnonzero(outline.any(axis=1))
    cols = np.flatnonzero(outline.any(axis=0))
    if rows.size == 0:
        return TextLayers(0, 0, np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return TextLayers(int(rows[0]), int(cols[0]), outline[sl].copy(), fill[sl].copy())


def _layout(word: str, size: float, placement: Placement, style: RenderStyle,
            canvas_size: tuple[int, int], copies: int = 1) -> TextLayers | None:
    """Render `word` at `size` in `placement`; for random, the stamp alone, or None when it does
    not fit one of `copies` horizontal bands of the canvas."""
    H, W = canvas_size
    size = round(size, 3)
    stamp = _render_stamp(word, style.font, size, style.outline_width)
    h, w = stamp.shape
    if placement is Placement.RANDOM:
        return stamp if h <= H // copies and w <= W else None
    if placement is Placement.CENTER:
        return _place([(round(H / 2 - h / 2), round(W / 2 - w / 2), stamp)], canvas_size)
    # Each paper8 stamp gets its own sub-pixel phase: glyph edges then cross the alpha floor at
    # different sizes, so the union's coverage grows in small steps, not 8 simultaneous jumps.
    placed = []
    for i, (cx, cy) in enumerate(PAPER8_CENTERS):
        st = _render_stamp(word, style.font, size, style.outline_width, i)
        sh, sw = st.shape
        placed.append((round(cy * H - sh / 2), round(cx * W - sw / 2), st))
    return _place(placed, canvas_size)


def _coverage(layers: TextLayers | None, canvas_size: tuple[int, int], copies: int = 1) -> float:
    if layers is None:
        return -1.0
    return copies * float(np.count_nonzero(layers.outline_alpha)) / (canvas_size[0] * canvas_size[1])


# Most stamps the random placement may use.
_MAX_RANDOM_COPIES = 8


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
        RenderError: The font lacks a glyph, or the fraction cannot be reached (the message
            names the largest or smallest reachable fraction).
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
                raise RenderError(
                    f"fraction {fraction:g} cannot be reached for {where}: the smallest reachable fraction is {e.smallest:.4f}"
                ) from None
    raise RenderError(
        f"fraction {fraction:g} cannot be reached for {where}: the largest reachable fraction is {largest:.4f}"
    )


class _Unreachable(Exception):
    """No font size reaches the fraction with this many stamps (largest, smallest coverage)."""

    def __init__(self, largest: float, smallest: float | None = None) -> None:
        self.largest, self.smallest = largest, smallest


def _solve(word: str, fraction: float, placement: Placement, style: RenderStyle, canvas_size: tuple[int, int],
           copies: int, where: str) -> AttackMask:
    """Bisect the font size for `fraction`; raise _Unreachable when no size reaches it."""
    H, W = canvas_size

    def cov(size: float) -> float:
        return _coverage(_layout(word, size, placement, style, canvas_size, copies), canvas_size, copies)

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
        raise RenderError(
            f"fraction {fraction:g} cannot be matched for {where}: the nearest reachable is {best_cov:.4f}"
        )
    layers = _layout(word, best_size, placement, style, canvas_size, copies)
    assert layers is not None  # best_cov >= 0 implies the layout exists
    return AttackMask(word, fraction, placement, canvas_size, round(best_size, 3), best_cov, layers, style, copies)


def composite(canvas: np.ndarray, layers: TextLayers, style: RenderStyle) -> np.ndarray:
    """Draw text layers on a canvas, touching only the layers' box.

    Args:
        canvas: uint8 [H, W, 3] RGB image (the model-input canvas).
        layers: Where and how strongly to draw.
        style: Colours, outline width and opacity.

    Returns:
        A new uint8 [H, W, 3] array.
    """
    out = canvas.copy()
    h, w = layers.shape
    box = (slice(layers.y0, layers.y0 + h), slice(layers.x0, layers.x0 + w))
    region = out[box].astype(np.float32)
    if style.outline_width > 0:
        a = layers.outline_alpha[..., None] * style.opacity
        region = region * (1 - a) + np.asarray(style.outline, np.float32) * a
    a = layers.fill_alpha[..., None] * style.opacity
    region = region * (1 - a) + np.asarray(style.fill, np.float32) * a
    out[box] = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    return out


def measure_pixel_cover(clean: np.ndarray, attacked: np.ndarray) -> float:
    """Share of pixels changed by any amount in any channel (Distill's 'pixel cover', an L0 norm).

    Args:
        clean: uint8 [H, W, 3].
        attacked: uint8 [H, W, 3].

    Returns:
        A value in [0, 1].
    """
    return float(np.count_nonzero((clean != attacked).any(axis=-1))) / (clean.shape[0] * clean.shape[1])


def apply_attack(canvas: np.ndarray, mask: AttackMask, image_id: str, seed: int) -> tuple[np.ndarray, float]:
    """Composite `mask` on the canvas of `image_id` and measure the pixel cover.

    Args:
        canvas: uint8 [H, W, 3] clean canvas; its size must equal `mask.canvas_size`.
        mask: The solved attack mask.
        image_id: Identifies the image (keys the random placement).
        seed: Run seed (keys the random placement).

    Returns:
        (attacked uint8 [H, W, 3], measured pixel cover in [0, 1]).
    """
    if canvas.shape[:2] != mask.canvas_size:
        raise ValueError(f"canvas {canvas.shape[:2]} does not match mask size {mask.canvas_size}")
    layers = mask.layers_for(image_id, seed)
    attacked = composite(canvas, layers, mask.style)
    h, w = layers.shape
    box = (slice(layers.y0, layers.y0 + h), slice(layers.x0, layers.x0 + w))
    changed = np.count_nonzero((canvas[box] != attacked[box]).any(axis=-1))
    return attacked, changed / (canvas.shape[0] * canvas.shape[1])
