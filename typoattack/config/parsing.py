"""Parsing helpers for the YAML and flag values of every config: typed scalars, colours, paths
(relative to the YAML file), built-in names, models, data sources and templates. Reads no model code."""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from PIL import ImageColor

from typoattack.config.types import DataSpec, ModelSpec, ShardSpec, is_untrained
from typoattack.constants import AUTO_FONT, BABEL_PREFIX, CLASSES_VOCAB, CONFIGS_DIR, FONTS_DIR, RANDOM_CLASS_WORD, SAMPLE_DIR, VOCAB_DIR
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

SAMPLE_DATA = "sample"
"""The data name of the 500 ImageNet images the package ships (`--data sample`)."""
DEFAULT_BACKEND = "open_clip"
"""The backend of a model whose config names none."""
NO_PRETRAINED = "-"
"""The `pretrained` value of a model that takes none (a transformers model beside open_clip ones)."""

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
    """Resolve a font given as a path or as a file name shipped in fonts/ (`auto` stays as written)."""
    if value == AUTO_FONT:
        return value
    path = Path(resolve_path(value, base))
    if not path.exists() and (FONTS_DIR / value).is_file():
        return str(FONTS_DIR / value)
    return str(path)


def is_name(value: str) -> bool:
    """True when `value` names a built-in file (no folder, no .yaml suffix) rather than a path."""
    return "/" not in value and "\\" not in value and not value.endswith((".yaml", ".yml"))


def list_builtin_configs(folder: Path | None = CONFIGS_DIR) -> list[str]:
    """Names of the run configs shipped in the package in `folder` (`--config NAME`; None: none)."""
    return [] if folder is None else sorted(p.stem for p in folder.glob("*.yaml"))


def list_builtin_vocabularies() -> list[str]:
    """Names of the vocabularies shipped in the package (`--vocab NAME`)."""
    return sorted(p.stem for p in VOCAB_DIR.glob("*.yaml"))


def resolve_config_path(value: str | Path, folder: Path | None = CONFIGS_DIR) -> Path:
    """A run config given as a YAML path or as the name of a built-in one in `folder`.

    Raises:
        ConfigError: No such file, and no built-in config of that name (the message lists them).
    """
    text = str(value).strip()
    path = expand_path(text)
    if path.is_file():
        return path.resolve()
    if is_name(text) and folder is not None and (folder / f"{text}.yaml").is_file():
        return folder / f"{text}.yaml"
    names = list_builtin_configs(folder)
    known = f"a built-in config ({', '.join(names)})" if names else "a built-in config (this command has none)"
    if is_name(text):
        raise ConfigError(f"--config {text!r} is neither a file nor {known}.{suggest(text, names)}")
    what = "is a folder, not a YAML file" if path.is_dir() else "does not exist"
    raise ConfigError(f"config file {text} {what}; give a YAML file or {known}")


def resolve_vocab_path(value: str, base: Path | None = None) -> str:
    """Resolve a vocabulary given as a path or as the name of a built-in one (goh2021, imagenet-classes);
    `classes` and `random-class` (made from the run's class set) stay as written, `babel:LANG` with LANG
    in lower case.

    Raises:
        ConfigError: A name that is no built-in vocabulary (the message lists them).
    """
    if value in (CLASSES_VOCAB, RANDOM_CLASS_WORD):
        return value
    if value.lower().startswith(BABEL_PREFIX):  # Babel-ImageNet's class names in a language (data.babel)
        return BABEL_PREFIX + value[len(BABEL_PREFIX):].strip().lower()
    return resolve_builtin_yaml(value, VOCAB_DIR, "vocabulary", base)


def resolve_builtin_yaml(value: str, folder: Path, what: str, base: Path | None = None) -> str:
    """A YAML file given as a path (relative to `base`) or as the name of one shipped in `folder`.

    Raises:
        ConfigError: A name that is none of the shipped files (the message lists them).
    """
    if not is_name(value):
        return resolve_path(value, base)
    if not (folder / f"{value}.yaml").is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"{what} {value!r} is neither a YAML file nor a built-in {what} "
                          f"({', '.join(names)}).{suggest(value, names)}")
    return str(folder / f"{value}.yaml")


def check_distinct(key: str, values: Sequence[Any], empty_hint: str) -> None:
    """Raise ConfigError when the values of setting `key` are none (`empty_hint` says what to give)
    or one is given twice."""
    if not values:
        raise ConfigError(f"`{key}` is empty; {empty_hint}")
    if len(set(values)) != len(values):
        raise ConfigError(f"`{key}` lists a value twice: {list(values)}")


def resolve_pretrained(value: Any, base: Path) -> Any:
    """A `pretrained` checkpoint path written relative to the config file, made absolute; tags
    and seed:N stay as they are."""
    if not isinstance(value, str) or is_untrained(value) or Path(value).is_absolute():
        return value
    candidate = base / expand_path(value)
    return str(candidate) if candidate.is_file() else value


