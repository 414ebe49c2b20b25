"""Settings of `typoattack eval`: synthetic attacks drawn on a set of labelled images at controlled pixel
fractions (the words of a vocabulary x fractions x placements x text styles)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typoattack.config.attack import (
    ATTACK_ALIASES, ATTACK_KEYS, AttackSettings, build_styles, check_attack_spellings, parse_attack_settings,
    resolve_attack_paths,
)
from typoattack.config.common import (
    IMAGE_SET_KEYS, RUN_KEYS, ImageSetSettings, check_keys, check_templates, load_config, parse_image_set,
    parse_run_settings,
)
from typoattack.config.defences import add_prefix_baseline
from typoattack.constants import SAMPLE_DIR
from typoattack.errors import ConfigError

__all__ = ["SYNTHETIC_KEYS", "SyntheticConfig", "build_styles", "build_synthetic_config", "load_synthetic_config"]

SYNTHETIC_KEYS = (*RUN_KEYS, *IMAGE_SET_KEYS, *ATTACK_KEYS)
DEFAULT_TEMPLATES = "openai"


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(AttackSettings, ImageSetSettings):
    """Everything that determines the records of an `eval` run (written to run.json next to them):
    the run, the images with their templates and defences, and the attack sweep."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)


def build_synthetic_config(raw: Mapping[str, Any]) -> SyntheticConfig:
    """Validate a mapping of `eval` settings (YAML keys; paths absolute or relative to the working
    directory) and build its config.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a run config must be a mapping of keys to values, got {type(raw).__name__}")
    check_keys(raw, SYNTHETIC_KEYS, "eval")
    check_attack_spellings(raw)
    image_set = parse_image_set(raw, "validation", DEFAULT_TEMPLATES)
    # A prefix defence is compared with its own single prompt without the token: evaluate that too.
    image_set["defences"] = add_prefix_baseline(image_set["defences"])
    # The shipped sample needs no weights either: without --model it shows the pipeline on the demo model.
    run = parse_run_settings(raw, demo_by_default=image_set["data"].source == str(SAMPLE_DIR))
    return SyntheticConfig(**run, **image_set, **parse_attack_settings(raw))


def load_synthetic_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> SyntheticConfig:
    """Load an `eval` config (a YAML file or a built-in name; paths in it relative to the file) and
    apply the flags over it (YAML < flags).

    Args:
        path: The YAML file or built-in name (ci, paper, sweep-fraction), or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, build_synthetic_config, resolve_paths=resolve_attack_paths,
                       aliases=ATTACK_ALIASES)
