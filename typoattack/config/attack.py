"""The settings of a sweep of synthetic attacks (words of a vocabulary x pixel fractions x placements x
text styles), declared once for every task that draws them (`eval`, `vlm`), with their parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.config.common import RunSettings
from typoattack.config.parsing import (
    as_enum, as_float, as_int, as_list, as_str, check_distinct, parse_colors, resolve_font_path, resolve_vocab_path,
)
from typoattack.config.types import Placement, RenderStyle, check_fraction
from typoattack.constants import DEFAULT_FONT
from typoattack.errors import ConfigError

ATTACK_KEYS = ("vocab", "fractions", "fraction", "placement", "placements", "font", "fill", "outline",
               "outline_width", "opacity")
ATTACK_ALIASES = {"fractions": "fraction", "placement": "placements"}
"""Flag key -> the other spelling of the same YAML key (for `load_config`)."""


@dataclass(frozen=True, kw_only=True)
class AttackSettings(RunSettings):
    """A sweep of synthetic attacks.

    Attributes:
        vocab: The vocabulary YAML file.
        fractions: Pixel fractions in (0, 1), each the share of canvas pixels the text changes.
        placements: Where the word is drawn.
        styles: Text styles (font, fill, outline, width, opacity).
    """

    vocab: str = "goh2021"
    fractions: tuple[float, ...] = (0.07,)
    placements: tuple[Placement, ...] = (Placement.PAPER8,)
    styles: tuple[RenderStyle, ...] = (RenderStyle(),)

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


def check_attack_spellings(raw: Mapping[str, Any]) -> None:
    """Raise ConfigError when a key is given in both its spellings (`fraction` and `fractions`)."""
    for a, b in (("fraction", "fractions"), ("placement", "placements")):
        if a in raw and b in raw:
            raise ConfigError(f"give `{a}` or `{b}`, not both")


def parse_attack_settings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The `AttackSettings` fields of a config mapping (YAML keys; `fraction` and `placement` may be
    spelled `fractions` and `placements`).

    Raises:
        ConfigError: Both spellings of a key are given, or a value has the wrong type.
    """
    check_attack_spellings(raw)
    fractions_raw = raw.get("fractions", raw.get("fraction", [0.07]))
    placements_raw = raw.get("placements", raw.get("placement", ["paper8"]))
    return {
        "vocab": resolve_vocab_path(as_str("vocab", raw.get("vocab", "goh2021"))),
        "fractions": tuple(as_float("fractions", f) for f in as_list(fractions_raw)),
        "placements": tuple(as_enum("placement", Placement, p) for p in as_list(placements_raw)),
        "styles": build_styles(raw),
    }


def resolve_attack_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the vocabulary and font paths of a YAML mapping absolute, relative to its folder `base`
    (built-in vocabulary and font names stay as written)."""
    if isinstance(raw.get("vocab"), str):
        raw["vocab"] = resolve_vocab_path(raw["vocab"], base)
    if raw.get("font") is not None:
        raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in as_list(raw["font"])]