def parse_models(raw: Mapping[str, Any]) -> tuple[ModelSpec, ...]:
    """The models of `models` (a list of names or `{name, pretrained, backend}` mappings), or of
    `model` with `pretrained` and `backend` (each one value for all models or one per model).

    Raises:
        ConfigError: Both forms given, an unknown key in an entry, or list lengths that differ.
    """
    if "models" in raw and any(k in raw for k in ("model", "pretrained", "backend")):
        raise ConfigError("give either `models` (a list) or `model` + `pretrained` (+ `backend`), not both")
    if "models" in raw:
        specs = []
        keys = ["name", "pretrained", "backend"]
        for item in as_list(raw["models"]):
            if isinstance(item, str):
                specs.append(ModelSpec(as_str("models", item)))
                continue
            if not isinstance(item, Mapping):
                raise ConfigError(f"each entry of `models` must be a mapping with `name` and `pretrained`, got {item!r}")
            unknown = {str(k) for k in item} - set(keys)
            if unknown:
                key = sorted(unknown)[0]
                raise ConfigError(f"unknown key `{key}` in a `models` entry.{suggest(key, keys)}")
            if "name" not in item:
                raise ConfigError(f"a `models` entry has no `name`: {dict(item)!r}")
            pretrained = item.get("pretrained")
            specs.append(ModelSpec(as_str("name", item["name"]),
                                   None if pretrained is None else as_str("pretrained", pretrained),
                                   as_str("backend", item.get("backend", DEFAULT_BACKEND))))
        return tuple(specs)
    if "model" not in raw:
        return ()
    names = [as_str("model", m) for m in as_list(raw["model"])]

    def per_model(key: str, default: Any) -> list[Any]:
        given = as_list(raw.get(key, default))
        if key == "pretrained" and any(isinstance(v, str) and not v.strip() for v in given):
            raise ConfigError(f"`pretrained` is empty; give a tag, a checkpoint file, seed:N, or {NO_PRETRAINED} for a "
                              "model that takes none (a transformers model)")
        values = [None if v is None else as_str(key, v) for v in given]
        if len(values) == 1:
            values = values * len(names)
        if len(values) != len(names):
            raise ConfigError(f"`{key}` has {len(values)} entries for {len(names)} models; give one for all models "
                              "or one per --model")
        return values

    # `-` is "no pretrained tag" (a transformers model), so one --pretrained per --model can mix families.
    pretrained = [None if p == NO_PRETRAINED else p for p in per_model("pretrained", None)]
    backends = per_model("backend", DEFAULT_BACKEND)
    return tuple(ModelSpec(n, p, b or DEFAULT_BACKEND) for n, p, b in zip(names, pretrained, backends))


def resolve_data_source(value: str) -> str:
    """A data source as given (`hf:NAME`, a path with `~` expanded), or the folder of the images the
    package ships for `sample`."""
    if value == SAMPLE_DATA:
        return str(SAMPLE_DIR)
    return value if value.startswith("hf:") else str(expand_path(value))


def parse_data(raw: Mapping[str, Any], default_split: str = "validation") -> DataSpec:
    """The DataSpec of the keys `data`, `labels`, `hf_split`, `hf_image_column` and `hf_label_column`
    (relative paths of a YAML file were made absolute when it was read).

    Raises:
        ConfigError: `data` is missing, or a value is not a string.
    """
    if raw.get("data") is None:
        raise ConfigError("no data given; set `data` in the config or pass --data")
    source = resolve_data_source(as_str("data", raw["data"]))
    labels = raw.get("labels")
    return DataSpec(
        source=source,
        labels=None if labels is None else str(expand_path(as_str("labels", labels))),
        hf_split=as_str("hf_split", raw.get("hf_split", default_split)),
        hf_image_column=as_str("hf_image_column", raw.get("hf_image_column", "image")),
        hf_label_column=as_str("hf_label_column", raw.get("hf_label_column", "label")),
    )


MAX_YAML_VALUES = 1_000_000
"""A YAML document may hold this many values once its aliases (`*name`) are expanded: far above any
config, far below a "billion laughs" document whose few aliases expand to gigabytes when the value
is read, printed or hashed."""


def count_expanded_values(doc: Any, limit: int = MAX_YAML_VALUES) -> int:
    """The number of values `doc` holds with shared (aliased) lists and mappings counted each time
    they appear; counting stops past `limit`. Linear in the distinct objects (memoised by id)."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (list, dict)):
            return 1
        if id(value) in sizes:
            return sizes[id(value)]
        sizes[id(value)] = limit + 1  # a cycle counts as too large
        items = list(value.keys()) + list(value.values()) if isinstance(value, dict) else value
        total = 1
        for item in items:
            total += size(item)
            if total > limit:
                break
        sizes[id(value)] = min(total, limit + 1)
        return sizes[id(value)]

    return size(doc)


def read_yaml(path: Path, what: str) -> Any:
    """The document of an existing YAML file; errors name the file, the line and the problem."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} file {path} is not UTF-8 text") from None
    if count_expanded_values(doc) > MAX_YAML_VALUES:
        raise ConfigError(f"{what} file {path} expands to more than {MAX_YAML_VALUES:,} values through its aliases "
                          "(`*name`); refused (a YAML alias bomb?)")
    return doc


def load_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {path} does not exist")
    doc = read_yaml(path, what)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{what} file {path} must hold a mapping of keys to values, not a {type(doc).__name__}")
    return doc


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
        name_or_path: 'openai' (open_clip's 80 ImageNet templates), 'simple' (its 7), 'photo' (the
            one prompt "a photo of a {}.") or a YAML file holding a list of strings (or a mapping
            with `templates:`) using `{}` or `{c}`.
    """
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if name_or_path == "openai":
        return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
    if name_or_path == "simple":
        return tuple(t("{}") for t in SIMPLE_IMAGENET_TEMPLATES)
    if name_or_path == "photo":
        return ("a photo of a {}.",)
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"templates file {path} does not exist (or use 'openai' / 'simple')")
    doc = read_yaml(path, "templates")
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
