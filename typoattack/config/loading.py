"""Parsing of run configs, vocabularies and templates into the types of `typoattack.config.types`
(YAML < CLI flags); every value is validated here or on construction of its type."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from PIL import ImageColor

from typoattack.config.types import (
    BUILTIN_TEMPLATES, DEFAULT_RAY_TIMEOUT, AttackWord, DataSpec, Executor, ModelSpec, Placement, Precision,
    RenderStyle, RunConfig, ShardSpec, Vocabulary, is_untrained,
)
from typoattack.constants import CONFIGS_DIR, DEFAULT_CACHE_DIR, DEFAULT_FONT, FONTS_DIR, VOCAB_DIR
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

_RUN_KEYS = (
    "models", "model", "pretrained", "data", "labels", "hf_split", "hf_image_column",
    "hf_label_column", "limit", "vocab", "fractions", "fraction", "placement", "placements",
    "font", "fill", "outline", "outline_width", "opacity", "templates", "batch_size", "device",
    "precision", "seed", "out", "cache_dir", "workers", "chunk_size", "compile",
    "executor", "ray_address", "ray_timeout", "shard",
    "defences", "defence",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def as_int(key: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        text = value.strip() if isinstance(value, str) else ""
        if text.isascii() and text.lstrip("-").isdigit() and text.count("-") <= int(text.startswith("-")):
            return int(text)
        raise ConfigError(f"`{key}` must be an integer, got {value!r}")
    return value


def as_batch_size(value: Any) -> int | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return as_int("batch_size", value)


def parse_shard(value: Any) -> ShardSpec | None:
    """Parse `K/N` (shard K of N, 1-based) into a ShardSpec; None stays None."""
    if value is None:
        return None
    if isinstance(value, ShardSpec):
        return value
    parts = as_str("shard", value).split("/")
    if len(parts) != 2 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise ConfigError(f"`shard` must be K/N with 1 <= K <= N (e.g. 2/4), got {value!r}")
    return ShardSpec(int(parts[0]), int(parts[1]))


def as_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return value.strip().lower() in ("true", "yes", "on", "1")
    raise ConfigError(f"`{key}` must be true or false, got {value!r}")


def as_float(key: str, value: Any) -> float:
    try:
        number = float(value) if isinstance(value, str) or _is_number(value) else math.nan
    except (ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"`{key}` must be a finite number, got {value!r}")
    return number


def as_str(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"`{key}` must be a string, got {value!r}")
    text = str(value).strip()
    if not text:
        raise ConfigError(f"`{key}` is empty")
    return text


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def as_enum(key: str, enum: type[Enum], value: Any) -> Any:
    if isinstance(value, enum):
        return value
    text = as_str(key, value).lower()
    try:
        return enum(text)
    except ValueError:
        choices = [e.value for e in enum]
        raise ConfigError(
            f"`{key}` is {value!r}; choose one of {', '.join(choices)}.{suggest(text, choices)}"
        ) from None


def parse_color(key: str, value: Any) -> tuple[int, int, int]:
    """Parse a colour given as a name ('white'), '#rrggbb' or a list of three 0-255 integers."""
    if isinstance(value, (list, tuple)):
        if len(value) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
            return (int(value[0]), int(value[1]), int(value[2]))
        raise ConfigError(f"`{key}` must be three integers 0-255, got {value!r}")
    try:
        rgb = ImageColor.getrgb(as_str(key, value))
    except ValueError:
        rgb = (-1, -1, -1)
    if not all(0 <= c <= 255 for c in rgb[:3]):
        raise ConfigError(f"`{key}` is not a colour: {value!r} (use a name, '#rrggbb' or [r, g, b] with values 0-255)")
    return (rgb[0], rgb[1], rgb[2])


def parse_colors(key: str, value: Any) -> list[tuple[int, int, int]]:
    """Parse one colour or a list of colours (a list of three integers is one colour)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, list, tuple)) for v in value):
        return [parse_color(key, v) for v in value]
    return [parse_color(key, value)]


def resolve_path(value: str, base: Path | None) -> str:
    path = expand_path(value)
    if not path.is_absolute() and base is not None:
        path = base / path
    return str(path)


def resolve_font_path(value: str, base: Path | None = None) -> str:
    """Resolve a font given as a path or as a file name shipped in fonts/."""
    path = Path(resolve_path(value, base))
    if not path.exists() and (FONTS_DIR / value).is_file():
        return str(FONTS_DIR / value)
    return str(path)


def is_name(value: str) -> bool:
    """True when `value` names a built-in file (no folder, no .yaml suffix) rather than a path."""
    return "/" not in value and "\\" not in value and not value.endswith((".yaml", ".yml"))


