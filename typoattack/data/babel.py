"""ImageNet's class names in other languages (Babel-ImageNet, shipped in assets/babel/): attack words
(`--vocab babel:LANG`) and the classifier's names and templates (`--class-language LANG`).

Languages are ISO 639-1 codes (`ko`, `zh`, `ar`), in any case. `en` is open_clip's English names,
the default everywhere.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from typoattack.config.types import AttackWord, Vocabulary
from typoattack.constants import ASSETS_DIR, BABEL_PREFIX
from typoattack.errors import ConfigError, suggest

if TYPE_CHECKING:
    from typoattack.data.class_sets import ClassSet

BABEL_DIR = ASSETS_DIR / "babel"
BABEL_FILE = BABEL_DIR / "babel_imagenet.json.gz"
TEMPLATES_FILE = BABEL_DIR / "zeroshot_templates.json"
ENGLISH = "en"
MAX_WORD_LENGTH = 40
"""Longest attack word, as in vocabulary files (`data.vocab`): a longer name is left out and counted."""
BARE_TEMPLATE = "{}"


@lru_cache(maxsize=1)
def _read_babel() -> dict[str, dict[int, str]]:
    with gzip.open(BABEL_FILE, "rt", encoding="utf-8") as f:
        raw = json.load(f)
    return {lang.lower(): {int(i): str(n) for i, n in zip(*entry, strict=True)} for lang, entry in raw.items()}


def list_languages() -> list[str]:
    """The languages Babel-ImageNet has names in (lower-case ISO 639-1 codes, `en` included)."""
    return sorted(_read_babel())


def check_language(language: str) -> str:
    """The language code in lower case.

    Raises:
        ConfigError: Babel-ImageNet has no names in it (the message suggests the nearest codes).
    """
    code = language.strip().lower()
    if code not in _read_babel():
        codes = list_languages()
        raise ConfigError(f"Babel-ImageNet has no class names in {language!r}; use an ISO 639-1 code such as ko, "
                          f"zh, ar, hi ({len(codes)} languages: {', '.join(codes)}).{suggest(code, codes)}")
    return code


def get_babel_names(language: str) -> dict[int, str]:
    """The ImageNet class names in `language`, by class index (only the classes it has a name for).

    Raises:
        ConfigError: An unknown language.
    """
    return dict(_read_babel()[check_language(language)])


def load_babel_vocab(language: str) -> Vocabulary:
    """`--vocab babel:LANG`: each ImageNet class name in LANG as a word aimed at its class, in class
    order. Classes LANG has no name for are skipped, a name longer than MAX_WORD_LENGTH is left out,
    and a name shared by several classes is kept once, aimed at the first; `notes` counts each.

    Raises:
        ConfigError: An unknown language.
    """
    code = check_language(language)
    names = _read_babel()[code]
    words, seen, long, shared = [], set(), 0, 0
    for index in sorted(names):
        text = names[index].strip()
        if len(text) > MAX_WORD_LENGTH:
            long += 1
        elif text in seen:
            shared += 1
        else:
            seen.add(text)
            words.append(AttackWord(text, index, code))
    notes = [f"babel:{code}: {len(names)} of the 1000 ImageNet classes have a name in {code!r}; "
             f"the other {1000 - len(names)} are skipped."]
    if long:
        notes.append(f"babel:{code}: {long} name(s) longer than {MAX_WORD_LENGTH} characters left out.")
    if shared:
        notes.append(f"babel:{code}: {shared} name(s) shared with an earlier class left out (the word aims at "
                     "the first class of that name).")
    return Vocabulary(f"{BABEL_PREFIX}{code}", tuple(words), f"{BABEL_PREFIX}{code}", notes=tuple(notes))


@dataclass(frozen=True)
class ClassLanguage:
    """The classifier's class names in a language (`--class-language`).

    Attributes:
        language: The language code.
        names: ImageNet's class names in index order: in `language` where Babel-ImageNet has one, else
            open_clip's English name.
        n_english: How many classes kept their English name.
        templates: The zero-shot templates in `language` (clip_benchmark's for ar, it, ja, zh), or
            None where no source has them (the bare name `{}` is then used).
    """

    language: str
    names: tuple[str, ...]
    n_english: int
    templates: tuple[str, ...] | None

    def choose_templates(self, templates: tuple[str, ...], name: str) -> tuple[str, ...]:
        """The templates to classify with: those of a templates file of the user's (`name` a file) as
        given; else (a built-in English set) the language's own, or the bare name `{}`."""
        if Path(name).is_file():
            return templates
        return self.templates or (BARE_TEMPLATE,)

    def describe(self, templates: Sequence[str]) -> dict[str, Any]:
        """run.json's `class_language` entry, with the templates the run used."""
        used = tuple(templates)
        how = (f"clip_benchmark's {self.language} ImageNet templates" if used == self.templates
               else "the bare class name {}" if used == (BARE_TEMPLATE,) else "the templates file given")
        return {"language": self.language, "names_in_language": len(self.names) - self.n_english,
                "names_in_english": self.n_english, "templates": how, "template_count": len(used)}

    def describe_line(self, templates: Sequence[str]) -> str:
        """The note a run and its report show."""
        d = self.describe(templates)
        return (f"Class names in {self.language!r} (--class-language): {d['names_in_language']} of "
                f"{len(self.names)} from Babel-ImageNet, {d['names_in_english']} in English (the language has no "
                f"name for them); templates: {d['templates']} ({d['template_count']}).")


def get_class_language(language: str, classes: ClassSet) -> ClassLanguage | None:
    """The classifier's names in `language` (None for `en`: the class set's own names, unchanged).

    Raises:
        ConfigError: An unknown language, or a class set other than ImageNet's.
    """
    code = check_language(language)
    if code == ENGLISH:
        return None
    if not classes.is_imagenet:
        raise ConfigError(f"--class-language {code} gives ImageNet's class names in {code}; this run's class set is "
                          f"{classes.describe()} (use --classes imagenet, or a class-names file in {code})")
    names = _read_babel()[code]
    localized = tuple(names.get(i, name) for i, name in enumerate(classes.names))
    return ClassLanguage(code, localized, sum(i not in names for i in range(len(classes.names))),
                         get_language_templates(code))


def get_classifier_texts(language: str, classes: ClassSet, templates: tuple[str, ...],
                         templates_name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The class names and templates a run's classifier reads: the class set's names and `templates`
    for `en`; else the names in `language` and `ClassLanguage.choose_templates`.

    Args:
        language: The run's `class_language`.
        classes: The run's class set.
        templates: The templates `templates_name` (the run's `templates`) gives.
        templates_name: A built-in name or a templates file.
    """
    chosen = get_class_language(language, classes)
    if chosen is None:
        return tuple(classes.names), templates
    return chosen.names, chosen.choose_templates(templates, templates_name)


@lru_cache(maxsize=8)
def get_language_templates(language: str) -> tuple[str, ...] | None:
    """The ImageNet zero-shot templates in `language` (with `{}` for the name), or None where no
    source has them (clip_benchmark ships ar, it, ja and zh)."""
    templates = json.loads(TEMPLATES_FILE.read_text(encoding="utf-8")).get(language.lower())
    return None if templates is None else tuple(t.replace("{c}", "{}") for t in templates)


__all__ = ["BABEL_FILE", "ENGLISH", "ClassLanguage", "check_language", "get_babel_names", "get_class_language",
           "get_classifier_texts", "get_language_templates", "list_languages", "load_babel_vocab"]
