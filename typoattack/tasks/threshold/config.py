"""Settings of `typoattack threshold`: eval's images with their class set, models, vocabulary, placements,
text styles and defences, with the search over the pixel fraction in place of eval's fixed fractions (`--min-fraction`,
`--max-fraction`, `--grid`, `--steps`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typoattack.config.attack import AttackSettings
from typoattack.config.classes import DATASET_TEMPLATES, ClassSetSettings
from typoattack.config.common import ImageSetSettings, check_templates, load_config
from typoattack.config.defences import add_prefix_baseline
from typoattack.config.options import Panel, option
from typoattack.config.types import check_fraction
from typoattack.constants import CONFIGS_DIR
from typoattack.errors import ConfigError

__all__ = ["CONFIG", "IGNORED_EVAL_KEYS", "MAX_GRID", "MAX_STEPS", "ThresholdConfig", "load_threshold_config"]

IGNORED_EVAL_KEYS = ("fraction", "fractions")
"""Keys of an `eval` config that threshold has no use for (it searches the fraction); an eval config given
with --config is read without them, so that the thresholds are searched on the very images, words,
placements, styles and defences that `eval --config` evaluates."""
MAX_STEPS = 16
"""Most bisection steps (the lattice of fractions then has (grid - 1) x 65,536 intervals)."""
MAX_GRID = 65
"""Most grid points."""


@dataclass(frozen=True, kw_only=True)
class ThresholdConfig(AttackSettings, ClassSetSettings, ImageSetSettings):
    """Everything that determines the records of a `threshold` run (written to run.json): the run, the
    images with their class set, templates and defences, the words, placements and styles, and the search.

    `fractions` has no option here: it is set to (min_fraction, max_fraction), the range searched
    before each word and placement clips it to what the canvas can draw.

    Attributes:
        min_fraction: Smallest pixel fraction searched.
        max_fraction: Largest pixel fraction searched.
        grid: Log-spaced fractions evaluated on every pair before bisecting.
        steps: Bisection steps (in log space) inside the first bracket where the outcome changes.
    """

    COMMAND = "threshold"
    SUMMARY = ("Search, per image and word, the smallest pixel fraction that changes the prediction: to the "
               "word's target class (f_target) and away from the true class (f_flip).")
    BUILTIN_DIR = CONFIGS_DIR
    DEMO_BY_DEFAULT = "sample"
    TABLE_HELP = ("What the terminal shows at the end: the leaderboard (the full table is "
                  "per_word_threshold.csv), or every word.")

    fractions: tuple[float, ...] = field(default=(0.002, 0.25))
    min_fraction: float = field(default=0.002, metadata=option(
        panel=Panel.ATTACK, metavar="FLOAT",
        help="Smallest pixel fraction searched (raised, per word and placement, to the smallest the canvas "
             "can draw)."))
    max_fraction: float = field(default=0.25, metadata=option(
        panel=Panel.ATTACK, metavar="FLOAT",
        help="Largest pixel fraction searched; a pair that has not changed there is 'not reached'."))
    grid: int = field(default=5, metadata=option(
        panel=Panel.ATTACK, metavar="INT",
        help="Log-spaced fractions tried on every pair first (a pair whose outcome changes back on them is "
             "counted as non-monotone)."))
    steps: int = field(default=8, metadata=option(
        panel=Panel.ATTACK, metavar="INT",
        help="Bisection steps, in log space, inside the first grid bracket where the outcome changes."))

    def __post_init__(self) -> None:
        for name in ("min_fraction", "max_fraction"):
            try:
                check_fraction(getattr(self, name))
            except ConfigError as e:
                raise ConfigError(f"--{name.replace('_', '-')}: {e}") from None
        if not self.min_fraction < self.max_fraction:
            raise ConfigError(f"--min-fraction {self.min_fraction} must be below --max-fraction {self.max_fraction}")
        if not 2 <= self.grid <= MAX_GRID:
            raise ConfigError(f"--grid must be between 2 and {MAX_GRID} fractions, got {self.grid}")
        if not 0 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"--steps must be between 0 and {MAX_STEPS}, got {self.steps}")
        object.__setattr__(self, "fractions", (self.min_fraction, self.max_fraction))
        super().__post_init__()
        check_templates(self.templates, (DATASET_TEMPLATES,))

    @property
    def n_intervals(self) -> int:
        """Intervals of the lattice of fractions every searched fraction lies on: (grid - 1) x 2^steps."""
        return (self.grid - 1) * 2 ** self.steps

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ThresholdConfig:
        """The config of a mapping of settings; an eval config's fractions (IGNORED_EVAL_KEYS) are dropped first."""
        if isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in IGNORED_EVAL_KEYS}
        return super().from_mapping(raw)

    @classmethod
    def parse_mapping(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The shared fields, with the prefix baseline beside a prefix defence (as eval)."""
        values = super().parse_mapping(raw)
        values["defences"] = add_prefix_baseline(values["defences"])
        return values


CONFIG = ThresholdConfig
"""The task's config class (the registry reads its options to build the command)."""


def load_threshold_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> ThresholdConfig:
    """Load a `threshold` config (a YAML file or a built-in eval config name, its fractions ignored; paths
    in it relative to the file) and apply the flags over it (YAML < flags).

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range.
    """
    return load_config(path, overrides, ThresholdConfig)
