"""The toy task's settings: two options of its own beside the shared ones, each declared once."""

from __future__ import annotations

from dataclasses import dataclass, field

from typoattack.config.common import RunSettings
from typoattack.config.options import Panel, option
from typoattack.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ToyConfig(RunSettings):
    """Count the letters of a word in `n_items` numbered copies.

    Attributes:
        word: The word whose letters are counted.
        n_items: How many items the run has.
    """

    COMMAND = "toy"
    SUMMARY = "Count the letters of a word, many times (a task registered by a test)."

    word: str = field(default="pizza", metadata=option(
        panel=Panel.ATTACK, metavar="TEXT", help="The word whose letters are counted."))
    n_items: int = field(default=10, metadata=option(
        panel=Panel.DATA, metavar="N", help="Items in the run."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_items < 1:
            raise ConfigError(f"n_items must be positive, got {self.n_items}")


CONFIG = ToyConfig
