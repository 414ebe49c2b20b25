"""Value types of a run: frozen dataclasses and enums, validated on construction.

No parsing here (see `typoattack.config.loading`): importing this module reads no YAML and loads
no model code.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from typoattack.constants import DEFAULT_CACHE_DIR, DEFAULT_FONT, DEMO_MODEL, FONTS_DIR
from typoattack.errors import ConfigError

SEED_PREFIX = "seed:"
UNTRAINED_WARNING = ("UNTRAINED MODEL: {models} {verb} random weights (seed:N); these numbers only check "
                     "the pipeline, they say nothing about CLIP.")
DEMO_WARNING = ("DEMO MODEL: {models} is typoattack's 4.5 M-parameter toy, trained for half an hour on a CPU on the "
                "very 500 images the CI config evaluates, to show and check the pipeline; its numbers say nothing "
                "about CLIP.")


def is_untrained(pretrained: str | None) -> bool:
    """True when a pretrained value asks for random weights (`seed:N`): numbers from such a model
    only check the pipeline."""
    return bool(pretrained) and str(pretrained).startswith(SEED_PREFIX)


def get_untrained_warning(labels: list[str]) -> str:
    """The one warning text shown wherever untrained models (`labels`) appear."""
    return UNTRAINED_WARNING.format(models=", ".join(labels), verb="has" if len(labels) == 1 else "have")


def get_model_warnings(models: Iterable[tuple[str, str | None]]) -> list[str]:
    """The warnings to show wherever these (model name, pretrained) appear: random weights
    (`seed:N`), and the demo model trained on the CI images themselves."""
    labels = {(name, pretrained): f"{name}/{pretrained}" if pretrained else name for name, pretrained in models}
    untrained = [label for (name, pretrained), label in labels.items() if is_untrained(pretrained)]
    demo = [label for (name, pretrained), label in labels.items() if name == DEMO_MODEL and not is_untrained(pretrained)]
    warnings = [get_untrained_warning(untrained)] if untrained else []
    if demo:
        warnings.append(DEMO_WARNING.format(models=", ".join(demo)))
    return warnings


def check_fraction(fraction: float) -> None:
    """Raise ConfigError unless `fraction` (share of canvas pixels the text changes) is in (0, 1)."""
    if not (isinstance(fraction, float) and 0 < fraction < 1):
        raise ConfigError(f"fraction {fraction} must be in (0, 1), e.g. 0.07 for 7% of the canvas")


def format_color(rgb: tuple[int, int, int]) -> str:
    """'#rrggbb' of an RGB colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class Placement(str, Enum):
    """Where the attack word is drawn on the canvas."""

    PAPER8 = "paper8"
    CENTER = "center"
    RANDOM = "random"


class Precision(str, Enum):
    """Numeric precision of the image encoder (bf16 and fp16 run under CUDA autocast)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Executor(str, Enum):
    """Where the evaluation cells run: in this process, or as tasks on a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


@dataclass(frozen=True)
class ShardSpec:
    """One part of a run split for schedulers without Ray (`--shard K/N`): the cells whose
    position in the run's cell list is K-1 modulo N.

    Attributes:
        index: K, 1-based.
        count: N, the number of shards.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: K must be in 1..N and N at least 1 (e.g. 1/4)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


BUILTIN_TEMPLATES = ("openai", "simple")


@dataclass(frozen=True)
class AttackWord:
    """One attack word and the class it aims at.

    Attributes:
        text: The text drawn on the image.
        target_index: ImageNet class index 0-999 the attack tries to force.
    """

    text: str
    target_index: int


@dataclass(frozen=True)
class Vocabulary:
    """A named list of attack words, loaded from a YAML file in configs/vocab/."""

    name: str
    words: tuple[AttackWord, ...]
    path: str = ""


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: an open_clip name (or hf-hub:/local-dir: id) and its weights.

    Attributes:
        name: open_clip model name, `hf-hub:org/repo` or `local-dir:/path`.
        pretrained: open_clip pretrained tag, a checkpoint file path, `seed:N` (random weights
            from seed N, only to test the pipeline), or None for hf-hub:/local-dir: ids.
    """

    name: str
    pretrained: str | None = None

    @property
    def label(self) -> str:
        """A short human-readable name, `name/pretrained`."""
        return f"{self.name}/{self.pretrained}" if self.pretrained else self.name


@dataclass(frozen=True)
class DataSpec:
    """Where the images come from.

    Attributes:
        source: An ImageNet-val folder of WordNet-id sub-folders, a folder of images with a
            labels CSV, or `hf:NAME` (a Hugging Face dataset name, a local dataset folder or a
            folder written by `Dataset.save_to_disk`).
        labels: The labels CSV (`file`, `class_index` columns); default `<source>/labels.csv`.
        hf_split: Split of the Hugging Face dataset.
        hf_image_column: Column holding the images.
        hf_label_column: Column holding integer ImageNet class indices.
    """

    source: str
    labels: str | None = None
    hf_split: str = "validation"
    hf_image_column: str = "image"
    hf_label_column: str = "label"


