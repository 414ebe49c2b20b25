"""The same target across languages: per_target_language.csv and its report section, written only when a
run's words are in more than one language (`--vocab goh2021 --vocab babel:ko`: "pizza" beside "피자",
both aimed at class 963).

A word's language comes from run.json (`vocab.words[].language`: `en` unless its vocabulary says
another), not from the records, so the records and tables of a run in one language are unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.analysis.labels import format_percent, get_model_label
from typoattack.analysis.metrics import MODEL_DEFENCE_KEYS, with_defence
from typoattack.analysis.report_page import ReportBlock, build_table_block
from typoattack.analysis.table_cells import format_target
from typoattack.files import write_csv
from typoattack.records import STYLE_COLUMNS

PER_TARGET_LANGUAGE_CSV = "per_target_language.csv"
DEFAULT_LANGUAGE = "en"
# Style columns that name a condition; `font` is left out: `--font auto` gives each language its own font.
_STYLE_KEYS = [c for c in STYLE_COLUMNS if c != "font"]
PER_TARGET_LANGUAGE_COLUMNS = [
    *MODEL_DEFENCE_KEYS, "target_index", "target_name", "fraction", "placement", *_STYLE_KEYS, "language", "word",
    "font", "n_images", "asr", "asr_ci_low", "asr_ci_high",
]
"""Columns of per_target_language.csv (style columns only where the per-word table has them)."""


def read_word_languages(infos: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Each word's language from run.json dicts (`vocab.words[].language`; `en` where absent); the first
    run that names a word decides."""
    languages: dict[str, str] = {}
    for info in infos:
        for w in (info.get("vocab") or {}).get("words", []):
            languages.setdefault(str(w["text"]), str(w.get("language") or DEFAULT_LANGUAGE))
    return languages


def build_per_target_language(per_word: pd.DataFrame, languages: Mapping[str, str]) -> pd.DataFrame | None:
    """The per-word rows of the targets that words in two or more languages aim at, with each word's
    language, in the order model, defence, target, fraction, placement, style, then `en` first and the
    other languages by code, then word. None when the table's words are all in one language.

    Args:
        per_word: The per-word table (`metrics.PER_WORD_COLUMNS`, optionally STYLE_COLUMNS).
        languages: Word -> language code (`read_word_languages`); a word it lacks is `en`.
    """
    if per_word.empty:
        return None
    table = with_defence(per_word).copy()
    table["language"] = [languages.get(str(w), DEFAULT_LANGUAGE) for w in table["word"]]
    if table["language"].nunique() < 2:
        return None
    table = table[table["target_index"] >= 0]  # a pseudo-word (random-class) has no one target
    keys = [*MODEL_DEFENCE_KEYS, "target_index", "fraction", "placement", *(c for c in _STYLE_KEYS if c in table)]
    spread = table.groupby(keys, dropna=False)["language"].transform("nunique")
    table = table[spread >= 2].copy()
    table["_order"] = [(lang != DEFAULT_LANGUAGE, lang) for lang in table["language"]]
    table = table.sort_values([*keys, "_order", "word"], kind="stable").drop(columns="_order")
    columns = [c for c in PER_TARGET_LANGUAGE_COLUMNS if c in table.columns]
    return table[columns].reset_index(drop=True)


def write_per_target_language(per_word: pd.DataFrame, infos: Iterable[Mapping[str, Any]], out: Path) -> pd.DataFrame | None:
    """Write `out`/per_target_language.csv when the runs' words are in more than one language; return
    the table (None, and no file, otherwise)."""
    table = build_per_target_language(per_word, read_word_languages(infos))
    if table is not None:
        write_csv(table, Path(out) / PER_TARGET_LANGUAGE_CSV)
    return table


def list_class_language_notes(infos: Iterable[Mapping[str, Any]]) -> list[str]:
    """The report's notes on `--class-language` (run.json `class_language`), one per distinct setting."""
    notes = []
    for info in infos:
        entry = info.get("class_language")
        if entry:
            notes.append(f"The classifier read its class names in {entry['language']!r} (--class-language): "
                         f"{entry['names_in_language']} from Babel-ImageNet, {entry['names_in_english']} in English "
                         f"(the language has no name for them); templates: {entry['templates']} "
                         f"({entry['template_count']}). The tables name the classes in English.")
    return list(dict.fromkeys(notes))


def list_language_blocks(table: pd.DataFrame | None, where: str = PER_TARGET_LANGUAGE_CSV) -> list[ReportBlock]:
    """The report's "Languages" section: per model (and defence), each target's words side by side in
    every language, with the ASR and its 95% Wilson interval. Empty when `table` is None."""
    if table is None:
        return []
    languages = sorted(set(table["language"]), key=lambda lang: (lang != DEFAULT_LANGUAGE, lang))
    blocks = [ReportBlock("h2", "Languages"),
              ReportBlock("p", f"The words are in {len(languages)} languages ({', '.join(languages)}). For each "
                               "target that words in two or more languages aim at: the attack success rate of each "
                               "word, with its 95% Wilson interval, under the same fraction and placement. The "
                               f"rows are in [{where}]({where}) beside this page.")]
    several = table[MODEL_DEFENCE_KEYS].drop_duplicates().shape[0] > 1
    for (model, pretrained, defence), rows in table.groupby(MODEL_DEFENCE_KEYS, sort=True, dropna=False):
        if several:
            blocks.append(ReportBlock("h3", f"{get_model_label(model, pretrained)}, defence {defence}"))
        cells = [[format_target(r), f"{r['fraction']:g}", str(r["placement"]), str(r["language"]), f"`{r['word']}`",
                  str(r["font"]) if "font" in r else "", str(r["n_images"]),
                  f"{format_percent(r['asr'])} [{100 * r['asr_ci_low']:.1f}–{100 * r['asr_ci_high']:.1f}]"]
                 for r in rows.to_dict("records")]
        blocks.append(build_table_block(["target", "fraction", "placement", "language", "word", "font", "n",
                                         "ASR [95% CI]"], cells, "per-word"))
    return blocks


__all__ = ["PER_TARGET_LANGUAGE_COLUMNS", "PER_TARGET_LANGUAGE_CSV", "build_per_target_language",
           "list_class_language_notes", "list_language_blocks", "read_word_languages", "write_per_target_language"]
