"""Exceptions for mistakes a user can fix; the CLI prints them as one red line and exits with code 1."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TypoAttackError(Exception):
    """Base class of every error caused by user input (config, data, weights, fonts)."""


class ConfigError(TypoAttackError):
    """A run config, vocabulary or command-line value is invalid."""


class DataError(TypoAttackError):
    """A data source is missing, malformed or yields no usable image."""


class WeightsError(TypoAttackError):
    """A model name, pretrained tag or checkpoint cannot be resolved or loaded."""


class RenderError(TypoAttackError):
    """A word cannot be drawn as asked (unreachable fraction, missing glyphs, bad font)."""


class OutputError(TypoAttackError):
    """An output directory cannot be used (holds another run, incomplete run, missing files)."""


class MissingExtraError(ConfigError):
    """An optional dependency is not installed; the message names the extra that installs it
    (`missing_extra`)."""


def missing_extra(what: str, extra: str) -> MissingExtraError:
    """The one-line error of a feature whose optional dependencies are not installed, e.g.
    "the transformers backend needs the `transformers` extra: pip install 'typoattack[transformers]'".

    Args:
        what: The feature, as the subject of "needs" (`--executor ray`, `the transformers backend`).
        extra: The name of typoattack's extra (pyproject `optional-dependencies`).
    """
    return MissingExtraError(f"{what} needs the `{extra}` extra: pip install 'typoattack[{extra}]'")


def suggest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' hint listing the closest choices, or '' when none is close.

    Args:
        value: The string the user gave.
        choices: The valid strings.
        n: Maximum number of suggestions.
    """
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + ", ".join(repr(lowered[c]) for c in close) + "?"
