"""Class sets: the classes a run's labels index and its zero-shot classifier names (`--classes`).

`imagenet` is open_clip's 1,000 ImageNet names (targets also by WordNet lemma; templates `openai`); a
built-in dataset name reads the CLIP paper's class names and templates shipped in
`assets/class_sets/clip_prompts.json`; `hf` reads the `ClassLabel` names of an `hf:` dataset's label column;
any other value is a file of names in label order (a YAML list, or one name a line). A run records its class
set in run.json (`ClassSet.to_info`: with the names, so tables and reports name the classes without the
source), and the tables read it back from there (`from_info`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from typoattack.config.classes import HF_CLASSES, IMAGENET_CLASSES, load_builtin_class_sets
from typoattack.config.parsing import read_yaml
from typoattack.config.types import DataSpec
from typoattack.data.classes import list_class_names, resolve_class
from typoattack.data.sources import read_hf_class_names
from typoattack.errors import ConfigError, OutputError, suggest

__all__ = ["ClassSet", "get_imagenet_class_set", "load_class_set", "read_class_names_file"]

IMAGENET_SOURCE = "open_clip IMAGENET_CLASSNAMES"


@dataclass(frozen=True)
class ClassSet:
    """The classes of a run, in label order.

    Attributes:
        name: `imagenet`, `hf`, a built-in dataset name (cifar100, ...), or the names file's path.
        names: The class names; label i is `names[i]`.
        templates: The set's own zero-shot templates (`--templates dataset`); None: `openai` (ImageNet).
        source: Where the names come from, in words (run.json).
        title: The set's name in tables and reports (empty: `name`, a file by its file name).
    """

    name: str
    names: tuple[str, ...]
    templates: tuple[str, ...] | None
    source: str
    title: str = ""

    @property
    def is_imagenet(self) -> bool:
        """True for the default class set (WordNet lemmas resolve targets; tables unchanged)."""
        return self.name == IMAGENET_CLASSES

    @property
    def label(self) -> str:
        """The set's name in tables and reports (`title`; else a file by its file name)."""
        if self.title:
            return self.title
        return Path(self.name).name if "/" in self.name or "\\" in self.name else self.name

    @property
    def digest(self) -> str:
        """A short hash of the names in order (run.json; two sets with the same digest name the same classes)."""
        return hashlib.sha256(json.dumps(list(self.names)).encode("utf-8")).hexdigest()[:16]

    def describe(self) -> str:
        """"cifar100 (100 classes)": the line tables and reports print."""
        return f"{self.label} ({len(self.names)} classes)"

    def to_info(self) -> dict[str, Any]:
        """run.json's `classes`: name, number of classes, source, digest, the templates' count and, but for
        ImageNet (open_clip's names, read back from open_clip), the names."""
        info: dict[str, Any] = {"name": self.name, "label": self.label, "n_classes": len(self.names),
                                "source": self.source, "digest": self.digest,
                                "templates": None if self.templates is None else len(self.templates)}
        if not self.is_imagenet:
            info["names"] = list(self.names)
        return info

    @classmethod
    def from_info(cls, info: Mapping[str, Any] | None) -> ClassSet:
        """The class set run.json records (`to_info`); ImageNet's when it records none (a run made before
        class sets existed)."""
        if not info or info.get("name", IMAGENET_CLASSES) == IMAGENET_CLASSES or "names" not in info:
            return get_imagenet_class_set()
        return cls(str(info["name"]), tuple(str(n) for n in info["names"]), None, str(info.get("source", "")),
                   str(info.get("label", "")))

    def resolve(self, target: Any) -> int:
        """A class given by name (case-insensitive) or index: ImageNet's also by WordNet lemma
        (`data.classes.resolve_class`).

        Raises:
            ConfigError: No such class (the message suggests the nearest names), a name of several classes
                (give the index), or an index outside the set.
        """
        if self.is_imagenet:
            return resolve_class(target)
        n = len(self.names)
        if isinstance(target, bool) or not isinstance(target, (str, int)):
            raise ConfigError(f"target {target!r} is not a class name or index")
        if isinstance(target, int) or (target.strip().isascii() and target.strip().isdigit()):
            index = int(target)
            if not 0 <= index < n:
                raise ConfigError(f"target index {index} is outside 0-{n - 1} (class set {self.describe()})")
            return index
        key = target.strip().lower()
        matches = [i for i, name in enumerate(self.names) if name.lower() == key]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(f"{i} ({self.names[i]})" for i in matches)
            raise ConfigError(f"target {target!r} names the classes {listed}; give the class index instead")
        hint = suggest(target.strip(), list(self.names)) or f" Give a class index 0-{n - 1} or a class name."
        raise ConfigError(f"target {target!r} matches no class of class set {self.describe()}.{hint}")


