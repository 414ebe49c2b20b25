"""Stroop stimuli (Goh et al. 2021): colour words drawn in an ink colour, one word per image.

Pure PIL + numpy: no model code. A stimulus is a (ink, word, variant, font, background) tuple;
`render_stimulus` draws it at the model's input size without anti-aliasing, so every text pixel
is exactly the ink and every other pixel the background (a colour, or a photo already resized to
the model's input); no resize follows, so the model sees those exact values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from typoattack.attack.render import check_glyphs, stable_hash
from typoattack.constants import FONTS_DIR
from typoattack.errors import ConfigError, RenderError

IMAGE_BACKGROUND_PREFIX = "image:"
"""Background names: '#rrggbb' for a colour, IMAGE_BACKGROUND_PREFIX + image id for a photo."""

# Variant 0 is drawn at BASE_HEIGHT x canvas height, centred (Distill's single rendering);
# variants >= 1 scale that size by a factor in SIZE_JITTER and place the word anywhere it fits.
BASE_HEIGHT = 0.2
MAX_WIDTH = 0.9
SIZE_JITTER = (0.7, 1.15)


class StroopCondition(str, Enum):
    """How the written word relates to the ink colour."""

    NEUTRAL = "neutral"
    CONGRUENT = "congruent"
    INCONGRUENT = "incongruent"


@dataclass(frozen=True)
class Colour:
    """One colour class of the test.

    Attributes:
        name: The class name (the word written and the prompt's `{}`), e.g. 'red'.
        rgb: The ink, RGB 0-255.
        as_word: Whether the name is also written as a word (Distill writes no 'black').
    """

    name: str
    rgb: tuple[int, int, int]
    as_word: bool = True


@dataclass(frozen=True)
class ColourSet:
    """The colour classes of a Stroop test, loaded from a YAML file (see `load_colours`)."""

    name: str
    colours: tuple[Colour, ...]
    path: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.colours]
        if len(names) < 2:
            raise ConfigError(f"colour set {self.path or self.name} needs at least two colours, got {len(names)}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ConfigError(f"colour {repeated[0]!r} appears twice in colour set {self.path or self.name}")
        if not any(c.as_word for c in self.colours):
            raise ConfigError(f"colour set {self.path or self.name} writes no colour as a word (every `word: false`)")

    @property
    def names(self) -> list[str]:
        """Class names in file order (the classifier's class order)."""
        return [c.name for c in self.colours]

    def get_rgb(self, name: str) -> tuple[int, int, int]:
        """The RGB of colour `name`."""
        return next(c.rgb for c in self.colours if c.name == name)


@dataclass(frozen=True)
class StroopStimulus:
    """One image of the test.

    Attributes:
        ink: Colour name of the ink (the true class).
        word: The written word: a colour name or the neutral word.
        condition: neutral (the word is no colour), congruent (word = ink) or incongruent.
        variant: Rendering index 0..N-1 (0: centred at the base size; others jittered).
        font: Font file path.
        background: '#rrggbb' for a colour, or 'image:<image id>' for a photo.
    """

    ink: str
    word: str
    condition: StroopCondition
    variant: int
    font: str
    background: str

    @property
    def background_rgb(self) -> tuple[int, int, int] | None:
        """The background colour, or None for a photo."""
        if self.background.startswith(IMAGE_BACKGROUND_PREFIX):
            return None
        text = self.background
        return int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16)


def list_stimuli(colours: ColourSet, neutral_word: str, fonts: Sequence[str],
                 backgrounds: Sequence[str], variants: int) -> list[StroopStimulus]:
    """Every stimulus: fonts x backgrounds x inks x (neutral word + colour words) x variants.

    With Distill's 8 colours (no 'black' word), one font, one background and one variant: 8
    neutral, 7 congruent and 49 incongruent stimuli.

    Raises:
        ConfigError: The neutral word is a colour name, or `variants` < 1.
    """
    if variants < 1:
        raise ConfigError(f"variants must be a positive number of renderings, got {variants}")
    if neutral_word in colours.names:
        raise ConfigError(f"the neutral word {neutral_word!r} is one of the colours; choose a word that names no colour")
    words = [neutral_word] + [c.name for c in colours.colours if c.as_word]
    stimuli = []
    for font in fonts:
        for background in backgrounds:
            for ink in colours.names:
                for word in words:
                    condition = (StroopCondition.NEUTRAL if word == neutral_word else
                                 StroopCondition.CONGRUENT if word == ink else StroopCondition.INCONGRUENT)
                    stimuli += [StroopStimulus(ink, word, condition, v, font, background) for v in range(variants)]
    return stimuli


def get_font_label(path: str) -> str:
    """How stroop.csv records a font: a font bundled with typoattack (typoattack/assets/fonts) by
    its file name, so the table does not depend on where the package is installed; any other by
    the path given."""
    try:
        bundled = Path(path).resolve().parent == FONTS_DIR.resolve()
    except OSError:
        bundled = False
    return Path(path).name if bundled and (FONTS_DIR / Path(path).name).is_file() else path


def resolve_font_label(label: str) -> str:
    """The font file of a stroop.csv `font` value: a bundled font's file name gives its path in
    this installation; a path (tables written before fonts were recorded by name) is kept."""
    if "/" not in label and "\\" not in label and (FONTS_DIR / label).is_file():
        return str(FONTS_DIR / label)
    return label


def check_stimulus_glyphs(words: Sequence[str], fonts: Sequence[str]) -> None:
    """Raise RenderError when a font cannot draw a character of a word (never silent boxes)."""
    for font in fonts:
        for word in words:
            check_glyphs(word, font)


@lru_cache(maxsize=64)
def _get_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size=size)
    except OSError as e:
        raise RenderError(f"cannot open font {path}: {e}") from None


