"""The `transformers` package as the family's modules use it: the check that the optional extra is
installed (one line naming it), the library's version, and its progress bars kept off the terminal
while a model loads (the CLI shows its own progress)."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator

from typoattack.errors import missing_extra

EXTRA = "transformers"
"""typoattack's extra that installs transformers (pyproject `optional-dependencies`)."""


def require_transformers(what: str = "the transformers backend") -> None:
    """Raise MissingExtraError (a ConfigError) when the transformers package is not installed.

    Args:
        what: The feature that needs it, for the message (`the transformers backend`, `typoattack vlm`).
    """
    if importlib.util.find_spec("transformers") is None:
        raise missing_extra(what, EXTRA)


def get_transformers_version() -> str:
    """transformers' version ("" when it is not installed)."""
    if importlib.util.find_spec("transformers") is None:
        return ""
    import transformers

    return str(transformers.__version__)


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """Within the block, transformers shows no progress bar (e.g. "Loading weights"); the setting it had
    is restored on exit."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
