"""Draw attack words: text stamps, their layouts on the canvas, and the CPU reference compositing.

Pure PIL + numpy: no model code. A text mask (solved to a pixel fraction by
`typoattack.attack.solver`) is rendered once per (word, fraction, placement, style, canvas size)
and composited onto any number of canvases, only inside its bounding box.
"""

from __future__ import annotations

import hashlib
import unicodedata
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
        phases: Sub-pixel phase (0-15) of each stamp (8 for paper8, else 1). Coverage is a
            step function of the font size (a glyph gains a row of pixels at once); the
            solver picks the phases that bring it within 1% of the fraction.
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
    phases: tuple[int, ...] = (0,)

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


def needs_complex_layout(word: str) -> bool:
    """Whether `word` is drawn right only with complex text layout (Pillow's raqm: bidi, shaping): a
    right-to-left character (Hebrew, Arabic, ...) or a combining mark (Devanagari, Thai, accents written
    apart, ...)."""
    return any(unicodedata.bidirectional(ch) in ("R", "AL") or unicodedata.category(ch).startswith("M")
               for ch in word)


@lru_cache(maxsize=1)
def has_raqm() -> bool:
    """Whether Pillow lays text out with raqm (FriBiDi and HarfBuzz), as it does by default when it can."""
    from PIL import features

    return bool(features.check("raqm"))


def check_glyphs(word: str, font_path: str) -> None:
    """Raise RenderError naming the characters of `word` that the font cannot draw, or when the word
    needs complex layout (right-to-left, combining marks) and this Pillow has no raqm."""
    if not word or not word.strip():
        raise RenderError("the attack word is empty")
    if any(ch in word for ch in "\n\r\t"):
        raise RenderError(f"the attack word {word!r} contains a line break or tab; use one line of text")
    cmap = _font_codepoints(font_path)
    missing = sorted({ch for ch in word if ord(ch) not in cmap})
    if missing:
        shown = ", ".join(f"{ch!r} (U+{ord(ch):04X})" for ch in missing)
        raise RenderError(
            f"font {font_path} has no glyph for {shown} in {word!r}; choose a font that covers them "
            "(--font auto finds one)"
        )
    if needs_complex_layout(word) and not has_raqm():
        raise RenderError(
            f"{word!r} needs complex text layout (right-to-left text or combining marks), and this Pillow has no "
            "raqm (PIL.features.check('raqm') is False): install libraqm (apt install libraqm0) or use a Pillow "
            "built with it"
        )


# Text is drawn at this multiple of the target size and box-filtered down: coverage then grows
# smoothly with the font size instead of jumping where FreeType's hinting snaps glyphs to pixels.
_SUPERSAMPLE = 4


def _supersample(size: float) -> int:
    # Hinting jumps matter only at small sizes; large text is drawn at 1x to bound memory.
    return _SUPERSAMPLE if size < 64 else 2 if size < 128 else 1


