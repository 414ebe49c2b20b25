"""Settings of `typoattack eval`: synthetic attacks drawn on a set of labelled images at controlled pixel
fractions (the words of a vocabulary x fractions x placements x text styles)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.config.attack import AttackSettings, build_styles
from typoattack.config.classes import DATASET_TEMPLATES, ClassSetSettings
from typoattack.config.common import ImageSetSettings, check_templates, load_config
from typoattack.config.defences import add_prefix_baseline
from typoattack.config.options import list_keys
from typoattack.constants import CONFIGS_DIR

__all__ = ["CONFIG", "SYNTHETIC_KEYS", "SyntheticConfig", "build_styles", "build_synthetic_config",
           "load_synthetic_config"]


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(AttackSettings, ClassSetSettings, ImageSetSettings):
    """Everything that determines the records of an `eval` run (written to run.json next to them):
    the run, the images with their class set, templates and defences, and the attack sweep."""

    COMMAND = "eval"
    SUMMARY = "Render attack words on images, classify them zero-shot, and write per-word and confusion tables."
    BUILTIN_DIR = CONFIGS_DIR
    DEMO_BY_DEFAULT = "sample"
    TABLE_HELP = ("What the terminal shows at the end: a few rows per model (the full table is per_word.md), "
                  "or every word.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates, (DATASET_TEMPLATES,))

    @classmethod
    def parse_mapping(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The shared fields, with the prefix baseline beside a prefix defence."""
        values = super().parse_mapping(raw)
        # A prefix defence is compared with its own single prompt without the token: evaluate that too.
        values["defences"] = add_prefix_baseline(values["defences"])
        return values


CONFIG = SyntheticConfig
"""The task's config class (the registry reads its options to build the command)."""
SYNTHETIC_KEYS = list_keys(SyntheticConfig)


def build_synthetic_config(raw: Mapping[str, Any]) -> SyntheticConfig:
    """Validate a mapping of `eval` settings (YAML keys; paths absolute or relative to the working
    directory) and build its config.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    return SyntheticConfig.from_mapping(raw)


def load_synthetic_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SyntheticConfig:
    """Load an `eval` config (a YAML file or a built-in name; paths in it relative to the file) and
    apply the flags over it (YAML < flags).

    Args:
        path: The YAML file or built-in name (ci, paper, sweep-fraction), or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, SyntheticConfig)
