"""Settings of `typoattack real`: the real typographic-attack datasets, the two scoring protocols,
and the frozen config of a run, parsed from YAML and flags (YAML < flags).

Imports no model code and reads no data (the loaders are in `typoattack.data.real_datasets`); the
YAML parsing helpers of `typoattack.config.loading` are imported when a config is loaded, so the
CLI can import the enums cheaply.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from typoattack.config.types import (
    BUILTIN_TEMPLATES, DEFAULT_RAY_TIMEOUT, Executor, ModelSpec, Precision, ShardSpec, check_ray_timeout,
    check_run_settings, get_model_warnings,
)
from typoattack.constants import DEFAULT_CACHE_DIR
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path


class RealDataset(str, Enum):
    """A real typographic-attack dataset format."""

    SCAM = "scam"
    RTA100 = "rta100"
    PAINT = "paint"
    DISENTANGLE = "disentangle"
    FOLDER = "folder"


class Protocol(str, Enum):
    """How an image is scored.

    UNION: argmax over the union of the dataset's object labels and attack words (RTA-100,
    PAINT, Disentangling and Dyslexify's SCAM protocol). BINARY: a two-way softmax between the
    image's own object label and its attack word (the SCAM paper's protocol).
    """

    UNION = "union"
    BINARY = "binary"


class LabelSet(str, Enum):
    """The class labels of the union protocol.

    DATASET: the dataset's own class list where it ships one (Disentangling's `classes.json`
    keys) together with every object label and attack word of the annotations, as the authors
    score it. ANNOTATIONS: the object labels and attack words of the annotations only.
    """

    DATASET = "dataset"
    ANNOTATIONS = "annotations"


DEFAULT_TEMPLATES = "dataset"
"""The `templates` value that picks each dataset's own prompt (`get_default_templates`)."""
PHOTO_OF_A = ("a photo of a {}.",)
PHOTO_OF = ("a photo of {}.",)
PREFIX_PHOTO_OF_A = "a photo of a * {}."
PREFIX_PHOTO_OF = "a photo of * {}."

_REAL_KEYS = (
    "dataset", "data", "hf_split", "models", "model", "pretrained", "protocol", "templates", "limit", "seed",
    "batch_size", "device", "precision", "out", "cache_dir", "workers", "chunk_size", "compile", "defences", "defence",
    "executor", "ray_address", "ray_timeout", "shard", "labels",
)


def get_default_templates(dataset: RealDataset, protocol: Protocol) -> tuple[str, ...] | str:
    """The prompt templates each dataset's own paper used: a tuple of format strings, or a
    built-in template name (`openai`).

    SCAM under the binary protocol: the paper averaged each text embedding over 32 OpenAI-style
    ImageNet templates; open_clip's 80 `openai` templates are the closest ensemble it ships.
    Disentangling: "a photo of {}." (as Defense-Prefix scores it). Everything else: "a photo of a {}.".
    """
    if dataset is RealDataset.SCAM and protocol is Protocol.BINARY:
        return "openai"
    if dataset is RealDataset.DISENTANGLE:
        return PHOTO_OF
    return PHOTO_OF_A


def get_prefix_prompt(dataset: RealDataset) -> str:
    """The Defense-Prefix class prompt of a dataset: its default template with `* ` before the
    class name, as the Defense-Prefix code builds it ("a photo of * {}." for Disentangling,
    "a photo of a * {}." otherwise)."""
    return PREFIX_PHOTO_OF if dataset is RealDataset.DISENTANGLE else PREFIX_PHOTO_OF_A


