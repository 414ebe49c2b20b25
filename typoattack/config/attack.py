"""The settings of a sweep of synthetic attacks (words of a vocabulary x pixel fractions x placements x
text styles), declared once for every task that draws them (`eval`, `vlm`), with their parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typoattack.config.common import RunSettings
from typoattack.config.options import Option, Panel, list_keys, option, options
from typoattack.config.parsing import (
    as_float, as_int, as_list, as_str, check_distinct, parse_colors, resolve_font_path, resolve_vocab_path,
)
from typoattack.config.types import Placement, RenderStyle, check_fraction
from typoattack.constants import DEFAULT_FONT

ATTACK = Panel.ATTACK


def _build_styles(raw: Mapping[str, Any], cls: type) -> tuple[RenderStyle, ...]:
    return build_styles(raw)


def _build_vocab(raw: Mapping[str, Any], cls: type) -> str | tuple[str, ...]:
    """One vocabulary as its resolved name or path (the value runs before `--vocab` took several
    had, so their fingerprint stays), several as a tuple of them in order."""
    given = raw.get("vocab")
    values = [resolve_vocab_path(as_str("vocab", v)) for v in as_list("goh2021" if given is None else given)]
    check_distinct("vocab", tuple(values), "give a vocabulary such as goh2021")
    return values[0] if len(values) == 1 else tuple(values)


STYLE_OPTIONS = (
    Option("font", panel=ATTACK, metavar="PATH", repeat=True, default=DEFAULT_FONT.name,
           help="Font file (.ttf/.otf) or a file name in fonts/; repeat for several."),
    Option("fill", panel=ATTACK, metavar="COLOUR", repeat=True, default="white",
           help="Text colour: name or #rrggbb; repeat for several."),
    Option("outline", panel=ATTACK, metavar="COLOUR", repeat=True, default="black",
           help="Outline colour: name or #rrggbb; repeat for several."),
    Option("outline_width", panel=ATTACK, metavar="INT", type=int, default="1",
           help="Outline width in canvas pixels (0 = none)."),
    Option("opacity", panel=ATTACK, metavar="FLOAT", type=float, default="1", help="Text opacity in (0, 1]."),
)
"""The options of `AttackSettings.styles` (their product: fonts x fills x outlines)."""


@dataclass(frozen=True, kw_only=True)
class AttackSettings(RunSettings):
    """A sweep of synthetic attacks.

    Attributes:
        vocab: The vocabulary: a YAML file, `babel:LANG` (or a name made from the class set); several
            (a tuple) combine their words.
        fractions: Pixel fractions in (0, 1), each the share of canvas pixels the text changes.
        placements: Where the word is drawn.
        styles: Text styles (font, fill, outline, width, opacity).
    """

    vocab: str | tuple[str, ...] = field(default="goh2021", metadata=options(
        Option("vocab", panel=ATTACK, metavar="PATH|NAME", repeat=True, default="goh2021",
               help="Vocabulary YAML, a built-in name (goh2021, imagenet-classes), babel:LANG, or classes / "
                    "random-class (the class set's names); repeat to combine."),
        build=_build_vocab))
    fractions: tuple[float, ...] = field(default=(0.07,), metadata=option(
        "fraction", aliases=("fractions",), panel=ATTACK, metavar="FLOAT",
        help="Pixel fraction in (0, 1); repeat for several."))
    placements: tuple[Placement, ...] = field(default=(Placement.PAPER8,), metadata=option(
        "placement", aliases=("placements",), panel=ATTACK, metavar="paper8|center|random",
        help="Placement; repeat for several."))
    styles: tuple[RenderStyle, ...] = field(default=(RenderStyle(),), metadata=options(
        *STYLE_OPTIONS, build=_build_styles))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_distinct("fractions", self.fractions, "give at least one pixel fraction such as 0.07")
        for f in self.fractions:
            check_fraction(f)
        check_distinct("placement", self.placements, "use paper8, center or random")
        check_distinct("font`, `fill` or `outline", self.styles, "give at least one font, fill and outline")

    @property
    def style(self) -> RenderStyle:
        """The first (often the only) text style of the sweep."""
        return self.styles[0]

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """The shared paths, then the vocabulary and font paths (built-in names stay as written)."""
        super().resolve_paths(raw, base)
        resolve_attack_paths(raw, base)


ATTACK_KEYS = tuple(k for k in list_keys(AttackSettings) if k not in list_keys(RunSettings))
"""The YAML keys of a synthetic attack (every spelling)."""


def build_styles(raw: Mapping[str, Any], base: Path | None = None) -> tuple[RenderStyle, ...]:
    """The text styles of the keys `font`, `fill`, `outline` (each one value or a list: their
    product, fonts outermost), `outline_width` and `opacity`; missing keys take the defaults.

    Args:
        raw: Settings keyed as in a run-config YAML file.
        base: Directory that relative font paths are resolved against.

    Raises:
        ConfigError: A font, colour, width or opacity is invalid.
    """
    fonts = ([resolve_font_path(as_str("font", f), base) for f in as_list(raw["font"])]
             if raw.get("font") is not None else [str(DEFAULT_FONT)])
    outline_width = as_int("outline_width", raw.get("outline_width", 1))
    opacity = as_float("opacity", raw.get("opacity", 1.0))
    return tuple(
        RenderStyle(font=font, fill=fill, outline=outline, outline_width=outline_width, opacity=opacity)
        for font in fonts
        for fill in parse_colors("fill", raw.get("fill", "white"))
        for outline in parse_colors("outline", raw.get("outline", "black"))
    )


def resolve_attack_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the vocabulary and font paths of a YAML mapping absolute, relative to its folder `base`
    (built-in vocabulary and font names stay as written)."""
    if isinstance(raw.get("vocab"), str):
        raw["vocab"] = resolve_vocab_path(raw["vocab"], base)
    elif isinstance(raw.get("vocab"), list):
        raw["vocab"] = [resolve_vocab_path(v, base) if isinstance(v, str) else v for v in raw["vocab"]]
    if raw.get("font") is not None:
        raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in as_list(raw["font"])]