def _text_box(word: str, font_path: str, size: int) -> tuple[int, int, int, int]:
    return _get_font(font_path, size).getbbox(word)


def get_base_size(words: Sequence[str], font_path: str, canvas_size: tuple[int, int]) -> int:
    """Font size (pixels) of variant 0: BASE_HEIGHT of the canvas height, smaller when the longest
    of `words` would be wider than MAX_WIDTH of the canvas. One size for every word of a font, so
    word length is the only thing that changes a word's area."""
    H, W = canvas_size
    size = max(4, round(BASE_HEIGHT * H))
    while size > 4:
        widest = max(_text_box(w, font_path, size)[2] - _text_box(w, font_path, size)[0] for w in words)
        if widest <= MAX_WIDTH * W:
            break
        size -= 1
    return size


def get_layout(stimulus: StroopStimulus, base_size: int, canvas_size: tuple[int, int],
               seed: int) -> tuple[int, int, int]:
    """(font size, x, y) of the text's top-left ink pixel on the canvas.

    Variant 0 is centred at `base_size`. Other variants draw a size factor in SIZE_JITTER and a
    position where the word fits from a generator keyed on (seed, ink, word, variant), so a
    stimulus looks the same whatever the batch, order, font or background set.
    """
    H, W = canvas_size
    size = base_size
    if stimulus.variant == 0:
        left, top, right, bottom = _text_box(stimulus.word, stimulus.font, size)
        return size, round((W - (right - left)) / 2), round((H - (bottom - top)) / 2)
    rng = np.random.default_rng([seed % 2**64, stable_hash(stimulus.ink), stable_hash(stimulus.word), stimulus.variant])
    size = max(4, round(base_size * rng.uniform(*SIZE_JITTER)))
    left, top, right, bottom = _text_box(stimulus.word, stimulus.font, size)
    while size > 4 and right - left > W:
        size -= 1
        left, top, right, bottom = _text_box(stimulus.word, stimulus.font, size)
    x = int(rng.integers(0, max(W - (right - left), 0) + 1))
    y = int(rng.integers(0, max(H - (bottom - top), 0) + 1))
    return size, x, y


def render_stimulus(stimulus: StroopStimulus, ink_rgb: tuple[int, int, int], base_size: int,
                    canvas_size: tuple[int, int], seed: int, background_image: np.ndarray | None = None) -> np.ndarray:
    """Draw one stimulus.

    Args:
        stimulus: What to draw.
        ink_rgb: The ink colour, RGB 0-255.
        base_size: Font size of variant 0 (`get_base_size`).
        canvas_size: (height, width): the model's input size.
        seed: Run seed (keys the jitter of variants >= 1).
        background_image: uint8 [H, W, 3], the photo of an 'image:' background (already resized
            and cropped to the model's input); ignored for colour backgrounds.

    Returns:
        uint8 [H, W, 3]: every text pixel is exactly `ink_rgb`, every other one the background.

    Raises:
        ValueError: A photo background without `background_image`, or of the wrong size.
    """
    H, W = canvas_size
    size, x, y = get_layout(stimulus, base_size, canvas_size, seed)
    rgb = stimulus.background_rgb
    if rgb is not None:
        image = Image.new("RGB", (W, H), rgb)
    elif background_image is None or background_image.shape != (H, W, 3):
        raise ValueError(f"background {stimulus.background} needs a uint8 [{H}, {W}, 3] image")
    else:
        image = Image.fromarray(np.ascontiguousarray(background_image, dtype=np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"  # no anti-aliasing: the ink is exact, never blended with the background
    font = _get_font(stimulus.font, size)
    left, top, _, _ = font.getbbox(stimulus.word)
    draw.text((x - left, y - top), stimulus.word, font=font, fill=ink_rgb)
    return np.asarray(image, dtype=np.uint8)
