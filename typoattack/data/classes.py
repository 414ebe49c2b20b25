"""ImageNet class metadata: open_clip's zero-shot class names, the standard WordNet-id order and
the WordNet lemmas of each class."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from typoattack.constants import LEMMAS_FILE, NUM_CLASSES, SYNSETS_FILE
from typoattack.errors import ConfigError, suggest

__all__ = ["IMAGENET_CLASSNAMES", "get_class_name", "list_class_names", "list_lemmas", "list_synsets", "resolve_class"]


@lru_cache(maxsize=1)
def list_class_names() -> Sequence[str]:
    """open_clip's 1000 zero-shot ImageNet class names, indexed by class.

    Read from open_clip's own `zero_shot_metadata` module (a module of plain lists). When open_clip
    is not imported yet, that one file is loaded by itself: importing the `open_clip` package loads
    torch (about 0.5 GB), which writing tables, merging and reporting do not need."""
    import importlib.util
    import sys

    if "open_clip" in sys.modules:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return IMAGENET_CLASSNAMES
    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = next((Path(d) / "zero_shot_metadata.py" for d in locations
                 if (Path(d) / "zero_shot_metadata.py").is_file()), None)
    if path is None:  # an unusual install: import the package
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return IMAGENET_CLASSNAMES
    module_spec = importlib.util.spec_from_file_location("_typoattack_open_clip_zero_shot_metadata", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.IMAGENET_CLASSNAMES


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


@lru_cache(maxsize=1)
def list_lemmas() -> tuple[tuple[str, ...], ...]:
    """The WordNet lemmas of each ImageNet class, indexed by class (e.g. class 412: 'ashcan',
    'trash can', 'garbage can', 'wastebin', ..., 'dustbin', ...)."""
    rows = [line.split("\t") for line in LEMMAS_FILE.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    if [r[0] for r in rows] != list(list_synsets()) or any(len(r) != 2 for r in rows):
        raise RuntimeError(f"{LEMMAS_FILE} is corrupt: expected one line per ImageNet class in class order")
    return tuple(tuple(lemma.strip() for lemma in r[1].split(", ")) for r in rows)


def get_class_name(index: int) -> str:
    """Return open_clip's zero-shot class name of ImageNet class `index` (0-999)."""
    return list_class_names()[index]


def resolve_class(target: str | int) -> int:
    """Resolve a class given by open_clip class name, WordNet lemma (both case-insensitive) or index.

    Args:
        target: A class name from open_clip's IMAGENET_CLASSNAMES, a WordNet lemma of an ImageNet
            class ('dustbin', 'ashcan' for class 412 'trash can'), or an index 0-999.

    Returns:
        The class index.

    Raises:
        ConfigError: The name matches no class (the message suggests the nearest names and
            lemmas), matches several classes (give the index), or the index is out of range.
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
    key = text.lower()
    names = list_class_names()
    matches = [i for i, name in enumerate(names) if name.lower() == key]
    what = "class names"
    if not matches:  # open_clip's names first, then WordNet's lemmas
        matches = [i for i, lemmas in enumerate(list_lemmas()) if key in (lemma.lower() for lemma in lemmas)]
        what = "WordNet lemmas of classes"
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(f"{i} ({names[i]})" for i in matches)
        raise ConfigError(f"target {target!r} is one of the {what} {listed}; give the class index instead")
    vocabulary = list(dict.fromkeys([*names, *(lemma for lemmas in list_lemmas() for lemma in lemmas)]))
    hint = suggest(text, vocabulary) or " Give a class index 0-999, a class name or a WordNet lemma."
    raise ConfigError(f"target {target!r} matches no ImageNet class name or WordNet lemma.{hint}")