def _phase_offset(phase: int, s: int) -> tuple[int, int]:
    """Sub-pixel shift (rows, cols), in supersampled pixels, of sub-pixel phase `phase` (0-15)."""
    return phase % s, (phase // s) % s


@lru_cache(maxsize=64)
def _draw_supersampled(word: str, font_path: str, size: float, outline_width: int,
                       fill_only: bool) -> tuple[Image.Image, int, int, int]:
    """Draw one stamp's layer supersampled, once for all its sub-pixel phases.

    FreeType draws text at integer coordinates as the same bitmap translated, so a phase's layer is
    a window of one drawing made with a margin of `s` pixels above and to the left: the window at
    (s - py, s - px) of this image is what drawing at (px, py) in an h x w layer draws, pixel for pixel.

    Returns:
        (uint8 "L" image [h + s, w + s] drawn at (s - left, s - top), h, w, s): the phase layers' size
        h x w (multiples of s) and the supersampling factor s.
    """
    s = _supersample(size)
    try:
        font = ImageFont.truetype(font_path, size=size * s)
    except OSError as e:
        raise RenderError(f"cannot open font {font_path}: {e}") from None
    stroke = outline_width * s
    left, top, right, bottom = font.getbbox(word, stroke_width=stroke)
    # Pad to a multiple of the supersampling factor so reduce() keeps every pixel.
    w = -(-(max(right - left, 1) + s) // s) * s
    h = -(-(max(bottom - top, 1) + s) // s) * s
    layer = Image.new("L", (w + s, h + s), 0)
    if fill_only:
        ImageDraw.Draw(layer).text((s - left, s - top), word, font=font, fill=255)
    else:
        ImageDraw.Draw(layer).text((s - left, s - top), word, font=font, fill=255, stroke_width=stroke,
                                   stroke_fill=255)
    return layer, h, w, s


# The solver draws a word at a few dozen (size, phase) pairs and comes back to them while it solves
# that one mask: a few hundred entries give every hit a larger cache gives, and a batch of
# thousands of masks keeps tens of MB of stamps in memory, not half a GB.
@lru_cache(maxsize=512)
def _draw_stamp(word: str, font_path: str, size: float, outline_width: int, phase: int,
                fill_only: bool) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Draw one stamp's outline layer (text plus stroke) or its fill layer at 1x.

    Returns:
        (float32 [h, w] alpha in [0, 1] with values below ALPHA_FLOOR set to 0, the crop to the
        outline layer's drawn pixels). Both layers of one stamp share the canvas geometry, so the
        outline's crop applies to the fill too.
    """
    drawn, h, w, s = _draw_supersampled(word, font_path, size, outline_width, fill_only)
    py, px = _phase_offset(phase, s)
    layer = drawn.crop((s - px, s - py, s - px + w, s - py + h))
    alpha = np.asarray(layer.reduce(s), dtype=np.float32) / 255.0
    if fill_only:
        outline_a, crop = _draw_stamp(word, font_path, size, outline_width, phase, False)
        full = np.zeros_like(alpha)
        full[crop] = outline_a
        alpha = np.minimum(alpha, full)
    alpha[alpha < ALPHA_FLOOR] = 0.0
    if fill_only:
        return alpha[crop], crop
    # Crop to the pixels actually drawn so the stamp's box is as tight as possible.
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return np.zeros((1, 1), np.float32), (slice(0, 1), slice(0, 1))
    crop = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return alpha[crop].copy(), crop


def _render_stamp(word: str, font_path: str, size: float, outline_width: int, phase: int = 0) -> TextLayers:
    """Render one stamp; `phase` (0-15) shifts it by a fraction of a pixel (in supersampled pixels)."""
    outline_a, _ = _draw_stamp(word, font_path, size, outline_width, phase, False)
    fill_a, _ = _draw_stamp(word, font_path, size, outline_width, phase, True)
    return TextLayers(0, 0, outline_a, fill_a)


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


# Sub-pixel phases a stamp may be drawn at (supersampled offsets of up to 4 x 4 pixels).
_PHASES = 16


def _default_phases(placement: Placement) -> tuple[int, ...]:
    """Phases of a layout before the solver picks its own: each paper8 stamp gets another one,
    so glyph edges cross the alpha floor at different sizes and the union's coverage grows in
    smaller steps than 8 simultaneous jumps."""
    if placement is Placement.PAPER8:
        return tuple((5 * i) % _PHASES for i in range(len(PAPER8_CENTERS)))
    return (0,)


def _stamp_origins(word: str, size: float, placement: Placement, style: RenderStyle,
                   canvas_size: tuple[int, int], copies: int,
                   phases: tuple[int, ...]) -> list[tuple[int, int, int]] | None:
    """(y0, x0, stamp phase) of each stamp on the canvas, or None when a random stamp does not
    fit one of `copies` horizontal bands (random stamps are returned at (0, 0))."""
    H, W = canvas_size
    font, width = style.font, style.outline_width
    if placement is Placement.RANDOM:
        h, w = _draw_stamp(word, font, size, width, phases[0], False)[0].shape
        return [(0, 0, phases[0])] if h <= H // copies and w <= W else None
    if placement is Placement.CENTER:
        h, w = _draw_stamp(word, font, size, width, phases[0], False)[0].shape
        return [(round(H / 2 - h / 2), round(W / 2 - w / 2), phases[0])]
    origins = []
    for (cx, cy), p in zip(PAPER8_CENTERS, phases):
        h, w = _draw_stamp(word, font, size, width, p, False)[0].shape
        origins.append((round(cy * H - h / 2), round(cx * W - w / 2), p))
    return origins


def _layout(word: str, size: float, placement: Placement, style: RenderStyle,
            canvas_size: tuple[int, int], copies: int = 1, phases: tuple[int, ...] | None = None) -> TextLayers | None:
    """Render `word` at `size` with the stamps' sub-pixel `phases` in `placement`; for random, the
    stamp alone, or None when it does not fit one of `copies` horizontal bands of the canvas."""
    size = round(size, 3)
    phases = phases or _default_phases(placement)
    origins = _stamp_origins(word, size, placement, style, canvas_size, copies, phases)
    if origins is None:
        return None
    stamps = [(y0, x0, _render_stamp(word, style.font, size, style.outline_width, p)) for y0, x0, p in origins]
    if placement is Placement.RANDOM:
        return stamps[0][2]
    return _place(stamps, canvas_size)


def _coverage_at(word: str, size: float, placement: Placement, style: RenderStyle,
                 canvas_size: tuple[int, int], copies: int = 1, phases: tuple[int, ...] | None = None) -> float:
    """Share of the canvas under `_layout(...)`'s outline layer, or -1 when it does not fit.

    Equal to `_coverage(_layout(...))` but draws only the outline layers and counts their union,
    which is what the solver needs at every size it tries.
    """
    H, W = canvas_size
    size = round(size, 3)
    phases = phases or _default_phases(placement)
    origins = _stamp_origins(word, size, placement, style, canvas_size, copies, phases)
    if origins is None:
        return -1.0
    covered = np.zeros((H, W), dtype=bool)
    for y0, x0, p in origins:
        alpha = _draw_stamp(word, style.font, size, style.outline_width, p, False)[0]
        h, w = alpha.shape
        cy0, cx0, cy1, cx1 = max(y0, 0), max(x0, 0), min(y0 + h, H), min(x0 + w, W)
        if cy0 < cy1 and cx0 < cx1:
            covered[cy0:cy1, cx0:cx1] |= alpha[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] > 0
    return copies * float(np.count_nonzero(covered)) / (H * W)


def _coverage(layers: TextLayers | None, canvas_size: tuple[int, int], copies: int = 1) -> float:
    if layers is None:
        return -1.0
    return copies * float(np.count_nonzero(layers.outline_alpha)) / (canvas_size[0] * canvas_size[1])


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