def list_builtin_configs() -> list[str]:
    """Names of the run configs shipped in the package (`--config NAME`)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def list_builtin_vocabularies() -> list[str]:
    """Names of the vocabularies shipped in the package (`--vocab NAME`)."""
    return sorted(p.stem for p in VOCAB_DIR.glob("*.yaml"))


def resolve_config_path(value: str | Path) -> Path:
    """A run config given as a YAML path or as the name of a built-in one (ci, paper, ...).

    Raises:
        ConfigError: No such file, and no built-in config of that name (the message lists them).
    """
    text = str(value).strip()
    path = expand_path(text)
    if path.is_file():
        return path.resolve()
    if is_name(text) and (CONFIGS_DIR / f"{text}.yaml").is_file():
        return CONFIGS_DIR / f"{text}.yaml"
    names = list_builtin_configs()
    if is_name(text):
        raise ConfigError(f"--config {text!r} is neither a file nor a built-in config ({', '.join(names)})."
                          f"{suggest(text, names)}")
    what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
    raise ConfigError(f"config file {text} {what}; give a YAML file or a built-in config ({', '.join(names)})")


def resolve_vocab_path(value: str, base: Path | None = None) -> str:
    """Resolve a vocabulary given as a path or as the name of a built-in one (goh2021, imagenet-classes).

    Raises:
        ConfigError: A name that is no built-in vocabulary (the message lists them).
    """
    if not is_name(value):
        return resolve_path(value, base)
    if not (VOCAB_DIR / f"{value}.yaml").is_file():
        names = list_builtin_vocabularies()
        raise ConfigError(f"vocabulary {value!r} is neither a YAML file nor a built-in vocabulary "
                          f"({', '.join(names)}).{suggest(value, names)}")
    return str(VOCAB_DIR / f"{value}.yaml")


def resolve_pretrained(value: Any, base: Path) -> Any:
    """A `pretrained` checkpoint path written relative to the config file, made absolute; tags
    and seed:N stay as they are."""
    if not isinstance(value, str) or is_untrained(value) or Path(value).is_absolute():
        return value
    candidate = base / expand_path(value)
    return str(candidate) if candidate.is_file() else value


def parse_models(raw: Mapping[str, Any]) -> tuple[ModelSpec, ...]:
    if "models" in raw and ("model" in raw or "pretrained" in raw):
        raise ConfigError("give either `models` (a list) or `model` + `pretrained`, not both")
    if "models" in raw:
        specs = []
        for item in as_list(raw["models"]):
            if isinstance(item, str):
                specs.append(ModelSpec(as_str("models", item)))
                continue
            if not isinstance(item, Mapping):
                raise ConfigError(f"each entry of `models` must be a mapping with `name` and `pretrained`, got {item!r}")
            unknown = {str(k) for k in item} - {"name", "pretrained"}
            if unknown:
                key = sorted(unknown)[0]
                raise ConfigError(f"unknown key `{key}` in a `models` entry.{suggest(key, ['name', 'pretrained'])}")
            if "name" not in item:
                raise ConfigError(f"a `models` entry has no `name`: {dict(item)!r}")
            pretrained = item.get("pretrained")
            specs.append(ModelSpec(as_str("name", item["name"]), None if pretrained is None else as_str("pretrained", pretrained)))
        return tuple(specs)
    if "model" not in raw:
        return ()
    names = [as_str("model", m) for m in as_list(raw["model"])]
    pretrained_raw = raw.get("pretrained")
    pretrained = [None if p is None else as_str("pretrained", p) for p in as_list(pretrained_raw)]
    if len(pretrained) == 1:
        pretrained = pretrained * len(names)
    if len(pretrained) != len(names):
        raise ConfigError(f"`pretrained` has {len(pretrained)} entries for {len(names)} models")
    return tuple(ModelSpec(n, p) for n, p in zip(names, pretrained))


def _parse_data(raw: Mapping[str, Any], base: Path | None) -> DataSpec:
    source = as_str("data", raw["data"])
    if not source.startswith("hf:"):
        source = resolve_path(source, base)
    labels = raw.get("labels")
    return DataSpec(
        source=source,
        labels=None if labels is None else resolve_path(as_str("labels", labels), base),
        hf_split=as_str("hf_split", raw.get("hf_split", "validation")),
        hf_image_column=as_str("hf_image_column", raw.get("hf_image_column", "image")),
        hf_label_column=as_str("hf_label_column", raw.get("hf_label_column", "label")),
    )


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


def build_run_config(raw: Mapping[str, Any], base: Path | None = None) -> RunConfig:
    """Validate a mapping of run settings (YAML keys) and build a RunConfig.

    Args:
        raw: Settings keyed as in a run-config YAML file. Unknown keys are an error.
        base: Directory that relative paths are resolved against (the YAML file's folder).

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a run config must be a mapping of keys to values, got {type(raw).__name__}")
    for key in raw:
        if not isinstance(key, str) or key not in _RUN_KEYS:
            raise ConfigError(f"unknown config key `{key}`.{suggest(str(key), _RUN_KEYS)}")
    for a, b in (("fraction", "fractions"), ("placement", "placements")):
        if a in raw and b in raw:
            raise ConfigError(f"give `{a}` or `{b}`, not both")
    if "data" not in raw or raw["data"] is None:
        raise ConfigError("no data given; set `data` in the config or pass --data")

    fractions_raw = raw.get("fractions", raw.get("fraction", [0.07]))
    placements_raw = raw.get("placements", raw.get("placement", ["paper8"]))
    templates = as_str("templates", raw.get("templates", "openai"))
    if templates not in BUILTIN_TEMPLATES:
        templates = resolve_path(templates, base)
    out = raw.get("out")
    return RunConfig(
        models=parse_models(raw),
        data=_parse_data(raw, base),
        vocab=resolve_vocab_path(as_str("vocab", raw.get("vocab", "goh2021")), base),
        limit=as_int("limit", raw.get("limit"), allow_none=True),
        fractions=tuple(as_float("fractions", f) for f in as_list(fractions_raw)),
        placements=tuple(as_enum("placement", Placement, p) for p in as_list(placements_raw)),
        styles=build_styles(raw, base),
        templates=templates,
        batch_size=as_batch_size(raw.get("batch_size", "auto")),
        device=as_str("device", raw.get("device", "auto")),
        precision=as_enum("precision", Precision, raw.get("precision", "fp32")),
        seed=as_int("seed", raw.get("seed", 0)),
        out=None if out is None else resolve_path(as_str("out", out), base),
        cache_dir=str(expand_path(as_str("cache_dir", raw.get("cache_dir", str(DEFAULT_CACHE_DIR))))),
        workers=as_int("workers", raw.get("workers", 2)),
        chunk_size=as_int("chunk_size", raw.get("chunk_size", 1000)),
        compile=as_bool("compile", raw.get("compile", False)),
        executor=as_enum("executor", Executor, raw.get("executor", "local")),
        ray_address=None if raw.get("ray_address") is None else as_str("ray_address", raw["ray_address"]),
        ray_timeout=as_float("ray_timeout", raw.get("ray_timeout", DEFAULT_RAY_TIMEOUT)),
        shard=parse_shard(raw.get("shard")),
        defences=parse_defence_texts(raw.get("defences", raw.get("defence", ["none"])), base),
    )


def parse_defence_texts(value: Any, base: Path | None) -> tuple[str, ...]:
    """The canonical texts of the `defences` values (files resolved against `base`)."""
    from typoattack.defences.spec import parse_defences

    return tuple(s.text for s in parse_defences(value, base))


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} file {path} must hold a mapping of keys to values, not a {type(doc).__name__}")
    return doc


