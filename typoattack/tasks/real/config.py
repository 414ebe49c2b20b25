"""Settings of `typoattack real`: a real typographic-attack dataset, the two scoring protocols, and
the frozen config of a run (YAML < flags). Imports no model code and reads no data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as replace_option
from pathlib import Path
from typing import Any

from typoattack.config.common import (
    DATA_OPTIONS, ImageSetSettings, build_data_field, check_templates, load_config,
)
from typoattack.config.datasets import DATASET_FLAG, REAL_DEFAULT_SPLIT, RealDatasetSettings
from typoattack.config.options import Panel, option, options
from typoattack.config.types import DataSpec, LabelSet, Protocol, RealDataset
from typoattack.errors import ConfigError

DEFAULT_TEMPLATES = "dataset"
"""The `templates` value that picks each dataset's own prompt (`get_default_templates`)."""
PHOTO_OF_A = ("a photo of a {}.",)
PHOTO_OF = ("a photo of {}.",)
PREFIX_PHOTO_OF_A = "a photo of a * {}."
PREFIX_PHOTO_OF = "a photo of * {}."


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

    COMMAND = "real"
    SUMMARY = ("Classify real photos with typographic attacks (SCAM, RTA-100, PAINT, Disentangling, a folder) "
               "zero-shot.")

    data: DataSpec = field(metadata=options(
        replace_option(DATA_OPTIONS[0], help="Dataset folder, or hf:NAME for SCAM (a Hub name, a local dataset "
                                                  "folder or a save_to_disk folder)."),
        replace_option(DATA_OPTIONS[2], default=REAL_DEFAULT_SPLIT),
        build=build_data_field))
    limit: int | None = field(default=None, metadata=option(
        panel=Panel.DATA, metavar="N", default="all",
        help="Use a fixed, seeded subset of N photos (a SCAM photo brings all its variants)."))
    templates: str = field(default=DEFAULT_TEMPLATES, metadata=option(
        panel=Panel.MODEL, metavar="NAME|PATH",
        help="dataset (each dataset's own prompt), openai (80), simple (7), photo (1), family, or a YAML file "
             "of templates."))
    protocol: Protocol = field(default=Protocol.UNION, metadata=option(
        panel=Panel.DATA, metavar="union|binary",
        help="union: argmax over all object labels and attack words; binary: object vs its attack word."))
    label_set: LabelSet = field(default=LabelSet.DATASET, metadata=option(
        panel=Panel.DATA, metavar="dataset|annotations",
        help="Classes of the union protocol: the dataset's own class list (Disentangling's classes.json) with the "
             "annotations' labels and words, or the annotations' only."))

    def __post_init__(self) -> None:
        if self.dataset is None:
            raise ConfigError(f"no dataset given; pass {DATASET_FLAG} or set `dataset` in the config")
        super().__post_init__()
        check_templates(self.templates, (DEFAULT_TEMPLATES,))

    @classmethod
    def parse_mapping(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The fields; the dataset and its folder are required."""
        for key, flag in (("dataset", DATASET_FLAG), ("data", "--data PATH|hf:NAME")):
            if raw.get(key) is None:
                raise ConfigError(f"no {key} given; pass {flag} or set `{key}` in the config")
        return super().parse_mapping(raw)

    @classmethod
    def get_default_split(cls, raw: Mapping[str, Any]) -> str:
        """SCAM on the Hub has only `train`."""
        return REAL_DEFAULT_SPLIT


CONFIG = RealConfig
"""The task's config class (the registry reads its options to build the command)."""


def build_real_config(raw: Mapping[str, Any]) -> RealConfig:
    """Validate a mapping of `real` settings (YAML keys) and build a RealConfig.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type, or a required key is missing.
    """
    return RealConfig.from_mapping(raw)


def load_real_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> RealConfig:
    """Load a `real` config YAML (paths in it relative to the file) and apply the flags over it.

    Args:
        path: The YAML file, or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, RealConfig)
