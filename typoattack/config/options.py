"""Options declared once, on the config dataclasses: the YAML keys a config reads, their CLI flags and
help, and how a mapping of them becomes field values.

A field carries its options in its metadata (`option(...)` for a field read from one key,
`options(...)` for a field built from several keys, such as `models` from `model`, `pretrained` and
`backend`). From them come, with nothing kept beside:

- the keys a YAML config may hold (`list_keys`), and the error for any other;
- the CLI flags of a task's command (`typoattack.cli` builds each command from `list_options`), with the
  `[default: ...]` of its help taken from the field's default (`Option.default_text`);
- the parsing of a mapping into field values (`parse_fields`): a field read from one key is coerced by
  its type (int, float, str, bool, an Enum, a tuple of one of them) or by its `parse` function; a
  field built from several keys by its `build` function.

A YAML key and its flag are the same name (`fraction` and `--fraction`); a key may have other YAML
spellings (`fractions`), never given together. This module imports no Typer and no model code.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Union

from typoattack.config.parsing import as_bool, as_enum, as_float, as_int, as_list, as_str
from typoattack.errors import ConfigError


class Panel(str, Enum):
    """The help panels: every command groups its options the same way."""

    RUN = "Config and output"
    MODEL = "Model"
    DATA = "Data"
    ATTACK = "Attack"
    QUESTIONS = "Questions"
    DEFENCES = "Defences"
    EXECUTION = "Execution"


NO_DEFAULT = "\0"
"""`Option.default` when the help shows no default (the field's default is not worth printing)."""


@dataclass(frozen=True)
class Option:
    """One setting as a YAML key and a CLI flag.

    Attributes:
        key: The YAML key; the flag is `--key` with `_` as `-` (`outline_width`: `--outline-width`).
            Empty in a field's metadata: the field's name.
        help: One or two lines for `--help` (80 columns).
        metavar: What the value looks like (`INT`, `PATH|NAME`); short enough not to wrap.
        panel: The help panel.
        type: The type of one value (int, float, str, bool, Path or an Enum); None: from the field.
        repeat: The flag may be given several times (a list in YAML).
        default: The `[default: ...]` text; None: from the field's default; NO_DEFAULT: none shown.
        aliases: Other YAML spellings of the key (`fractions` for `fraction`).
        short: A one-letter flag (`-o`).
    """

    key: str = ""
    help: str = ""
    metavar: str = ""
    panel: Panel = Panel.RUN
    type: type | None = None
    repeat: bool | None = None
    default: str | None = None
    aliases: tuple[str, ...] = ()
    short: str | None = None

    @property
    def flag(self) -> str:
        """The long CLI flag, `--outline-width`."""
        return "--" + self.key.replace("_", "-")

    @property
    def keys(self) -> tuple[str, ...]:
        """Every YAML spelling: the key, then its aliases."""
        return (self.key, *self.aliases)


_OPTIONS, _PARSE, _BUILD = "typoattack.options", "typoattack.parse", "typoattack.build"


def option(key: str = "", *, help: str, metavar: str, panel: Panel, type: type | None = None,
           repeat: bool | None = None, default: str | None = None, aliases: tuple[str, ...] = (),
           short: str | None = None, parse: Callable[[Any], Any] | None = None,
           metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Field metadata of a setting read from one key (the field's name unless `key` is given).

    Args:
        parse: Turns one given value (each value, for a repeated option) into the field's value,
            instead of coercion by type; applied to the field's default too (e.g. a built-in name
            resolved to its file).
        metadata: Other metadata of the field (e.g. `{"fingerprint": False}`).
        The others: those of `Option`.
    """
    opt = Option(key, help, metavar, panel, type, repeat, default, aliases, short)
    return {**(metadata or {}), _OPTIONS: (opt,), _PARSE: parse}


def options(*opts: Option, build: Callable[[Mapping[str, Any], type], Any],
            metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Field metadata of a setting built from several keys (`build(raw, config_class)` returns the
    field's value from the whole mapping; it sees only the keys of `opts`)."""
    return {**(metadata or {}), _OPTIONS: tuple(opts), _BUILD: build}


def _unwrap(hint: Any) -> tuple[Any, bool, bool]:
    """The type of one value of a field's type hint, whether it holds several (a tuple), and whether
    it may be None."""
    args = typing.get_args(hint)
    nullable = typing.get_origin(hint) in (Union, types.UnionType) and type(None) in args
    if nullable:
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return args[0], True, nullable
    return hint, False, nullable


@functools.cache
def _field_options(cls: type) -> tuple[tuple[dataclasses.Field[Any], tuple[Option, ...], bool], ...]:
    """(field, its options, whether it may be None) for every field of `cls` with options."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        opts = f.metadata.get(_OPTIONS)
        if not opts:
            continue
        scalar, several, nullable = _unwrap(hints[f.name])
        if _BUILD not in f.metadata:
            (opt,) = opts
            opts = (dataclasses.replace(
                opt, key=opt.key or f.name,
                type=opt.type or (scalar if isinstance(scalar, type) else str),
                repeat=several if opt.repeat is None else opt.repeat,
                default=_format_default(f) if opt.default is None else opt.default),)
        else:
            opts = tuple(dataclasses.replace(o, type=o.type or str, repeat=bool(o.repeat),
                                             default=NO_DEFAULT if o.default is None else o.default) for o in opts)
        out.append((f, opts, nullable))
    return tuple(out)


def _format_default(f: dataclasses.Field[Any]) -> str:
    """The `[default: ...]` text of a field's default: enums by value, several values joined, no text
    for None, False or a default made by a factory."""
    value = f.default
    if value is dataclasses.MISSING or value is None or isinstance(value, bool):
        return NO_DEFAULT

    def text(v: Any) -> str:
        return v.value if isinstance(v, Enum) else f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(map(text, value)) if isinstance(value, tuple) else text(value)


def list_options(cls: type) -> tuple[Option, ...]:
    """Every option of a config class, in field order (a field's own options in their order)."""
    return tuple(o for _, opts, _ in _field_options(cls) for o in opts)


def list_keys(cls: type) -> tuple[str, ...]:
    """Every YAML key a config class reads (each option's key and aliases)."""
    return tuple(k for o in list_options(cls) for k in o.keys)


def get_option(cls: type, key: str) -> Option:
    """The option of `cls` with this YAML key.

    Raises:
        KeyError: `cls` has no such option.
    """
    for o in list_options(cls):
        if o.key == key:
            return o
    raise KeyError(key)


def get_given_key(raw: Mapping[str, Any], opt: Option) -> str | None:
    """The spelling of `opt` that `raw` holds, or None.

    Raises:
        ConfigError: It holds two spellings (`fraction` and `fractions`).
    """
    given = [k for k in opt.keys if k in raw]
    if len(given) > 1:
        raise ConfigError(f"give `{given[0]}` or `{given[1]}`, not both")
    return given[0] if given else None


def coerce(opt: Option, value: Any) -> Any:
    """One value of `opt` as its type (a ConfigError names the key)."""
    kind = opt.type
    if isinstance(kind, type) and issubclass(kind, Enum):
        return as_enum(opt.key, kind, value)
    if kind is bool:
        return as_bool(opt.key, value)
    if kind is int:
        return as_int(opt.key, value)
    if kind is float:
        return as_float(opt.key, value)
    return as_str(opt.key, value)


def parse_fields(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The value of every field of `cls` that has options, from a mapping of YAML keys (absent keys:
    the field's default).

    Raises:
        ConfigError: A value has the wrong type, or a key is given in two spellings.
    """
    values: dict[str, Any] = {}
    for f, opts, nullable in _field_options(cls):
        for opt in opts:
            get_given_key(raw, opt)
        if _BUILD in f.metadata:
            values[f.name] = f.metadata[_BUILD](raw, cls)
            continue
        (opt,) = opts
        parse = f.metadata.get(_PARSE) or functools.partial(coerce, opt)
        key = get_given_key(raw, opt)
        if key is None:
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            if default is dataclasses.MISSING:
                continue
            value, given = default, False
        else:
            value, given = raw[key], True
        if (value is None and (nullable or not given)) or (not given and f.metadata.get(_PARSE) is None):
            values[f.name] = value
        elif opt.repeat:
            values[f.name] = tuple(parse(v) for v in as_list(value))
        else:
            values[f.name] = parse(value)
    return values


def to_yaml_value(value: Any) -> Any:
    """A CLI value as a YAML mapping holds it (enums by value, paths as text, an empty list as unset)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [to_yaml_value(v) for v in value] or None
    return value


__all__ = ["NO_DEFAULT", "Option", "Panel", "coerce", "get_given_key", "get_option", "list_keys", "list_options",
           "option", "options", "parse_fields", "to_yaml_value"]
