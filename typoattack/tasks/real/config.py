"""Settings of `typoattack real`: a real typographic-attack dataset, the two scoring protocols, and
the frozen config of a run (YAML < flags). Imports no model code and reads no data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.config.common import (
    IMAGE_SET_KEYS, RUN_KEYS, ImageSetSettings, check_keys, check_templates, load_config, parse_image_set,
    parse_run_settings,
)
from typoattack.config.datasets import DATASET_FLAG, DATASET_KEYS, REAL_DEFAULT_SPLIT, RealDatasetSettings, parse_dataset
from typoattack.config.parsing import as_enum
from typoattack.config.types import LabelSet, Protocol, RealDataset
from typoattack.errors import ConfigError


DEFAULT_TEMPLATES = "dataset"
"""The `templates` value that picks each dataset's own prompt (`get_default_templates`)."""
PHOTO_OF_A = ("a photo of a {}.",)
PHOTO_OF = ("a photo of {}.",)
PREFIX_PHOTO_OF_A = "a photo of a * {}."
PREFIX_PHOTO_OF = "a photo of * {}."
REAL_KEYS = (*RUN_KEYS, *IMAGE_SET_KEYS, *DATASET_KEYS, "protocol", "label_set")


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


@dataclass(frozen=True, kw_only=True)
class RealConfig(ImageSetSettings, RealDatasetSettings):
    """Everything that determines the records of a `typoattack real` run (written to run.json): the
    run, the dataset (required here) with its templates and defences, and how photos are scored.

    Attributes:
        protocol: How images are scored.
        label_set: The label set of the union protocol (the dataset's class list with the
            annotations' labels and words, or the annotations' only).
    """

    protocol: Protocol = Protocol.UNION
    label_set: LabelSet = LabelSet.DATASET

    def __post_init__(self) -> None:
        if self.dataset is None:
            raise ConfigError(f"no dataset given; pass {DATASET_FLAG} or set `dataset` in the config")
        super().__post_init__()
        check_templates(self.templates, (DEFAULT_TEMPLATES,))


def build_real_config(raw: Mapping[str, Any]) -> RealConfig:
    """Validate a mapping of `real` settings (YAML keys) and build a RealConfig.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type, or a required key is missing.
    """
    check_keys(raw, REAL_KEYS, "real")
    for key, flag in (("dataset", DATASET_FLAG), ("data", "--data PATH|hf:NAME")):
        if raw.get(key) is None:
            raise ConfigError(f"no {key} given; pass {flag} or set `{key}` in the config")
    return RealConfig(
        **parse_run_settings(raw),
        **parse_image_set(raw, REAL_DEFAULT_SPLIT, DEFAULT_TEMPLATES),
        dataset=parse_dataset(raw),
        protocol=as_enum("protocol", Protocol, raw.get("protocol", "union")),
        label_set=as_enum("label_set", LabelSet, raw.get("label_set", LabelSet.DATASET.value)),
    )


def load_real_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RealConfig:
    """Load a `real` config YAML (paths in it relative to the file) and apply the flags over it.

    Args:
        path: The YAML file, or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, build_real_config)
