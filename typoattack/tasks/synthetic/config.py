"""Settings of `typoattack eval`: synthetic attacks drawn on a set of labelled images at controlled
pixel fractions (the words of a vocabulary x fractions x placements x text styles)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.config.common import (
    IMAGE_SET_KEYS, RUN_KEYS, ImageSetSettings, check_keys, check_templates, load_config, parse_image_set,
    parse_run_settings,
)
from typoattack.config.defences import add_prefix_baseline
from typoattack.config.parsing import (
    check_distinct,
    as_enum, as_float, as_int, as_list, as_str, parse_colors, resolve_font_path, resolve_vocab_path,
)
from typoattack.config.types import Placement, RenderStyle, check_fraction
from typoattack.constants import DEFAULT_FONT, SAMPLE_DIR
from typoattack.errors import ConfigError

SYNTHETIC_KEYS = (*RUN_KEYS, *IMAGE_SET_KEYS, "vocab", "fractions", "fraction", "placement", "placements", "font",
                  "fill", "outline", "outline_width", "opacity")
DEFAULT_TEMPLATES = "openai"


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(ImageSetSettings):
    """Everything that determines the records of an `eval` run. Written to run.json next to them.

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
        check_templates(self.templates)

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


def build_synthetic_config(raw: Mapping[str, Any]) -> SyntheticConfig:
    """Validate a mapping of `eval` settings (YAML keys; paths absolute or relative to the working
    directory) and build its config.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a run config must be a mapping of keys to values, got {type(raw).__name__}")
    check_keys(raw, SYNTHETIC_KEYS, "eval")
    for a, b in (("fraction", "fractions"), ("placement", "placements")):
        if a in raw and b in raw:
            raise ConfigError(f"give `{a}` or `{b}`, not both")
    fractions_raw = raw.get("fractions", raw.get("fraction", [0.07]))
    placements_raw = raw.get("placements", raw.get("placement", ["paper8"]))
    image_set = parse_image_set(raw, "validation", DEFAULT_TEMPLATES)
    # A prefix defence is compared with its own single prompt without the token: evaluate that too.
    image_set["defences"] = add_prefix_baseline(image_set["defences"])
    # The shipped sample needs no weights either: without --model it shows the pipeline on the demo model.
    return SyntheticConfig(
        **parse_run_settings(raw, demo_by_default=image_set["data"].source == str(SAMPLE_DIR)),
        **image_set,
        vocab=resolve_vocab_path(as_str("vocab", raw.get("vocab", "goh2021"))),
        fractions=tuple(as_float("fractions", f) for f in as_list(fractions_raw)),
        placements=tuple(as_enum("placement", Placement, p) for p in as_list(placements_raw)),
        styles=build_styles(raw),
    )


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    if isinstance(raw.get("vocab"), str):
        raw["vocab"] = resolve_vocab_path(raw["vocab"], base)
    if raw.get("font") is not None:
        raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in as_list(raw["font"])]


def load_synthetic_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SyntheticConfig:
    """Load an `eval` config (a YAML file or a built-in name; paths in it relative to the file) and
    apply the flags over it (YAML < flags).

    Args:
        path: The YAML file or built-in name (ci, paper, sweep-fraction), or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, build_synthetic_config, resolve_paths=_resolve_paths,
                       aliases={"fractions": "fraction", "placement": "placements"})