@dataclass(frozen=True)
class RenderStyle:
    """How the attack text looks.

    Attributes:
        font: Path of a TrueType/OpenType font file.
        fill: Text colour, RGB 0-255.
        outline: Outline colour, RGB 0-255.
        outline_width: Outline width in canvas pixels (0 = no outline).
        opacity: Opacity of the text, in (0, 1].
    """

    font: str = str(DEFAULT_FONT)
    fill: tuple[int, int, int] = (255, 255, 255)
    outline: tuple[int, int, int] = (0, 0, 0)
    outline_width: int = 1
    opacity: float = 1.0

    def __post_init__(self) -> None:
        if not Path(self.font).is_file():
            raise ConfigError(
                f"font file {self.font} does not exist; give a .ttf/.otf path or a file name in {FONTS_DIR}"
            )
        if not 0 <= self.outline_width <= 16:
            raise ConfigError(f"outline_width must be 0-16 pixels, got {self.outline_width}")
        if not 0 < self.opacity <= 1:
            raise ConfigError(f"opacity must be in (0, 1], got {self.opacity}")


def check_run_settings(seed: int, limit: int | None, batch_size: int | None, workers: int, chunk_size: int) -> None:
    """Validate the settings every run command shares.

    Raises:
        ConfigError: A negative seed or worker count, or a non-positive limit, batch size or chunk size.
    """
    if seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of images, got {limit}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer or auto, got {batch_size}")
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be positive, got {chunk_size}")


DEFAULT_RAY_TIMEOUT = 30.0
"""Seconds `--executor ray` waits for the Ray cluster before giving up."""


def check_ray_timeout(seconds: float) -> None:
    """Raise ConfigError unless `seconds` (the `ray_timeout` setting) is a finite number > 0."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds < float("inf"):
        raise ConfigError(f"ray_timeout must be a number of seconds > 0, got {seconds!r}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines the records of a run. Written to run.json next to the results."""

    models: tuple[ModelSpec, ...]
    data: DataSpec
    vocab: str = "goh2021"
    limit: int | None = None
    fractions: tuple[float, ...] = (0.07,)
    placements: tuple[Placement, ...] = (Placement.PAPER8,)
    styles: tuple[RenderStyle, ...] = (RenderStyle(),)
    templates: str = "openai"
    batch_size: int | None = None
    device: str = "auto"
    precision: Precision = Precision.FP32
    seed: int = 0
    out: str | None = None
    cache_dir: str = str(DEFAULT_CACHE_DIR)
    workers: int = 2
    chunk_size: int = 1000
    compile: bool = False
    executor: Executor = Executor.LOCAL
    ray_address: str | None = None
    ray_timeout: float = DEFAULT_RAY_TIMEOUT
    shard: ShardSpec | None = None
    defences: tuple[str, ...] = ("none",)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no model given; set `model` (and `pretrained`) in the config or pass --model")
        if len(set(self.models)) != len(self.models):
            raise ConfigError("the same model and pretrained weights are listed twice")
        if not self.fractions:
            raise ConfigError("`fractions` is empty; give at least one pixel fraction such as 0.07")
        for f in self.fractions:
            check_fraction(f)
        if len(set(self.fractions)) != len(self.fractions):
            raise ConfigError(f"`fractions` lists a value twice: {list(self.fractions)}")
        if not self.placements:
            raise ConfigError("`placement` is empty; use paper8, center or random")
        if len(set(self.placements)) != len(self.placements):
            raise ConfigError("`placement` lists a value twice")
        if not self.styles:
            raise ConfigError("no text style: give at least one font, fill and outline")
        if len(set(self.styles)) != len(self.styles):
            raise ConfigError("`font`, `fill` or `outline` lists a value twice")
        check_run_settings(self.seed, self.limit, self.batch_size, self.workers, self.chunk_size)
        check_ray_timeout(self.ray_timeout)
        if not self.defences or len(set(self.defences)) != len(self.defences):
            raise ConfigError(f"`defences` must list distinct defences, got {list(self.defences)}")
        if self.templates not in BUILTIN_TEMPLATES and not Path(self.templates).is_file():
            raise ConfigError(
                f"templates {self.templates!r} is neither 'openai', 'simple' nor an existing YAML file"
            )

    @property
    def model_warnings(self) -> list[str]:
        """Warnings about the run's models (random weights, the demo model); empty for a real benchmark."""
        return get_model_warnings((m.name, m.pretrained) for m in self.models)

    @property
    def style(self) -> RenderStyle:
        """The first (often the only) text style of the sweep."""
        return self.styles[0]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the config (enums as their values)."""

        def convert(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, (list, tuple)):
                return [convert(v) for v in value]
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            return value

        return convert(dataclasses.asdict(self))

    def fingerprint(self) -> str:
        """Return a JSON string of the settings that determine the records (not out, cache, workers)."""
        d = self.to_dict()
        for key in ("out", "cache_dir", "workers", "batch_size", "device", "compile", "executor", "ray_address",
                    "ray_timeout", "shard"):
            d.pop(key, None)
        return json.dumps(d, sort_keys=True)