def load_run_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Load a run config YAML and apply overrides (CLI flags win over YAML keys).

    Args:
        path: The YAML file, or None to build the config from the overrides alone.
        overrides: Settings keyed as in the YAML file; None values are ignored. Relative paths in
            overrides are taken as given (relative to the working directory).

    Returns:
        The validated config.
    """
    raw: dict[str, Any] = {}
    base: Path | None = None
    if path is not None:
        path = resolve_config_path(path)
        raw = load_yaml_mapping(path, "run config")
        base = path.parent
        if "pretrained" in raw:
            raw["pretrained"] = ([resolve_pretrained(v, base) for v in raw["pretrained"]]
                                 if isinstance(raw["pretrained"], list) else resolve_pretrained(raw["pretrained"], base))
        if isinstance(raw.get("models"), list):
            raw["models"] = [{**m, "pretrained": resolve_pretrained(m.get("pretrained"), base)}
                             if isinstance(m, Mapping) and "pretrained" in m else m for m in raw["models"]]
        # Paths in the YAML are relative to the YAML file; make them absolute before merging.
        for key in ("data", "labels", "out", "templates", "cache_dir"):
            value = raw.get(key)
            if isinstance(value, str) and value.strip() and not (key == "data" and value.startswith("hf:")) and not (key == "templates" and value in BUILTIN_TEMPLATES):
                raw[key] = resolve_path(value, base)
        if isinstance(raw.get("vocab"), str):
            raw["vocab"] = resolve_vocab_path(raw["vocab"], base)
        if isinstance(raw.get("font"), str):
            raw["font"] = resolve_font_path(raw["font"], base)
        elif isinstance(raw.get("font"), list):
            raw["font"] = [resolve_font_path(f, base) if isinstance(f, str) else f for f in raw["font"]]
        if "defences" in raw or "defence" in raw:
            raw["defences"] = list(parse_defence_texts(raw.pop("defences", raw.pop("defence", None)), base))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "models" in raw and "pretrained" in overrides and "model" not in overrides:
        entries = raw["models"] if isinstance(raw["models"], list) else [raw["models"]]
        if len(entries) != 1:
            raise ConfigError("--pretrained alone is ambiguous: the config lists several models; pass --model too")
        entry = entries[0]
        name = entry.get("name") if isinstance(entry, Mapping) else entry
        raw.pop("models")
        raw["model"] = name
    for key, value in overrides.items():
        if key in ("model", "pretrained") and "models" in raw:
            raw.pop("models")
        if key in ("fractions", "placement"):
            raw.pop("fraction" if key == "fractions" else "placements", None)
        raw[key] = value
    return build_run_config(raw, base=None)


def load_vocab(path: str | Path) -> Vocabulary:
    """Load an attack vocabulary YAML.

    The file holds `name` and `words`, a list of `{text: ..., target: ...}` where the target is an
    open_clip ImageNet class name or index.

    Raises:
        ConfigError: The file is missing or malformed, the list is empty, a word repeats, or a
            target matches no class.
    """
    from typoattack.data.classes import resolve_class

    doc = load_yaml_mapping(path, "vocabulary")
    unknown = set(doc) - {"name", "description", "source", "words"}
    if unknown:
        key = str(sorted(map(str, unknown))[0])
        raise ConfigError(f"unknown key `{key}` in vocabulary {path}.{suggest(key, ['name', 'description', 'source', 'words'])}")
    words_raw = doc.get("words")
    if not isinstance(words_raw, list) or not words_raw:
        raise ConfigError(f"vocabulary {path} has no words: add `words:` with a list of `{{text, target}}` entries")
    words = []
    seen: set[str] = set()
    for i, item in enumerate(words_raw):
        if not isinstance(item, Mapping) or "text" not in item or "target" not in item:
            raise ConfigError(f"word {i + 1} of vocabulary {path} must be a mapping with `text` and `target`")
        extra = set(item) - {"text", "target", "note"}
        if extra:
            key = str(sorted(map(str, extra))[0])
            raise ConfigError(f"unknown key `{key}` in word {i + 1} of vocabulary {path}.{suggest(key, ['text', 'target', 'note'])}")
        text = as_str("text", item["text"])
        if len(text) > 40:
            raise ConfigError(f"word {text!r} in vocabulary {path} is longer than 40 characters")
        if text in seen:
            raise ConfigError(f"word {text!r} appears twice in vocabulary {path}")
        seen.add(text)
        try:
            target = resolve_class(item["target"])
        except ConfigError as e:
            raise ConfigError(f"word {text!r} in vocabulary {path}: {e}") from None
        words.append(AttackWord(text=text, target_index=target))
    name = as_str("name", doc.get("name", Path(path).stem))
    return Vocabulary(name=name, words=tuple(words), path=str(path))


def has_one_placeholder(template: str) -> bool:
    """True when `template` holds exactly one `{}` and no other replacement field (`{{`/`}}` are
    literal braces)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError:
        return False
    return fields == [""]


def load_templates(name_or_path: str) -> tuple[str, ...]:
    """Return zero-shot prompt templates as format strings with one `{}` for the class name.

    Args:
        name_or_path: 'openai' (open_clip's 80 ImageNet templates), 'simple' (its 7) or a YAML file
            holding a list of strings (or a mapping with `templates:`) using `{}` or `{c}`.
    """
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if name_or_path == "openai":
        return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    if name_or_path == "simple":
        return tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"templates file {path} does not exist (or use 'openai' / 'simple')")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"templates file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"templates file {path} is not UTF-8 text") from None
    if isinstance(doc, Mapping):
        doc = doc.get("templates")
    if not isinstance(doc, list) or not doc or not all(isinstance(t, str) for t in doc):
        raise ConfigError(f"templates file {path} must hold a non-empty list of strings")
    templates = []
    for t in doc:
        t = t.replace("{c}", "{}")
        if not has_one_placeholder(t):
            raise ConfigError(f"template {t!r} in {path} must contain exactly one {{}} (or {{c}}) for the class name "
                              "and no other braces (write {{ and }} for literal ones)")
        templates.append(t)
    return tuple(templates)
