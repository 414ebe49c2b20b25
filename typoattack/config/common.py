"""The settings every task shares, declared once, with one fingerprint rule and one loader.

A task's config is a frozen dataclass that extends `RunSettings` (models, seed, device, precision,
batching, output, executor, shards) and the mixins of what it reads and how it scores: `DataSettings`
(data, limit), `ZeroShotSettings` (templates, defences), both together `ImageSetSettings`, and those of
`config.attack` and `config.datasets`. Every field is declared in exactly one class (a task redeclares a
shared field only to give it its own default or help), with its options (`config.options`): its YAML
key, CLI flag, help and parser. `load_config` reads a YAML file (paths relative to it), applies the
CLI flags over it (YAML < flags) and builds the config with `RunSettings.from_mapping`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from typoattack.cluster import DEFAULT_RAY_TIMEOUT
from typoattack.config.defences import get_fingerprint_text, parse_defences
from typoattack.config.options import Option, Panel, list_keys, list_options, option, options, parse_fields
from typoattack.config.parsing import (
    DEFAULT_BACKEND, SAMPLE_DATA, as_batch_size, as_list, as_str, load_yaml_mapping, parse_data, parse_models,
    parse_shard, resolve_config_path, resolve_path, resolve_pretrained,
)
from typoattack.config.types import (
    BUILTIN_TEMPLATES, FAMILY_TEMPLATES, DataSpec, Executor, ModelSpec, Precision, ShardSpec, get_model_warnings,
)
from typoattack.constants import DEFAULT_CACHE_DIR, DEMO_MODEL, DEMO_PRETRAINED, SAMPLE_DIR
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

C = TypeVar("C", bound="RunSettings")
DEFAULT_CHUNK_SIZE = 1000
"""Items per cell when `chunk_size` is not set (fewer where a cell would hold too many records)."""
MAX_CELL_RECORDS = 1_000_000
"""Records a cell holds at most when `chunk_size` is not set (a cell's records are built in memory)."""
DEFAULT_SPLIT = "validation"
"""The split of a Hugging Face dataset when `hf_split` is not given (a task may have its own)."""
_SPEED = {"fingerprint": False}
"""Field metadata of settings that change how fast a run goes, never its records."""
MODEL, DATA, EXECUTION, RUN = Panel.MODEL, Panel.DATA, Panel.EXECUTION, Panel.RUN


def _expanded(key: str) -> Callable[[Any], str]:
    return lambda value: str(expand_path(as_str(key, value)))


def _build_models(raw: Mapping[str, Any], cls: type) -> tuple[ModelSpec, ...]:
    return parse_models(raw)


MODEL_OPTIONS = (
    Option("model", aliases=("models",), panel=MODEL, metavar="NAME", repeat=True,
           help="Model: an open_clip name, hf-hub:ORG/REPO or local-dir:PATH (open_clip), or a Hub id or "
                "save_pretrained folder (transformers); repeat for several."),
    Option("pretrained", panel=MODEL, metavar="TAG|PATH", repeat=True,
           help="Pretrained tag (e.g. openai), checkpoint file, seed:N, or - for none (a transformers model); "
                "one for all models or one per --model."),
    Option("backend", panel=MODEL, metavar="NAME", repeat=True, default=DEFAULT_BACKEND,
           help="Model family: open_clip or transformers; one for all models or one per --model."),
)
"""The options of `RunSettings.models` (a task with other models declares its own)."""


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every run has: the models, the seed, and how (not what) to compute.

    The class variables describe the task's command: `COMMAND` (its name, in messages), `SUMMARY`
    (its help line), `BUILTIN_DIR` (where its built-in configs are), `TABLE_HELP` (the help of its
    `--table` option; None: it has none).

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

    COMMAND: ClassVar[str] = ""
    SUMMARY: ClassVar[str] = ""
    BUILTIN_DIR: ClassVar[Path | None] = None
    TABLE_HELP: ClassVar[str | None] = None
    DEMO_BY_DEFAULT: ClassVar[Literal["", "sample", "always"]] = ""
    """Without a model: "" is an error; "sample" runs the demo model (`DEMO_MODEL`, a toy that shows the
    pipeline) on the shipped sample (`--data sample`, which needs no weights either); "always" runs it."""

    models: tuple[ModelSpec, ...] = field(metadata=options(*MODEL_OPTIONS, build=_build_models))
    seed: int = field(default=0, metadata=option(
        panel=DATA, metavar="INT", help="Seed of the subset and the random placement."))
    batch_size: int | None = field(default=None, metadata=option(
        panel=EXECUTION, metavar="INT|auto", type=str, default="auto", parse=as_batch_size, metadata=_SPEED,
        help="Images per encoder batch (auto: 1024 on CUDA, halved on out-of-memory; 256 on CPU)."))
    device: str = field(default="auto", metadata=option(
        panel=EXECUTION, metavar="auto|cpu|cuda[:N]", help="Where the models run.", metadata=_SPEED))
    precision: Precision = field(default=Precision.FP32, metadata=option(
        panel=EXECUTION, metavar="fp32|bf16|fp16", help="Encoder precision (autocast on CUDA)."))
    out: str | None = field(default=None, metadata=option(
        panel=RUN, metavar="PATH", short="-o", help="Output folder.", parse=_expanded("out"), metadata=_SPEED))
    cache_dir: str = field(default=str(DEFAULT_CACHE_DIR), metadata=option(
        panel=EXECUTION, metavar="PATH", help="Cache of canvases, masks and classifiers.", parse=_expanded("cache_dir"),
        metadata=_SPEED))
    workers: int = field(default=2, metadata=option(
        panel=EXECUTION, metavar="INT", help="Image decoding processes.", metadata=_SPEED))
    chunk_size: int | None = field(default=None, metadata=option(
        panel=EXECUTION, metavar="INT", default=f"{DEFAULT_CHUNK_SIZE}, fewer past 1 M records",
        help="Items per cell: the unit of commit, resume and sharding (run.json `chunk_size`)."))
    compile: bool = field(default=False, metadata=option(
        panel=EXECUTION, metavar=" ", help="torch.compile the image encoder.", metadata=_SPEED))
    executor: Executor = field(default=Executor.LOCAL, metadata=option(
        panel=EXECUTION, metavar="local|ray", metadata=_SPEED,
        help="Where the cells (model x chunk of items) run: this process, or tasks on a Ray cluster."))
    ray_address: str | None = field(default=None, metadata=option(
        panel=EXECUTION, metavar="ADDRESS", default="RAY_ADDRESS, else a local cluster", help="Ray cluster address.",
        metadata=_SPEED))
    ray_timeout: float = field(default=DEFAULT_RAY_TIMEOUT, metadata=option(
        panel=EXECUTION, metavar="SECONDS", help="How long to wait for the Ray cluster.", metadata=_SPEED))
    shard: ShardSpec | None = field(default=None, metadata=option(
        panel=EXECUTION, metavar="K/N", type=str, parse=parse_shard, metadata=_SPEED,
        help="Evaluate only shard K of N of the cells (e.g. 2/8); combine the folders with `typoattack merge`."))

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

    @classmethod
    def from_mapping(cls: type[C], raw: Mapping[str, Any]) -> C:
        """Validate a mapping of settings (YAML keys; paths absolute or relative to the working
        directory) and build the config.

        Raises:
            ConfigError: A key is unknown, a value has the wrong type or is out of range.
        """
        if not isinstance(raw, Mapping):
            raise ConfigError(f"a run config must be a mapping of keys to values, got {type(raw).__name__}")
        check_keys(raw, list_keys(cls), cls.COMMAND)
        values = cls.parse_mapping(raw)
        data = values.get("data")
        if not values["models"] and (cls.DEMO_BY_DEFAULT == "always" or (
                cls.DEMO_BY_DEFAULT == "sample" and data is not None and data.source == str(SAMPLE_DIR))):
            values["models"] = (ModelSpec(DEMO_MODEL, DEMO_PRETRAINED),)
        return cls(**values)

    @classmethod
    def parse_mapping(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The field values of a mapping whose keys are known (`config.options.parse_fields`); a task
        overrides it for what one field's value says about another's."""
        return parse_fields(cls, raw)

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """Make the paths of a YAML mapping absolute, relative to its folder `base` (the shared keys:
        `resolve_common_paths`; a task adds its own)."""
        resolve_common_paths(raw, base)

    @classmethod
    def get_default_split(cls, raw: Mapping[str, Any]) -> str:
        """The Hugging Face split when `hf_split` is not given."""
        return DEFAULT_SPLIT

    @property
    def model_warnings(self) -> list[str]:
        """Warnings about the run's models (random weights, the demo model); empty for a real benchmark."""
        return get_model_warnings((m.name, m.pretrained) for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config (enums as values, tuples as lists, nested
        dataclasses as dicts)."""
        return _to_plain(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """JSON of the settings that determine the records (every field not marked as a speed setting;
        a field marked `{"fingerprint_omit_default": True}` only when its value is not its default).

        An unset `chunk_size` reads as DEFAULT_CHUNK_SIZE, the value it stood for before cells were
        sized by their records, so those runs keep their fingerprint (and resume). Where the rule
        makes cells smaller (many conditions), the run shares the fingerprint of `chunk_size: 1000`;
        resuming one from the other's folder matches chunks by their items and recomputes the others.
        """
        fields = dataclasses.fields(self)
        omitted = {f.name for f in fields if f.metadata.get("fingerprint") is False}
        # A setting added after runs were made enters only when set: those runs keep their fingerprint.
        omitted |= {f.name for f in fields
                  if f.metadata.get("fingerprint_omit_default") and getattr(self, f.name) == f.default}
        doc = {k: v for k, v in self.to_dict().items() if k not in omitted}
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


def build_data_field(raw: Mapping[str, Any], cls: type[RunSettings]) -> DataSpec:
    """`DataSettings.data` from the keys of `DATA_OPTIONS` (`config.parsing.parse_data`), with the
    class's default split."""
    return parse_data(raw, cls.get_default_split(raw))


DATA_OPTIONS = (
    Option("data", panel=DATA, metavar="PATH|hf:NAME",
           help="ImageNet-val folder, image folder with labels.csv, hf:NAME, or sample (the 500 images the "
                "package ships)."),
    Option("labels", panel=DATA, metavar="PATH", default="DATA/labels.csv", help="Labels CSV (file, class_index)."),
    Option("hf_split", panel=DATA, metavar="NAME", default=DEFAULT_SPLIT, help="Split of a Hugging Face dataset."),
    Option("hf_image_column", panel=DATA, metavar="NAME", default="image",
           help="Image column of a Hugging Face dataset."),
    Option("hf_label_column", panel=DATA, metavar="NAME", default="label",
           help="Label column of a Hugging Face dataset."),
)
"""The options of `DataSettings.data`."""


@dataclass(frozen=True, kw_only=True)
class DataSettings(RunSettings):
    """What the tasks over a set of images add: the images and a subset of them.

    Attributes:
        data: Where the images come from.
        limit: Evaluate a fixed, seeded subset of this many images (None: all).
    """

    data: DataSpec = field(metadata=options(*DATA_OPTIONS, build=build_data_field))
    limit: int | None = field(default=None, metadata=option(
        panel=DATA, metavar="N", default="all", help="Use a fixed, seeded, class-balanced subset of N images."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be a positive number of images, got {self.limit}")


def _build_defences(raw: Mapping[str, Any], cls: type) -> tuple[str, ...]:
    return tuple(s.text for s in parse_defences(raw.get("defences", raw.get("defence", ["none"])), None))


@dataclass(frozen=True, kw_only=True)
class ZeroShotSettings(RunSettings):
    """What zero-shot classification adds: the prompt templates and the defences.

    Attributes:
        templates: Zero-shot prompt templates: a built-in name or a YAML file (a task may have its own names).
        defences: Canonical defence texts (`typoattack.config.defences`); `none` is the undefended model.
    """

    templates: str = field(default="openai", metadata=option(
        panel=Panel.MODEL, metavar="NAME|PATH",
        help="Zero-shot templates: openai (80), simple (7), photo (1), family (each model family's own), "
             "dataset (the class set's own), or a YAML file of templates."))
    defences: tuple[str, ...] = field(default=("none",), metadata=options(
        Option("defence", aliases=("defences",), panel=Panel.DEFENCES, metavar="DEFENCE", repeat=True, default="none",
               help="none, heads:L.H,L.H, heads:@FILE, prefix:PATH or templates:NAME|FILE; repeat for several."),
        build=_build_defences))

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


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None, cls: type[C]) -> C:
    """Read a config YAML, apply the flags over it (YAML < flags) and build the task's config.

    Args:
        path: A YAML file, the name of a built-in config in `cls.BUILTIN_DIR`, or None for flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored. Relative paths in
            overrides are relative to the working directory.
        cls: The task's config class (its options say which keys it reads).

    Raises:
        ConfigError: An unreadable file, an unknown key, a bad value, or `--pretrained` alone
            against a config that lists several models.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path, cls.BUILTIN_DIR)
        raw = load_yaml_mapping(file, "run config")
        cls.resolve_paths(raw, file.parent)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
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
    # A flag replaces its key in every YAML spelling (--fraction replaces `fractions:`).
    for opt in list_options(cls):
        if any(k in flags for k in opt.keys):
            for k in opt.keys:
                if k not in flags:
                    raw.pop(k, None)
    raw.update(flags)
    return cls.from_mapping(raw)


def check_templates(templates: str, extra_names: tuple[str, ...] = ()) -> None:
    """Raise ConfigError unless `templates` is a built-in name (or one of `extra_names`) or an existing file."""
    names = (*extra_names, *BUILTIN_TEMPLATES, FAMILY_TEMPLATES)
    if templates not in names and not Path(templates).is_file():
        names = ", ".join(repr(n) for n in names)
        raise ConfigError(f"templates {templates!r} is neither {names} nor an existing YAML file")
