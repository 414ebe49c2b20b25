"""What the pipelines need from a progress display (the CLI passes a rich one; tests and Ray workers pass `NullProgress`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class ProgressReporter(Protocol):
    """What the runner needs from a progress display."""

    def start(self, description: str, total: int, unit: str = "") -> Callable[[int], None]:
        """Start a task of `total` steps (counted in `unit`, e.g. "images"); return a function that
        advances it."""
        ...

    def log(self, message: str) -> None:
        """Show a message."""
        ...


class NullProgress:
    """A progress reporter that shows nothing."""

    def start(self, description: str, total: int, unit: str = "") -> Callable[[int], None]:
        return lambda n: None

    def log(self, message: str) -> None:
        pass
