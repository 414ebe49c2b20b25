"""The Stroop test's config: a frozen dataclass validated on construction, the colour-set YAML
loader and the parsing of a stroop run config (YAML < CLI flags)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typoattack.attack.stroop import Colour, ColourSet
from typoattack.config.common import RunSettings, load_config
from typoattack.config.options import Option, Panel, option, options
from typoattack.config.parsing import (
    SAMPLE_DATA, as_list, as_str, check_distinct, has_one_placeholder, load_yaml_mapping, parse_color,
    resolve_builtin_yaml, resolve_data_source, resolve_font_path, resolve_path,
)
from typoattack.config.types import format_color
from typoattack.constants import CONFIGS_DIR, DEFAULT_FONT
from typoattack.errors import ConfigError, suggest

COLOURS_DIR = CONFIGS_DIR / "colours"
DEFAULT_COLOURS = "distill"
DEFAULT_PROMPT = "my favorite word, written in the color {}"
DEFAULT_NEUTRAL_WORD = "example"
MAX_VARIANTS = 10_000

STROOP_CONFIGS_DIR = CONFIGS_DIR / "stroop"
_COLOUR_FILE_KEYS = ("name", "description", "source", "colours")
_COLOUR_KEYS = ("name", "rgb", "word")
ATTACK, DATA = Panel.ATTACK, Panel.DATA


def _build_backgrounds(raw: Mapping[str, Any], cls: type) -> tuple[tuple[int, int, int], ...]:
    # Photo backgrounds replace the default white one; colours given as well are kept.
    backgrounds_raw = raw.get("background", [] if raw.get("background_data") else "white")
    # A list of three integers is one colour; any other list is several.
    if isinstance(backgrounds_raw, list) and not (backgrounds_raw and all(isinstance(v, int) for v in backgrounds_raw)):
        return tuple(parse_color("background", b) for b in backgrounds_raw)
    return (parse_color("background", backgrounds_raw),)


@dataclass(frozen=True, kw_only=True)
class StroopConfig(RunSettings):
    """Everything that determines the rows of a Stroop run. Written to run.json next to them.

    Attributes:
        colours: Colour-set YAML file (names with RGB values).
        prompts: Zero-shot templates with one `{}` for the colour name, averaged per class.
        neutral_word: The word of the neutral condition (names no colour).
        fonts: Font files; every stimulus is drawn in each.
        backgrounds: Background colours, RGB 0-255; every stimulus is drawn on each.
        background_data: Photos as backgrounds too: a data source as `eval --data` takes it (image
            folder with labels.csv, ImageNet-val folder, hf:NAME); None for colours only.
        background_limit: How many photos (a seeded, class-balanced subset of the source).
        variants: Renderings per (ink, word, font, background): 0 is centred, the others jittered.
    """

    COMMAND = "stroop"
    SUMMARY = "Goh et al.'s Stroop test: colour words in ink colours, classified zero-shot among the colours."
    BUILTIN_DIR = STROOP_CONFIGS_DIR
    DEMO_BY_DEFAULT = "always"

    seed: int = field(default=0, metadata=option(
        panel=ATTACK, metavar="INT", help="Seed of the size and position jitter."))
    colours: str = field(default=str(COLOURS_DIR / f"{DEFAULT_COLOURS}.yaml"), metadata=option(
        panel=ATTACK, metavar="PATH|NAME", default=DEFAULT_COLOURS,
        parse=lambda v: resolve_colours_path(as_str("colours", v)),
        help="Colour set: a YAML file of names and RGB values, or a built-in name."))
    prompts: tuple[str, ...] = field(default=(DEFAULT_PROMPT,), metadata=option(
        "prompt", panel=Panel.MODEL, metavar="TEXT", parse=lambda v: as_str("prompt", v).replace("{c}", "{}"),
        help="Zero-shot template with {} for the colour name; repeat for several (averaged)."))
    neutral_word: str = field(default=DEFAULT_NEUTRAL_WORD, metadata=option(
        panel=ATTACK, metavar="TEXT", help="Word of the neutral condition (names no colour)."))
    fonts: tuple[str, ...] = field(default=(str(DEFAULT_FONT),), metadata=option(
        "font", panel=ATTACK, metavar="PATH", default=DEFAULT_FONT.name,
        parse=lambda v: resolve_font_path(as_str("font", v)),
        help="Font file (.ttf/.otf) or a file name in fonts/; repeat for several."))
    backgrounds: tuple[tuple[int, int, int], ...] = field(default=((255, 255, 255),), metadata=options(
        Option("background", panel=ATTACK, metavar="COLOUR", repeat=True, default="white",
               help="Background colour: name or #rrggbb; repeat for several."),
        build=_build_backgrounds))
    background_data: str | None = field(default=None, metadata=option(
        panel=DATA, metavar="PATH|hf:NAME", parse=lambda v: _as_data_source(as_str("background_data", v), None),
        help="Photos as backgrounds too (replacing the default white): image folder with labels.csv, ImageNet-val "
             "folder, hf:NAME or sample."))
    background_limit: int = field(default=8, metadata=option(
        panel=DATA, metavar="N", help="Number of background photos (seeded, class-balanced)."))
    variants: int = field(default=1, metadata=option(
        panel=ATTACK, metavar="N",
        help="Renderings per stimulus (variant 0 centred, the others with seeded size and position jitter)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_distinct("prompt", self.prompts, "pass --prompt with a template such as 'a {} word'")
        for p in self.prompts:
            check_prompt(p)
        word = self.neutral_word
        if not word.strip() or any(ch in word for ch in "\n\r\t"):
            raise ConfigError(f"the neutral word {word!r} must be one line of visible text")
        for font in self.fonts:
            if not Path(font).is_file():
                raise ConfigError(f"font file {font} does not exist; give a .ttf/.otf path or a file name in fonts/")
        check_distinct("font", self.fonts, "give a .ttf/.otf file")
        if (not self.backgrounds and not self.background_data) or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ConfigError("`background` is empty or lists a colour twice")
        if self.background_limit < 1:
            raise ConfigError(f"background_limit must be a positive number of images, got {self.background_limit}")
        if not 1 <= self.variants <= MAX_VARIANTS:
            raise ConfigError(f"variants must be 1-{MAX_VARIANTS} renderings per stimulus, got {self.variants}")

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """The shared paths, then the background photos, colour set and fonts (built-in names stay)."""
        super().resolve_paths(raw, base)
        if isinstance(raw.get("background_data"), str):
            raw["background_data"] = _as_data_source(raw["background_data"], base)
        if isinstance(raw.get("colours"), str):
            raw["colours"] = resolve_colours_path(raw["colours"], base)
        if raw.get("font") is not None:
            raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in as_list(raw["font"])]

    @property
    def background_colours(self) -> list[str]:
        """The colour backgrounds as stimulus background names, '#rrggbb'."""
        return [format_color(b) for b in self.backgrounds]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config (colours as #rrggbb)."""
        return {**super().to_dict(), "backgrounds": self.background_colours}


