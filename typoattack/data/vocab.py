"""Attack vocabularies: YAML lists of words, each aimed at a class of the run's class set (ImageNet by
default), or made from the class set itself (`classes`, `random-class`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from typoattack.config.parsing import as_str, load_yaml_mapping
from typoattack.config.types import AttackWord, Vocabulary
from typoattack.constants import BABEL_PREFIX, CLASSES_VOCAB, RANDOM_CLASS_WORD
from typoattack.data.babel import load_babel_vocab
from typoattack.data.classes import resolve_class
from typoattack.errors import ConfigError, suggest

if TYPE_CHECKING:
    from typoattack.data.class_sets import ClassSet


def load_attack_vocab(value: str | Sequence[str], classes: ClassSet) -> Vocabulary:
    """The vocabulary a run's `vocab` names: `classes` or `random-class` made from the class set
    (`build_class_vocab`), `babel:LANG` (Babel-ImageNet's names in LANG: `data.babel`), else a YAML file
    whose targets resolve against the class set (`load_vocab`); several (`--vocab` repeated): their words
    in turn (`combine_vocabularies`)."""
    if not isinstance(value, str):
        return combine_vocabularies([load_attack_vocab(v, classes) for v in value])
    if value in (CLASSES_VOCAB, RANDOM_CLASS_WORD):
        return build_class_vocab(classes, random=value == RANDOM_CLASS_WORD)
    if value.startswith(BABEL_PREFIX):
        if not classes.is_imagenet:
            raise ConfigError(f"--vocab {value} aims Babel-ImageNet's names at ImageNet classes; this run's class set "
                              f"is {classes.describe()} (use --classes imagenet)")
        return load_babel_vocab(value[len(BABEL_PREFIX):])
    return load_vocab(value, classes)


def combine_vocabularies(vocabs: Sequence[Vocabulary]) -> Vocabulary:
    """The words of several vocabularies in turn (a word already given by an earlier one is left out
    and counted in `notes`), named `a+b`.

    Raises:
        ConfigError: `random-class` among several (its one pseudo-word cannot be combined).
    """
    if len(vocabs) == 1:
        return vocabs[0]
    if any(v.pseudo_word for v in vocabs):
        raise ConfigError(f"--vocab {RANDOM_CLASS_WORD} cannot be combined with another vocabulary")
    words: dict[str, AttackWord] = {}
    notes = [n for v in vocabs for n in v.notes]
    for v in vocabs:
        repeated = [w.text for w in v.words if w.text in words]
        words.update((w.text, w) for w in v.words if w.text not in words)
        if repeated:
            notes.append(f"{v.name}: {len(repeated)} word(s) given by an earlier vocabulary left out "
                         f"({', '.join(repeated[:5])}{', ...' if len(repeated) > 5 else ''}).")
    return Vocabulary("+".join(v.name for v in vocabs), tuple(words.values()), " + ".join(v.path for v in vocabs),
                      notes=tuple(notes))


def build_class_vocab(classes: ClassSet, random: bool = False) -> Vocabulary:
    """The class set's names as attack words, each aimed at its class.

    Args:
        classes: The run's class set.
        random: False (`classes`): every name a word of its own (a name shared by several classes once, aimed
            at the first of them). True (`random-class`, Defense-Prefix's protocol): every class's name, as the
            texts of the one pseudo-word `random-class`; each image is shown one class's name other than its own
            (`records.select_condition_images`).
    """
    if random:
        if len(classes.names) < 2:
            raise ConfigError(f"--vocab {RANDOM_CLASS_WORD} needs at least two classes; class set "
                              f"{classes.describe()} has one")
        words = tuple(AttackWord(name, i) for i, name in enumerate(classes.names))
        return Vocabulary(RANDOM_CLASS_WORD, words, pseudo_word=RANDOM_CLASS_WORD)
    first: dict[str, int] = {}
    for i, name in enumerate(classes.names):
        first.setdefault(name, i)
    return Vocabulary(f"{CLASSES_VOCAB}:{classes.label}", tuple(AttackWord(t, i) for t, i in first.items()))


def load_vocab(path: str | Path, classes: ClassSet | None = None) -> Vocabulary:
    """Load an attack vocabulary YAML.

    The file holds `name` and `words` (and optionally `language`, an ISO 639-1 code of its words: `en`
    when absent), a list of `{text: ..., target: ...}` where the target is a
    class name or index of the run's class set (ImageNet's: an open_clip class name, a WordNet lemma or
    an index 0-999).

    Args:
        path: The YAML file.
        classes: The run's class set (None: ImageNet).

    Raises:
        ConfigError: The file is missing or malformed, the list is empty, a word repeats or is the
            reserved `random-class`, or a target matches no class.
    """
    doc = load_yaml_mapping(path, "vocabulary")
    keys = ["name", "description", "source", "language", "words"]
    unknown = set(doc) - set(keys)
    if unknown:
        key = str(sorted(map(str, unknown))[0])
        raise ConfigError(f"unknown key `{key}` in vocabulary {path}.{suggest(key, keys)}")
    language = as_str("language", doc.get("language", "en")).strip().lower()
    words_raw = doc.get("words")
    if not isinstance(words_raw, list) or not words_raw:
        raise ConfigError(f"vocabulary {path} has no words: add `words:` with a list of `{{text, target}}` entries")
    words = []
    seen: set[str] = set()
    for i, item in enumerate(words_raw):
        if not isinstance(item, Mapping) or "text" not in item or "target" not in item:
            raise ConfigError(f"word {i + 1} of vocabulary {path} must be a mapping with `text` and `target`")
        extra = set(item) - {"text", "target", "note"}
        if extra:
            key = str(sorted(map(str, extra))[0])
            raise ConfigError(f"unknown key `{key}` in word {i + 1} of vocabulary {path}.{suggest(key, ['text', 'target', 'note'])}")
        text = as_str("text", item["text"])
        if len(text) > 40:
            raise ConfigError(f"word {text!r} in vocabulary {path} is longer than 40 characters")
        if text in seen:
            raise ConfigError(f"word {text!r} appears twice in vocabulary {path}")
        if text == RANDOM_CLASS_WORD:
            raise ConfigError(f"word {text!r} in vocabulary {path} is reserved for --vocab {RANDOM_CLASS_WORD}")
        seen.add(text)
        try:
            target = resolve_class(item["target"]) if classes is None else classes.resolve(item["target"])
        except ConfigError as e:
            raise ConfigError(f"word {text!r} in vocabulary {path}: {e}") from None
        words.append(AttackWord(text=text, target_index=target, language=language))
    name = as_str("name", doc.get("name", Path(path).stem))
    return Vocabulary(name=name, words=tuple(words), path=str(path))