@lru_cache(maxsize=1)
def get_imagenet_class_set() -> ClassSet:
    """ImageNet-1k as open_clip names it (templates: `openai`)."""
    return ClassSet(IMAGENET_CLASSES, tuple(list_class_names()), None, IMAGENET_SOURCE)


def read_class_names_file(path: str | Path) -> tuple[str, ...]:
    """Class names in label order from a file: a YAML (or JSON) list of names, or a mapping with `classes:`
    (.yaml, .yml, .json); any other file, one name a line (blank lines and lines starting with `#` skipped).

    Raises:
        ConfigError: Unreadable, no names, or an entry that is not a non-empty name.
    """
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        doc = read_yaml(path, "class names")
        if isinstance(doc, Mapping):
            doc = doc.get("classes")
        if not isinstance(doc, list):
            raise ConfigError(f"class names file {path} must hold a list of names (or `classes:` with one)")
        names = doc
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read class names file {path}: {e}") from None
        names = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    bad = [n for n in names if isinstance(n, bool) or not isinstance(n, (str, int, float)) or not str(n).strip()]
    if bad:
        raise ConfigError(f"class names file {path}: entry {bad[0]!r} is not a class name")
    if not names:
        raise ConfigError(f"class names file {path} holds no class names")
    return tuple(str(n).strip() for n in names)


def get_common_class_set(infos: Sequence[Mapping[str, Any] | None]) -> ClassSet:
    """The one class set of several runs, from their run.json `classes` (`ClassSet.to_info`; None: ImageNet,
    a run made before class sets).

    Raises:
        OutputError: The runs classify into different class sets (their numbers do not compare).
    """
    sets = [ClassSet.from_info(info) for info in infos]
    if len({(c.names, c.label) for c in sets}) > 1:
        listed = ", ".join(dict.fromkeys(c.describe() for c in sets))
        raise OutputError(f"the runs classify into different class sets ({listed}); report each class set's runs "
                          "on their own")
    return sets[0]


def load_class_set(value: str, data: DataSpec | None = None) -> ClassSet:
    """The class set a `classes` value names (`config.classes.parse_class_set` made it canonical).

    Args:
        value: imagenet, hf, a built-in dataset name, or a names file's path.
        data: The run's data (read for `hf`).

    Raises:
        ConfigError: A names file that cannot be read.
        DataError: `hf` with data that is no `hf:` dataset with a ClassLabel label column.
    """
    if value == IMAGENET_CLASSES:
        return get_imagenet_class_set()
    if value == HF_CLASSES:
        if data is None:
            raise ConfigError("--classes hf needs the data it reads the names from (--data hf:NAME)")
        names = read_hf_class_names(data)
        return ClassSet(HF_CLASSES, names, None,
                        f"{data.source} split {data.hf_split}, ClassLabel names of column {data.hf_label_column!r}",
                        f"{data.source} {data.hf_label_column}")
    builtin = load_builtin_class_sets()
    if value in builtin["class_sets"]:
        entry = builtin["class_sets"][value]
        return ClassSet(value, tuple(entry["classes"]), tuple(entry["templates"]),
                        f"CLIP data/prompts.md ({entry['title']}), openai/CLIP@{builtin['commit'][:12]}, MIT")
    return ClassSet(value, read_class_names_file(value), None, f"file {value}")


def list_class_targets(classes: ClassSet) -> Sequence[tuple[str, int]]:
    """(name, index) of every class, each name once (the first class of a name shared by several)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(classes.names):
        seen.setdefault(name, i)
    return list(seen.items())
