"""Attack vocabularies: YAML lists of words, each aimed at an ImageNet class."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from typoattack.config.parsing import as_str, load_yaml_mapping
from typoattack.config.types import AttackWord, Vocabulary
from typoattack.data.classes import resolve_class
from typoattack.errors import ConfigError, suggest


def load_vocab(path: str | Path) -> Vocabulary:
    """Load an attack vocabulary YAML.

    The file holds `name` and `words`, a list of `{text: ..., target: ...}` where the target is an
    open_clip ImageNet class name or index.

    Raises:
        ConfigError: The file is missing or malformed, the list is empty, a word repeats, or a
            target matches no class.
    """
    doc = load_yaml_mapping(path, "vocabulary")
    unknown = set(doc) - {"name", "description", "source", "words"}
    if unknown:
        key = str(sorted(map(str, unknown))[0])
        raise ConfigError(f"unknown key `{key}` in vocabulary {path}.{suggest(key, ['name', 'description', 'source', 'words'])}")
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
        seen.add(text)
        try:
            target = resolve_class(item["target"])
        except ConfigError as e:
            raise ConfigError(f"word {text!r} in vocabulary {path}: {e}") from None
        words.append(AttackWord(text=text, target_index=target))
    name = as_str("name", doc.get("name", Path(path).stem))
    return Vocabulary(name=name, words=tuple(words), path=str(path))


