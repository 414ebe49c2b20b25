"""The class set a run classifies into (`--classes`), declared once for every task that takes it (`eval`,
`vlm`, `find-heads`), with its parser.

A class set is `imagenet` (the default: open_clip's 1,000 ImageNet class names, WordNet lemmas, the `openai`
templates), a built-in name of a common zero-shot dataset (`assets/class_sets/clip_prompts.json`: the CLIP
paper's class names and templates), `hf` (the names of the label column's `ClassLabel` feature of an `hf:`
dataset) or a file of names in label order. The config holds the name or the file's absolute path; the
names themselves are read by `typoattack.data.class_sets`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from typoattack.config.common import RunSettings
from typoattack.config.options import Panel, option
from typoattack.config.parsing import as_str, is_name, resolve_path
from typoattack.constants import CLASS_SETS_FILE
from typoattack.errors import ConfigError, suggest
from typoattack.files import expand_path

IMAGENET_CLASSES = "imagenet"
"""The default class set: ImageNet-1k as open_clip names it."""
HF_CLASSES = "hf"
"""The class set of an `hf:` dataset's label column (its `ClassLabel` names)."""
DATASET_TEMPLATES = "dataset"
"""The `templates` value for the class set's own zero-shot templates (`openai` for imagenet)."""
OMIT_DEFAULT = {"fingerprint_omit_default": True}
"""Field metadata of a setting that enters the fingerprint only when it is not its default (a setting added
after runs were made: they keep their fingerprint, and resume)."""


@lru_cache(maxsize=1)
def load_builtin_class_sets() -> dict[str, Any]:
    """The shipped `clip_prompts.json`: {"class_sets": {name: {"title", "classes", "templates"}}, "aliases",
    "source", "commit", "licence", "skipped"}."""
    return json.loads(CLASS_SETS_FILE.read_text(encoding="utf-8"))


def list_class_set_names() -> list[str]:
    """The names `--classes` takes besides a file: imagenet, hf and the built-in datasets (sorted)."""
    return [IMAGENET_CLASSES, HF_CLASSES, *sorted(load_builtin_class_sets()["class_sets"])]


def parse_class_set(value: Any, base: Path | None = None) -> str:
    """A `classes` value: a name as its canonical spelling (aliases such as `fgvc_aircraft` -> `aircraft`,
    any case), or a file's absolute path (relative to `base`, else the working directory).

    Raises:
        ConfigError: Neither a known name nor an existing file (the message lists the names).
    """
    text = as_str("classes", value)
    key = text.lower()
    doc = load_builtin_class_sets()
    key = doc["aliases"].get(key, key)
    if key in (IMAGENET_CLASSES, HF_CLASSES) or key in doc["class_sets"]:
        return key
    path = Path(resolve_path(text, base))
    if path.is_file():
        return str(path.resolve())
    names = list_class_set_names()
    if is_name(text) and not expand_path(text).exists():
        raise ConfigError(f"classes {text!r} is neither a class set ({', '.join(names)}) nor a file of class "
                          f"names.{suggest(key, names)}")
    raise ConfigError(f"classes file {path} does not exist; give a YAML list or a text file of class names (one a "
                      "line, in label order), or a class set name (imagenet, hf, cifar100, ...)")


@dataclass(frozen=True, kw_only=True)
class ClassSetSettings(RunSettings):
    """What classifying into a class set adds: the class set.

    Attributes:
        classes: `imagenet`, `hf`, a built-in dataset name, or a file's absolute path.
        class_language: The language of the classifier's (and a vlm question's) class names, an ISO 639-1
            code (`data.babel`): `en`, open_clip's names, by default.
    """

    classes: str = field(default=IMAGENET_CLASSES, metadata=option(
        panel=Panel.DATA, metavar="NAME|PATH", parse=parse_class_set, metadata=OMIT_DEFAULT,
        help="Class set the labels index: imagenet, hf (an hf: dataset's ClassLabel names), a dataset name "
             "(cifar100, food101, pets, ...) or a file of names."))
    class_language: str = field(default="en", metadata=option(
        panel=Panel.MODEL, metavar="LANG", parse=lambda v: as_str("class_language", v).strip().lower(),
        metadata=OMIT_DEFAULT,
        help="Language of the class names the model reads (ko, zh, ar, ...: Babel-ImageNet's ImageNet names, "
             "English where it has none)."))

    @property
    def is_imagenet(self) -> bool:
        """True for the default class set (ImageNet-1k, WordNet lemmas)."""
        return self.classes == IMAGENET_CLASSES

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """The shared paths, then a classes file (relative to the YAML file; names stay as written)."""
        super().resolve_paths(raw, base)
        if isinstance(raw.get("classes"), str) and raw["classes"].strip():
            raw["classes"] = parse_class_set(raw["classes"], base)


__all__ = ["DATASET_TEMPLATES", "HF_CLASSES", "IMAGENET_CLASSES", "OMIT_DEFAULT", "ClassSetSettings",
           "list_class_set_names", "load_builtin_class_sets", "parse_class_set"]
