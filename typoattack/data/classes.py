"""ImageNet class metadata: open_clip's zero-shot class names and the standard WordNet-id order."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from typoattack.constants import NUM_CLASSES, SYNSETS_FILE
from typoattack.errors import ConfigError, suggest

__all__ = ["IMAGENET_CLASSNAMES", "get_class_name", "list_class_names", "list_synsets", "resolve_class"]


@lru_cache(maxsize=1)
def list_class_names() -> Sequence[str]:
    """open_clip's 1000 zero-shot ImageNet class names, indexed by class (imported on first use, so
    reading the synset list does not load torch)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return IMAGENET_CLASSNAMES


def __getattr__(name: str) -> Any:
    # `IMAGENET_CLASSNAMES` stays importable from here without importing open_clip at load time.
    if name == "IMAGENET_CLASSNAMES":
        return list_class_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@lru_cache(maxsize=1)
def list_synsets() -> tuple[str, ...]:
    """Return the 1000 ImageNet-1k WordNet ids in the standard (sorted) order: index i is class i."""
    synsets = tuple(SYNSETS_FILE.read_text().split())
    if len(synsets) != NUM_CLASSES or list(synsets) != sorted(synsets):
        raise RuntimeError(f"{SYNSETS_FILE} is corrupt: expected 1000 sorted WordNet ids")
    return synsets


def get_class_name(index: int) -> str:
    """Return open_clip's zero-shot class name of ImageNet class `index` (0-999)."""
    return list_class_names()[index]


def resolve_class(target: str | int) -> int:
    """Resolve a class given by open_clip class name (case-insensitive) or index to its index.

    Args:
        target: A class name from open_clip's IMAGENET_CLASSNAMES or an index 0-999.

    Returns:
        The class index.

    Raises:
        ConfigError: The name matches no class (the message suggests the nearest names), matches
            several classes, or the index is out of range.
    """
    if isinstance(target, bool):
        raise ConfigError(f"target {target!r} is not a class name or index")
    if isinstance(target, int):
        if not 0 <= target < NUM_CLASSES:
            raise ConfigError(f"target index {target} is outside 0-999")
        return target
    if not isinstance(target, str):
        raise ConfigError(f"target {target!r} is not a class name or index")
    text = target.strip()
    if text.isascii() and text.isdigit():
        return resolve_class(int(text))
    matches = [i for i, name in enumerate(list_class_names()) if name.lower() == text.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(
            f"target {target!r} names several classes {matches}; give the class index instead"
        )
    hint = suggest(text, list_class_names()) or " Give a class index 0-999 or an exact class name."
    raise ConfigError(f"target {target!r} matches no ImageNet class name.{hint}")