@dataclass(frozen=True)
class RealConfig:
    """Everything that determines the records of a `typoattack real` run (written to run.json).

    Attributes:
        dataset: The dataset format.
        data: A folder, or `hf:NAME` (a Hub dataset, a local dataset folder or a `save_to_disk`
            folder; SCAM only).
        models: The models to evaluate, in order.
        protocol: How images are scored.
        templates: `dataset` (each dataset's own prompt), `openai`, `simple` or a YAML file.
        hf_split: Split of a Hugging Face dataset.
        limit: Evaluate a seeded subset of this many photos (a SCAM photo brings all its variants).
        seed: Seed of the subset.
        batch_size: Images per encoder batch (None: auto).
        device: auto, cpu, cuda or cuda:N.
        precision: Encoder precision.
        out: Output folder.
        cache_dir: Cache of classifiers.
        workers: Image decoding threads.
        chunk_size: Images per committed chunk (resume granularity).
        compile: torch.compile the image encoder.
        defences: Canonical defence texts (`typoattack.defences.spec`), each a `defence` value of
            the records; `none` is the undefended model.
        executor: Where the cells (model x chunk of images) run.
        ray_address: Ray cluster address (None: RAY_ADDRESS, else a local cluster).
        ray_timeout: Seconds to wait for the Ray cluster before giving up (> 0).
        shard: Evaluate only this shard of the cells (`typoattack merge` combines the shards).
        labels: The label set of the union protocol (the dataset's class list with the
            annotations', or the annotations' only).
    """

    dataset: RealDataset
    data: str
    models: tuple[ModelSpec, ...]
    protocol: Protocol = Protocol.UNION
    templates: str = DEFAULT_TEMPLATES
    hf_split: str = "train"
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None
    device: str = "auto"
    precision: Precision = Precision.FP32
    out: str | None = None
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    workers: int = 2
    chunk_size: int = 1000
    compile: bool = False
    defences: tuple[str, ...] = ("none",)
    executor: Executor = Executor.LOCAL
    ray_address: str | None = None
    ray_timeout: float = DEFAULT_RAY_TIMEOUT
    shard: ShardSpec | None = None
    labels: LabelSet = LabelSet.DATASET

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model given; pass --model (and --pretrained) or set `models` in the config")
        if len(set(self.models)) != len(self.models):
            raise ConfigError("the same model and pretrained weights are listed twice")
        if self.data.startswith("hf:") and self.dataset is not RealDataset.SCAM:
            raise ConfigError(f"--data hf:... is read for --dataset scam only; for {self.dataset.value} give the "
                              "folder the dataset's zip file unpacks to")
        check_run_settings(self.seed, self.limit, self.batch_size, self.workers, self.chunk_size)
        check_ray_timeout(self.ray_timeout)
        if not self.defences or len(set(self.defences)) != len(self.defences):
            raise ConfigError(f"`defences` must list distinct defences, got {list(self.defences)}")
        if self.templates not in (DEFAULT_TEMPLATES, *BUILTIN_TEMPLATES) and not Path(self.templates).is_file():
            raise ConfigError(f"templates {self.templates!r} is neither 'dataset', 'openai', 'simple' "
                              "nor an existing YAML file")

    @property
    def model_warnings(self) -> list[str]:
        """Warnings about the run's models (random weights, the demo model)."""
        return get_model_warnings((m.name, m.pretrained) for m in self.models)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config (enums as their values)."""
        d = dataclasses.asdict(self)
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in d.items()}

    def fingerprint(self) -> str:
        """A JSON string of the settings that determine the records (not out, cache, speed settings)."""
        d = self.to_dict()
        for key in ("out", "cache_dir", "workers", "batch_size", "device", "compile", "executor", "ray_address",
                    "ray_timeout", "shard", "labels"):
            d.pop(key)
        # `labels` changes only the vocabulary, which the run fingerprint hashes itself; leaving it out
        # keeps the fingerprints of runs written before the setting existed.
        return json.dumps(d, sort_keys=True)


def build_real_config(raw: Mapping[str, Any]) -> RealConfig:
    """Validate a mapping of `real` settings (YAML keys) and build a RealConfig.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type, or a required key is missing.
    """
    from typoattack.config.loading import (
        parse_defence_texts, as_batch_size, as_bool, as_enum, as_float, as_int, as_str, parse_models, parse_shard,
    )

    for key in raw:
        if not isinstance(key, str) or key not in _REAL_KEYS:
            raise ConfigError(f"unknown config key `{key}` for `typoattack real`.{suggest(str(key), _REAL_KEYS)}")
    if "defences" in raw and "defence" in raw:
        raise ConfigError("give `defences` or `defence`, not both")
    for key, flag in (("dataset", "--dataset scam|rta100|paint|disentangle|folder"), ("data", "--data PATH|hf:NAME")):
        if raw.get(key) is None:
            raise ConfigError(f"no {key} given; pass {flag} or set `{key}` in the config")
    data = as_str("data", raw["data"])
    templates = as_str("templates", raw.get("templates", DEFAULT_TEMPLATES))
    out = raw.get("out")
    return RealConfig(
        dataset=as_enum("dataset", RealDataset, raw["dataset"]),
        data=data if data.startswith("hf:") else str(expand_path(data)),
        models=parse_models(raw),
        protocol=as_enum("protocol", Protocol, raw.get("protocol", "union")),
        templates=templates,
        hf_split=as_str("hf_split", raw.get("hf_split", "train")),
        limit=as_int("limit", raw.get("limit"), allow_none=True),
        seed=as_int("seed", raw.get("seed", 0)),
        batch_size=as_batch_size(raw.get("batch_size", "auto")),
        device=as_str("device", raw.get("device", "auto")),
        precision=as_enum("precision", Precision, raw.get("precision", "fp32")),
        out=None if out is None else str(expand_path(as_str("out", out))),
        cache_dir=str(expand_path(as_str("cache_dir", raw.get("cache_dir", str(DEFAULT_CACHE_DIR))))),
        workers=as_int("workers", raw.get("workers", 2)),
        chunk_size=as_int("chunk_size", raw.get("chunk_size", 1000)),
        compile=as_bool("compile", raw.get("compile", False)),
        defences=parse_defence_texts(raw.get("defences", raw.get("defence", ["none"])), None),
        executor=as_enum("executor", Executor, raw.get("executor", "local")),
        ray_address=None if raw.get("ray_address") is None else as_str("ray_address", raw["ray_address"]),
        ray_timeout=as_float("ray_timeout", raw.get("ray_timeout", DEFAULT_RAY_TIMEOUT)),
        shard=parse_shard(raw.get("shard")),
        labels=as_enum("labels", LabelSet, raw.get("labels", LabelSet.DATASET.value)),
    )


def load_real_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RealConfig:
    """Load a `real` config YAML (paths in it relative to the file) and apply the flags over it.

    Args:
        path: The YAML file (or a built-in config name), or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    from typoattack.config.loading import (
        parse_defence_texts, load_yaml_mapping, resolve_config_path, resolve_path, resolve_pretrained,
    )

    raw: dict[str, Any] = {}
    if path is not None:
        path = resolve_config_path(path)
        raw = load_yaml_mapping(path, "run config")
        base = path.parent
        for key in ("data", "out", "templates", "cache_dir"):
            value = raw.get(key)
            if (isinstance(value, str) and value.strip() and not value.startswith("hf:")
                    and value not in (DEFAULT_TEMPLATES, *BUILTIN_TEMPLATES)):
                raw[key] = resolve_path(value, base)
        if "pretrained" in raw:
            raw["pretrained"] = ([resolve_pretrained(v, base) for v in raw["pretrained"]]
                                 if isinstance(raw["pretrained"], list) else resolve_pretrained(raw["pretrained"], base))
        if "defences" in raw or "defence" in raw:
            if "defences" in raw and "defence" in raw:
                raise ConfigError("give `defences` or `defence`, not both")
            # Heads and prefix files in the YAML are relative to it, as eval's.
            raw["defences"] = list(parse_defence_texts(raw.pop("defences", raw.pop("defence", None)), base))
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "model" in overrides or "pretrained" in overrides:
        if "models" in raw and "model" not in overrides:
            raise ConfigError("--pretrained without --model: the config lists `models`; pass --model too")
        raw.pop("models", None)
    raw.update(overrides)
    return build_real_config(raw)