def check_prompt(template: str) -> None:
    """Raise ConfigError unless `template` holds exactly one `{}` and no other braces (`{c}` is
    read as `{}` when the config is built)."""
    if not has_one_placeholder(template):
        raise ConfigError(f"prompt {template!r} must contain exactly one {{}} where the colour name goes, "
                          "e.g. 'my favorite word, written in the color {}' (write {{ and }} for literal braces)")


def _as_data_source(value: str, base: Path | None) -> str:
    if value.startswith("hf:") or value == SAMPLE_DATA:
        return resolve_data_source(value)
    return resolve_path(value, base)


def list_builtin_colour_sets() -> list[str]:
    """Names of the colour sets shipped in the package (`--colours NAME`)."""
    return sorted(p.stem for p in COLOURS_DIR.glob("*.yaml"))


def resolve_colours_path(value: str, base: Path | None = None) -> str:
    """A colour set given as a YAML path or as the name of a built-in one (distill)."""
    return resolve_builtin_yaml(value, COLOURS_DIR, "colour set", base)


def load_colours(path: str | Path) -> ColourSet:
    """Load a colour set: `colours:`, a list of `{name, rgb, word}` (rgb as '#rrggbb', a colour
    name or [r, g, b]; `word: false` keeps a colour out of the written words).

    Raises:
        ConfigError: The file is missing or malformed, a name is empty or repeated, an RGB value
            is invalid, or two colours share an RGB value.
    """
    doc = load_yaml_mapping(path, "colour set")
    unknown = sorted(map(str, set(doc) - set(_COLOUR_FILE_KEYS)))
    if unknown:
        raise ConfigError(f"unknown key `{unknown[0]}` in colour set {path}.{suggest(unknown[0], _COLOUR_FILE_KEYS)}")
    items = doc.get("colours")
    if not isinstance(items, list) or not items:
        raise ConfigError(f"colour set {path} has no colours: add `colours:` with a list of `{{name, rgb}}` entries")
    colours = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or "name" not in item or "rgb" not in item:
            raise ConfigError(f"colour {i + 1} of colour set {path} must be a mapping with `name` and `rgb`")
        extra = sorted(map(str, set(item) - set(_COLOUR_KEYS)))
        if extra:
            raise ConfigError(f"unknown key `{extra[0]}` in colour {i + 1} of colour set {path}."
                              f"{suggest(extra[0], _COLOUR_KEYS)}")
        name = as_str("name", item["name"])
        if any(ch in name for ch in "\n\r\t{}"):
            raise ConfigError(f"colour name {name!r} in colour set {path} must be one line without braces")
        try:
            rgb = parse_color("rgb", item["rgb"])
        except ConfigError as e:
            raise ConfigError(f"colour {name!r} in colour set {path}: {e}") from None
        as_word = item.get("word", True)
        if not isinstance(as_word, bool):
            raise ConfigError(f"colour {name!r} in colour set {path}: `word` must be true or false, got {as_word!r}")
        colours.append(Colour(name, rgb, as_word))
    rgbs = [c.rgb for c in colours]
    for c in colours:
        if rgbs.count(c.rgb) > 1:
            raise ConfigError(f"two colours of colour set {path} share the RGB value {format_color(c.rgb)}")
    return ColourSet(as_str("name", doc.get("name", Path(path).stem)), tuple(colours), str(path))


CONFIG = StroopConfig
"""The task's config class (the registry reads its options to build the command)."""


def build_stroop_config(raw: Mapping[str, Any]) -> StroopConfig:
    """Validate a mapping of Stroop settings (YAML keys) and build a StroopConfig.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    return StroopConfig.from_mapping(raw)


def load_stroop_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> StroopConfig:
    """Load a Stroop config YAML (or a built-in one) and apply the flags over it (YAML < flags).

    Args:
        path: The YAML file or built-in name, or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored. Relative paths
            are taken relative to the working directory.
    """
    return load_config(path, overrides, StroopConfig)
