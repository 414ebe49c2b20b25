"""The Stroop test's config: a frozen dataclass validated on construction, the colour-set YAML
loader and the parsing of a stroop run config (YAML < CLI flags)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.attack.stroop import Colour, ColourSet
from typoattack.config.loading import (
    as_batch_size, as_enum, as_int, as_list, as_str, has_one_placeholder, is_name, parse_models, resolve_path,
    resolve_pretrained, load_yaml_mapping, parse_color, resolve_config_path, resolve_font_path,
)
from typoattack.config.types import ModelSpec, Precision, format_color, get_model_warnings
from typoattack.constants import CONFIGS_DIR, DEFAULT_CACHE_DIR, DEFAULT_FONT
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

COLOURS_DIR = CONFIGS_DIR / "colours"
DEFAULT_COLOURS = "distill"
DEFAULT_PROMPT = "my favorite word, written in the color {}"
DEFAULT_NEUTRAL_WORD = "example"
MAX_VARIANTS = 10_000

_STROOP_KEYS = (
    "models", "model", "pretrained", "colours", "prompt", "neutral_word", "font", "background", "background_data",
    "background_limit", "variants", "seed", "device", "precision", "batch_size", "cache_dir", "out",
)
_COLOUR_FILE_KEYS = ("name", "description", "source", "colours")
_COLOUR_KEYS = ("name", "rgb", "word")


@dataclass(frozen=True)
class StroopConfig:
    """Everything that determines the rows of a Stroop run. Written to run.json next to them.

    Attributes:
        models: The models to test, in turn.
        colours: Colour-set YAML file (names with RGB values).
        prompts: Zero-shot templates with one `{}` for the colour name, averaged per class.
        neutral_word: The word of the neutral condition (names no colour).
        fonts: Font files; every stimulus is drawn in each.
        backgrounds: Background colours, RGB 0-255; every stimulus is drawn on each.
        background_data: Photos as backgrounds too: a data source as `eval --data` takes it (image
            folder with labels.csv, ImageNet-val folder, hf:NAME); None for colours only.
        background_limit: How many photos (a seeded, class-balanced subset of the source).
        variants: Renderings per (ink, word, font, background): 0 is centred, the others jittered.
        seed: Keys the size and position jitter.
    """

    models: tuple[ModelSpec, ...]
    colours: str = str(COLOURS_DIR / f"{DEFAULT_COLOURS}.yaml")
    prompts: tuple[str, ...] = (DEFAULT_PROMPT,)
    neutral_word: str = DEFAULT_NEUTRAL_WORD
    fonts: tuple[str, ...] = (str(DEFAULT_FONT),)
    backgrounds: tuple[tuple[int, int, int], ...] = ((255, 255, 255),)
    background_data: str | None = None
    background_limit: int = 8
    variants: int = 1
    seed: int = 0
    device: str = "auto"
    precision: Precision = Precision.FP32
    batch_size: int | None = None
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    out: str | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model given; pass --model (and --pretrained) or set `model` in the config")
        if len(set(self.models)) != len(self.models):
            raise ConfigError("the same model and pretrained weights are listed twice")
        if not self.prompts:
            raise ConfigError("no prompt given; pass --prompt with a template such as 'a {} word'")
        for p in self.prompts:
            check_prompt(p)
        if len(set(self.prompts)) != len(self.prompts):
            raise ConfigError("`prompt` lists a template twice")
        word = self.neutral_word
        if not word.strip() or any(ch in word for ch in "\n\r\t"):
            raise ConfigError(f"the neutral word {word!r} must be one line of visible text")
        for font in self.fonts:
            if not Path(font).is_file():
                raise ConfigError(f"font file {font} does not exist; give a .ttf/.otf path or a file name in fonts/")
        if not self.fonts or len(set(self.fonts)) != len(self.fonts):
            raise ConfigError("`font` is empty or lists a font twice")
        if (not self.backgrounds and not self.background_data) or len(set(self.backgrounds)) != len(self.backgrounds):
            raise ConfigError("`background` is empty or lists a colour twice")
        if self.background_limit < 1:
            raise ConfigError(f"background_limit must be a positive number of images, got {self.background_limit}")
        if not 1 <= self.variants <= MAX_VARIANTS:
            raise ConfigError(f"variants must be 1-{MAX_VARIANTS} renderings per stimulus, got {self.variants}")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer or auto, got {self.batch_size}")

    @property
    def background_colours(self) -> list[str]:
        """The colour backgrounds as stimulus background names, '#rrggbb'."""
        return [format_color(b) for b in self.backgrounds]

    @property
    def model_warnings(self) -> list[str]:
        """Warnings about the run's models (random weights, the demo model)."""
        return get_model_warnings((m.name, m.pretrained) for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config (enums as values, colours as #rrggbb)."""
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        d["backgrounds"] = [format_color(b) for b in self.backgrounds]
        d["models"] = [dataclasses.asdict(m) for m in self.models]
        d["prompts"] = list(self.prompts)
        d["fonts"] = list(self.fonts)
        return d

    def fingerprint(self) -> str:
        """JSON of the settings that determine the rows (not out, cache, device or batch size)."""
        d = self.to_dict()
        for key in ("out", "cache_dir", "batch_size", "device"):
            d.pop(key)
        return json.dumps(d, sort_keys=True)


def check_prompt(template: str) -> None:
    """Raise ConfigError unless `template` holds exactly one `{}` and no other braces (`{c}` is
    read as `{}` when the config is built)."""
    if not has_one_placeholder(template):
        raise ConfigError(f"prompt {template!r} must contain exactly one {{}} where the colour name goes, "
                          "e.g. 'my favorite word, written in the color {}' (write {{ and }} for literal braces)")


def _as_data_source(value: str, base: Path | None) -> str:
    return value if value.startswith("hf:") else resolve_path(value, base)


def list_builtin_colour_sets() -> list[str]:
    """Names of the colour sets shipped in the package (`--colours NAME`)."""
    return sorted(p.stem for p in COLOURS_DIR.glob("*.yaml"))


def resolve_colours_path(value: str, base: Path | None = None) -> str:
    """A colour set given as a YAML path or as the name of a built-in one (distill)."""
    if not is_name(value):
        return resolve_path(value, base)
    if not (COLOURS_DIR / f"{value}.yaml").is_file():
        names = list_builtin_colour_sets()
        raise ConfigError(f"colour set {value!r} is neither a YAML file nor a built-in colour set "
                          f"({', '.join(names)}).{suggest(value, names)}")
    return str(COLOURS_DIR / f"{value}.yaml")


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


def build_stroop_config(raw: Mapping[str, Any], base: Path | None = None) -> StroopConfig:
    """Validate a mapping of Stroop settings (YAML keys) and build a StroopConfig.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    for key in raw:
        if not isinstance(key, str) or key not in _STROOP_KEYS:
            raise ConfigError(f"unknown stroop config key `{key}`.{suggest(str(key), _STROOP_KEYS)}")
    fonts = [resolve_font_path(as_str("font", f), base) for f in as_list(raw["font"])] if raw.get("font") else [
        str(DEFAULT_FONT)]
    prompts = [as_str("prompt", p).replace("{c}", "{}") for p in as_list(raw.get("prompt", DEFAULT_PROMPT))]
    background_data = raw.get("background_data")
    # Photo backgrounds replace the default white one; colours given as well are kept.
    backgrounds_raw = raw.get("background", [] if background_data else "white")
    # A list of three integers is one colour; any other list is several.
    if isinstance(backgrounds_raw, list) and not (backgrounds_raw and all(isinstance(v, int) for v in backgrounds_raw)):
        backgrounds = [parse_color("background", b) for b in backgrounds_raw]
    else:
        backgrounds = [parse_color("background", backgrounds_raw)]
    out = raw.get("out")
    return StroopConfig(
        models=parse_models(raw),
        colours=resolve_colours_path(as_str("colours", raw.get("colours", DEFAULT_COLOURS)), base),
        prompts=tuple(prompts),
        neutral_word=as_str("neutral_word", raw.get("neutral_word", DEFAULT_NEUTRAL_WORD)),
        fonts=tuple(fonts),
        backgrounds=tuple(backgrounds),
        background_data=None if background_data is None else _as_data_source(as_str("background_data", background_data), base),
        background_limit=as_int("background_limit", raw.get("background_limit", 8)),
        variants=as_int("variants", raw.get("variants", 1)),
        seed=as_int("seed", raw.get("seed", 0)),
        device=as_str("device", raw.get("device", "auto")),
        precision=as_enum("precision", Precision, raw.get("precision", "fp32")),
        batch_size=as_batch_size(raw.get("batch_size", "auto")),
        cache_dir=str(expand_path(as_str("cache_dir", raw.get("cache_dir", str(DEFAULT_CACHE_DIR))))),
        out=None if out is None else resolve_path(as_str("out", out), base),
    )


def load_stroop_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> StroopConfig:
    """Load a Stroop config YAML and apply overrides (CLI flags win over YAML keys).

    Args:
        path: The YAML file (or a built-in run config name), or None for flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored. Relative paths
            are taken relative to the working directory.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        raw = load_yaml_mapping(path, "stroop config")
        base = path.parent
        if "pretrained" in raw and isinstance(raw["pretrained"], str):
            raw["pretrained"] = resolve_pretrained(raw["pretrained"], base)
        if isinstance(raw.get("models"), list):
            raw["models"] = [{**m, "pretrained": resolve_pretrained(m.get("pretrained"), base)}
                             if isinstance(m, Mapping) and "pretrained" in m else m for m in raw["models"]]
        if isinstance(raw.get("background_data"), str):
            raw["background_data"] = _as_data_source(raw["background_data"], base)
        for key in ("out", "cache_dir"):
            if isinstance(raw.get(key), str) and raw[key].strip():
                raw[key] = resolve_path(raw[key], base)
        if isinstance(raw.get("colours"), str):
            raw["colours"] = resolve_colours_path(raw["colours"], base)
        if raw.get("font") is not None:
            raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in as_list(raw["font"])]
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "models" in raw and ("model" in overrides or "pretrained" in overrides):
        if "model" not in overrides:
            entries = as_list(raw["models"])
            if len(entries) != 1:
                raise ConfigError("--pretrained alone is ambiguous: the config lists several models; pass --model too")
            raw["model"] = entries[0].get("name") if isinstance(entries[0], Mapping) else entries[0]
        raw.pop("models")
    raw.update(overrides)
    return build_stroop_config(raw)

