"""The settings every task shares, declared once, with one fingerprint rule and one loader.

A task's config is a frozen dataclass that extends `RunSettings` (models, seed, device, precision,
batching, output, executor, shards) and the mixins of what it reads and how it scores: `DataSettings`
(data, limit), `ZeroShotSettings` (templates, defences), both together `ImageSetSettings`, and those of
`config.attack` and `config.datasets`. Every field is declared in exactly one class. `load_config`
reads a YAML file (paths relative to it), applies the CLI flags over it (YAML < flags) and hands the
mapping to the task's builder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TypeVar

from typoattack.cluster import DEFAULT_RAY_TIMEOUT
from typoattack.config.defences import get_fingerprint_text, parse_defences
from typoattack.config.parsing import (
    SAMPLE_DATA, as_batch_size, as_bool, as_enum, as_float, as_int, as_list, as_str, load_yaml_mapping, parse_models, parse_shard,
    resolve_config_path, resolve_path, resolve_pretrained,
)
from typoattack.config.types import (
    BUILTIN_TEMPLATES, FAMILY_TEMPLATES, DataSpec, Executor, ModelSpec, Precision, ShardSpec, get_model_warnings,
)
from typoattack.constants import CONFIGS_DIR, DEFAULT_CACHE_DIR, DEMO_MODEL, DEMO_PRETRAINED
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

C = TypeVar("C", bound="RunSettings")
_SPEED = {"fingerprint": False}
"""Field metadata of settings that change how fast a run goes, never its records."""
DEFAULT_CHUNK_SIZE = 1000
"""Items per cell when `chunk_size` is not set (fewer where a cell would hold too many records)."""
MAX_CELL_RECORDS = 1_000_000
"""Records a cell holds at most when `chunk_size` is not set (a cell's records are built in memory)."""

RUN_KEYS = ("models", "model", "pretrained", "backend", "seed", "batch_size", "device", "precision", "out",
            "cache_dir", "workers", "chunk_size", "compile", "executor", "ray_address", "ray_timeout", "shard")
DATA_KEYS = ("data", "labels", "hf_split", "hf_image_column", "hf_label_column", "limit")
ZERO_SHOT_KEYS = ("templates", "defences", "defence")
IMAGE_SET_KEYS = (*DATA_KEYS, *ZERO_SHOT_KEYS)


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every run has: the models, the seed, and how (not what) to compute.

    Attributes:
        models: The models to evaluate, in turn.
        seed: Keys every random choice (subsets, placements, jitter) per item.
        batch_size: Images per encoder batch (None: auto, 1024 on CUDA halved on out-of-memory, 256 on CPU).
        device: auto, cpu, cuda or cuda:N.
        precision: Encoder precision (bf16/fp16 through autocast on CUDA).
        out: The run folder.
        cache_dir: Cache of canvases, masks and classifiers.
        workers: Decoding processes (or threads).
        chunk_size: Items per cell (one model x one chunk), the unit of commit, resume and sharding;
            None: chosen per run by `resolve_chunk_size`.
        compile: torch.compile the image encoder.
        executor: Where the cells run.
        ray_address: Ray cluster address (None: RAY_ADDRESS, else a local cluster).
        ray_timeout: Seconds to wait for the Ray cluster before giving up.
        shard: Evaluate only this shard of the cells (`typoattack merge` combines the shards).
    """

    models: tuple[ModelSpec, ...]
    seed: int = 0
    batch_size: int | None = field(default=None, metadata=_SPEED)
    device: str = field(default="auto", metadata=_SPEED)
    precision: Precision = Precision.FP32
    out: str | None = field(default=None, metadata=_SPEED)
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata=_SPEED)
    workers: int = field(default=2, metadata=_SPEED)
    chunk_size: int | None = None
    compile: bool = field(default=False, metadata=_SPEED)
    executor: Executor = field(default=Executor.LOCAL, metadata=_SPEED)
    ray_address: str | None = field(default=None, metadata=_SPEED)
    ray_timeout: float = field(default=DEFAULT_RAY_TIMEOUT, metadata=_SPEED)
    shard: ShardSpec | None = field(default=None, metadata=_SPEED)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model given; pass --model (and --pretrained) or set `model` in the config (the demo "
                              f"model, a toy that shows the pipeline: --model {DEMO_MODEL} --pretrained {DEMO_PRETRAINED})")
        if len(set(self.models)) != len(self.models):
            raise ConfigError("the same model and pretrained weights are listed twice")
        if self.seed < 0:
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer or auto, got {self.batch_size}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be positive, got {self.chunk_size}")
        if not self.ray_timeout > 0:
            raise ConfigError(f"ray_timeout must be a number of seconds > 0, got {self.ray_timeout}")

    @property
    def model_warnings(self) -> list[str]:
        """Warnings about the run's models (random weights, the demo model); empty for a real benchmark."""
        return get_model_warnings((m.name, m.pretrained) for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config (enums as values, tuples as lists, nested
        dataclasses as dicts)."""
        return _to_plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """JSON of the settings that determine the records (every field not marked as a speed setting).

        An unset `chunk_size` reads as DEFAULT_CHUNK_SIZE, the value it stood for before cells were
        sized by their records, so those runs keep their fingerprint (and resume). Where the rule
        makes cells smaller (many conditions), the run shares the fingerprint of `chunk_size: 1000`;
        resuming one from the other's folder matches chunks by their items and recomputes the others.
        """
        speed = {f.name for f in dataclasses.fields(self) if f.metadata.get("fingerprint") is False}
        doc = {k: v for k, v in self.to_dict().items() if k not in speed}
        if doc["chunk_size"] is None:
            doc["chunk_size"] = DEFAULT_CHUNK_SIZE
        return json.dumps(doc, sort_keys=True)


@dataclass(frozen=True)
class ChunkSize:
    """How many items each cell of a run holds, and why (run.json `chunk_size`).

    Attributes:
        items: Items (images, photos, stimuli) per cell, >= 1; the last cell may hold fewer.
        source: "config" (`chunk_size` or --chunk-size set it) or "auto" (`resolve_chunk_size`).
    """

    items: int
    source: Literal["config", "auto"]

    def to_info(self, unit: str) -> dict[str, Any]:
        """The run.json entry, e.g. {"images": 250, "source": "auto"}; `unit` names the items."""
        return {unit: self.items, "source": self.source}


def resolve_chunk_size(chunk_size: int | None, records_per_item: int) -> ChunkSize:
    """Items per cell: `chunk_size` when set; else DEFAULT_CHUNK_SIZE, or fewer so that a cell holds
    at most MAX_CELL_RECORDS records (at least one item).

    Args:
        chunk_size: The config's `chunk_size` (None: not set).
        records_per_item: Records one item yields in a cell (>= 1): for `eval`, (1 + conditions) x defences.

    Examples:
        998 words x 2 fractions x 2 placements, one defence: 3,993 records per image, 250 images per cell.
    """
    if chunk_size is not None:
        return ChunkSize(chunk_size, "config")
    return ChunkSize(min(DEFAULT_CHUNK_SIZE, max(1, MAX_CELL_RECORDS // max(records_per_item, 1))), "auto")


@dataclass(frozen=True, kw_only=True)
class DataSettings(RunSettings):
    """What the tasks over a set of images add: the images and a subset of them.

    Attributes:
        data: Where the images come from.
        limit: Evaluate a fixed, seeded subset of this many images (None: all).
    """

    data: DataSpec
    limit: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive number of images, got {self.limit}")


@dataclass(frozen=True, kw_only=True)
class ZeroShotSettings(RunSettings):
    """What zero-shot classification adds: the prompt templates and the defences.

    Attributes:
        templates: Zero-shot prompt templates: a built-in name or a YAML file (a task may have its own names).
        defences: Canonical defence texts (`typoattack.config.defences`); `none` is the undefended model.
    """

    templates: str = "openai"
    defences: tuple[str, ...] = ("none",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.defences or len(set(self.defences)) != len(self.defences):
            raise ConfigError(f"`defences` must list distinct defences, got {list(self.defences)}")

    def fingerprint(self) -> str:
        """JSON of the settings that determine the records; defence files by their contents."""
        doc = json.loads(super().fingerprint())
        doc["defences"] = [get_fingerprint_text(d) for d in self.defences]
        return json.dumps(doc, sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class ImageSetSettings(ZeroShotSettings, DataSettings):
    """A set of images classified zero-shot (`eval`, `real`): `DataSettings` and `ZeroShotSettings`."""


def _to_plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def parse_run_settings(raw: Mapping[str, Any], demo_by_default: bool = False) -> dict[str, Any]:
    """The `RunSettings` fields of a config mapping (YAML keys), validated.

    Args:
        raw: The mapping.
        demo_by_default: Run the demo model (`DEMO_MODEL`/`DEMO_PRETRAINED`, a toy that shows the
            pipeline) when no model is given; otherwise no model is an error.

    Raises:
        ConfigError: A value has the wrong type.
    """
    out = raw.get("out")
    models = parse_models(raw)
    if not models and demo_by_default:
        models = (ModelSpec(DEMO_MODEL, DEMO_PRETRAINED),)
    return {
        "models": models,
        "seed": as_int("seed", raw.get("seed", 0)),
        "batch_size": as_batch_size(raw.get("batch_size", "auto")),
        "device": as_str("device", raw.get("device", "auto")),
        "precision": as_enum("precision", Precision, raw.get("precision", "fp32")),
        "out": None if out is None else str(expand_path(as_str("out", out))),
        "cache_dir": str(expand_path(as_str("cache_dir", raw.get("cache_dir", str(DEFAULT_CACHE_DIR))))),
        "workers": as_int("workers", raw.get("workers", 2)),
        "chunk_size": as_int("chunk_size", raw.get("chunk_size"), allow_none=True),
        "compile": as_bool("compile", raw.get("compile", False)),
        "executor": as_enum("executor", Executor, raw.get("executor", "local")),
        "ray_address": None if raw.get("ray_address") is None else as_str("ray_address", raw["ray_address"]),
        "ray_timeout": as_float("ray_timeout", raw.get("ray_timeout", DEFAULT_RAY_TIMEOUT)),
        "shard": parse_shard(raw.get("shard")),
    }


def parse_data_settings(raw: Mapping[str, Any], default_split: str) -> dict[str, Any]:
    """The `DataSettings` fields of a config mapping (relative paths already made absolute).

    Args:
        raw: The mapping.
        default_split: The Hugging Face split when `hf_split` is not given.

    Raises:
        ConfigError: `data` is missing, or a value has the wrong type.
    """
    from typoattack.config.parsing import parse_data

    return {"data": parse_data(raw, default_split), "limit": as_int("limit", raw.get("limit"), allow_none=True)}


def parse_zero_shot(raw: Mapping[str, Any], default_templates: str) -> dict[str, Any]:
    """The `ZeroShotSettings` fields of a config mapping.

    Args:
        raw: The mapping (relative paths already made absolute).
        default_templates: The templates when `templates` is not given.

    Raises:
        ConfigError: A value has the wrong type, a defence is malformed, or both `defences` and `defence` are given.
    """
    if "defences" in raw and "defence" in raw:
        raise ConfigError("give `defences` or `defence`, not both")
    return {
        "templates": as_str("templates", raw.get("templates", default_templates)),
        "defences": tuple(s.text for s in parse_defences(raw.get("defences", raw.get("defence", ["none"])), None)),
    }


def parse_image_set(raw: Mapping[str, Any], default_split: str, default_templates: str) -> dict[str, Any]:
    """The `ImageSetSettings` fields beyond `RunSettings` of a config mapping (`parse_data_settings`
    and `parse_zero_shot`).

    Raises:
        ConfigError: A value has the wrong type, a defence is malformed, or both `defences` and `defence` are given.
    """
    if "defences" in raw and "defence" in raw:
        raise ConfigError("give `defences` or `defence`, not both")
    data = parse_data_settings(raw, default_split)
    return {**data, **parse_zero_shot(raw, default_templates)}


def check_keys(raw: Mapping[str, Any], keys: tuple[str, ...], command: str) -> None:
    """Raise ConfigError for the first key of `raw` that `command` does not take (suggesting the nearest)."""
    for key in raw:
        if not isinstance(key, str) or key not in keys:
            raise ConfigError(f"unknown config key `{key}`.{suggest(str(key), keys)} (`typoattack {command}` takes: "
                              f"{', '.join(keys)})")


def resolve_common_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the paths of the shared keys in a YAML mapping absolute, relative to its folder `base`:
    `pretrained` checkpoint files, `models` entries, `out`, `cache_dir`, `data`/`labels` and
    template and defence files. Tags, `seed:N`, built-in names and `hf:` sources stay as written."""
    if "pretrained" in raw:
        raw["pretrained"] = ([resolve_pretrained(v, base) for v in raw["pretrained"]]
                             if isinstance(raw["pretrained"], list) else resolve_pretrained(raw["pretrained"], base))
    if isinstance(raw.get("models"), list):
        raw["models"] = [{**m, "pretrained": resolve_pretrained(m.get("pretrained"), base)}
                         if isinstance(m, Mapping) and "pretrained" in m else m for m in raw["models"]]
    for key in ("out", "cache_dir", "data", "labels"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip() and not value.startswith("hf:") and value != SAMPLE_DATA:
            raw[key] = resolve_path(value, base)
    templates = raw.get("templates")
    if isinstance(templates, str) and templates.strip() and ("/" in templates or templates.endswith((".yaml", ".yml"))):
        raw["templates"] = resolve_path(templates, base)
    if "defences" in raw or "defence" in raw:
        if "defences" in raw and "defence" in raw:
            raise ConfigError("give `defences` or `defence`, not both")
        raw["defences"] = [s.text for s in parse_defences(raw.pop("defences", raw.pop("defence", None)), base)]


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None,
                build: Callable[[Mapping[str, Any]], C], *, builtin_dir: Path = CONFIGS_DIR,
                resolve_paths: Callable[[dict[str, Any], Path], None] | None = None,
                aliases: Mapping[str, str] | None = None) -> C:
    """Read a config YAML, apply the flags over it (YAML < flags) and build the task's config.

    Args:
        path: A YAML file, the name of a built-in config in `builtin_dir`, or None for flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored. Relative paths in
            overrides are relative to the working directory.
        build: The task's builder: a validated config from a mapping of YAML keys.
        builtin_dir: Where the task's built-in configs are.
        resolve_paths: Makes the task's own path keys absolute (relative to the YAML's folder), after
            `resolve_common_paths`.
        aliases: Flag key -> the other spelling of the same YAML key (`fractions` -> `fraction`),
            dropped from the YAML mapping when the flag is given.

    Raises:
        ConfigError: An unreadable file, an unknown key, a bad value, or `--pretrained` alone
            against a config that lists several models.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path, builtin_dir)
        raw = load_yaml_mapping(file, "run config")
        resolve_common_paths(raw, file.parent)
        if resolve_paths is not None:
            resolve_paths(raw, file.parent)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, alias in {"defences": "defence", **(aliases or {})}.items():
        if key in flags:
            raw.pop(alias, None)
    if "models" in raw and any(k in flags for k in ("model", "pretrained", "backend")):
        if "model" not in flags:
            entries = as_list(raw["models"])
            if len(entries) != 1:
                raise ConfigError("--pretrained alone is ambiguous: the config lists several models; pass --model too")
            entry = entries[0]
            raw["model"] = entry.get("name") if isinstance(entry, Mapping) else entry
            if isinstance(entry, Mapping):
                for key in ("pretrained", "backend"):
                    if key in entry and key not in flags:
                        raw[key] = entry[key]
        raw.pop("models")
    raw.update(flags)
    return build(raw)


def check_templates(templates: str, extra_names: tuple[str, ...] = ()) -> None:
    """Raise ConfigError unless `templates` is a built-in name (or one of `extra_names`) or an existing file."""
    names = (*extra_names, *BUILTIN_TEMPLATES, FAMILY_TEMPLATES)
    if templates not in names and not Path(templates).is_file():
        names = ", ".join(repr(n) for n in names)
        raise ConfigError(f"templates {templates!r} is neither {names} nor an existing YAML file")
