"""Fonts that can draw a word: `--font auto`, and the fallback of the shipped default font.

A word is drawn in one font file (face 0 of a collection). For `--font auto`, and for a word the
shipped default font (DejaVu Sans Bold) cannot draw, the font is the first one that has a glyph for
every character of the word, searched in this order:

1. the fonts shipped in the package (fonts/: DejaVu Sans Bold first, then the others by name);
2. the folders of the environment variable TYPOATTACK_FONT_DIRS (separated by `os.pathsep`, in the
   order given; the .ttf/.otf/.ttc/.otc files under each, by path);
3. the fonts installed on the machine: with fontconfig (`fc-list`, each face's charset) where
   `fc-list` exists, else matplotlib's font manager; upright before italic, the weight nearest bold
   first, then by path.

The choice depends only on the fonts found, never on the order a run meets its words. A word no
font covers is one line naming the characters, their script and what to install.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from typoattack.config.types import RenderStyle
from typoattack.constants import AUTO_FONT, DEFAULT_FONT, FONTS_DIR
from typoattack.errors import ConfigError, RenderError
from typoattack.records import Condition

FONT_DIRS_ENV = "TYPOATTACK_FONT_DIRS"
"""Folders searched for fonts after the shipped ones (os.pathsep-separated)."""
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_CJK_SCRIPTS = {"Hang", "Hani", "Hira", "Kana", "Bopo"}


@dataclass(frozen=True)
class SystemFont:
    """An installed font face 0 and the characters it covers.

    Attributes:
        path: The font file.
        rank: Sort key among installed fonts: (italic, distance of the weight from bold).
        starts: First code point of each covered range, ascending.
        ends: Last code point of each range.
    """

    path: str
    rank: tuple[int, int]
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def covers(self, codepoint: int) -> bool:
        """Whether the font has a glyph for `codepoint` (by its charset)."""
        i = bisect.bisect_right(self.starts, codepoint) - 1
        return i >= 0 and codepoint <= self.ends[i]


def get_script_name(char: str) -> str:
    """The Unicode script of a character in words ("Hangul", "Arabic"; "Common" for digits and
    punctuation)."""
    from fontTools import unicodedata as fu

    return str(fu.script_name(fu.script(char)))


@lru_cache(maxsize=256)
def _read_cmap(path: str, size: int, mtime_ns: int) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, lazy=True, fontNumber=0) as tt:
            return frozenset(tt.getBestCmap() or {})
    except Exception:  # noqa: BLE001 - fontTools raises many types for files that are not fonts
        return frozenset()


def get_codepoints(path: str | Path) -> frozenset[int]:
    """The code points face 0 of a font file maps to glyphs (empty for a file that is no font)."""
    try:
        st = os.stat(path)
    except OSError:
        return frozenset()
    return _read_cmap(str(path), st.st_size, st.st_mtime_ns)


def list_missing(word: str, path: str | Path) -> list[str]:
    """The distinct characters of `word` that face 0 of the font has no glyph for, in order."""
    cmap = get_codepoints(path)
    return [ch for ch in dict.fromkeys(word) if ord(ch) not in cmap]


def get_font_dirs() -> list[Path]:
    """The folders of TYPOATTACK_FONT_DIRS, in order.

    Raises:
        ConfigError: A listed folder does not exist.
    """
    dirs = []
    for entry in os.environ.get(FONT_DIRS_ENV, "").split(os.pathsep):
        if not entry.strip():
            continue
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"{FONT_DIRS_ENV} names {entry}, which is not a folder")
        dirs.append(folder.resolve())
    return dirs


def _list_folder_fonts(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())


def list_local_fonts() -> list[str]:
    """Tiers 1 and 2 of the search: the shipped fonts (the default first), then those of
    TYPOATTACK_FONT_DIRS, each folder's by path."""
    shipped = [str(DEFAULT_FONT), *(p for p in _list_folder_fonts(FONTS_DIR) if p != str(DEFAULT_FONT))]
    return list(dict.fromkeys([*shipped, *(p for d in get_font_dirs() for p in _list_folder_fonts(d))]))


def _parse_charset(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """fontconfig's charset text ("20-7e a0-17f 2010") as sorted (starts, ends)."""
    ranges = []
    for part in text.split():
        lo, _, hi = part.partition("-")
        try:
            ranges.append((int(lo, 16), int(hi or lo, 16)))
        except ValueError:
            continue
    ranges.sort()
    return tuple(r[0] for r in ranges), tuple(r[1] for r in ranges)


def _list_fontconfig_fonts(fc_list: str) -> list[SystemFont]:
    try:
        out = subprocess.run([fc_list, "--format", "%{file}\t%{index}\t%{slant}\t%{weight}\t%{charset}\n"],
                             capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    fonts = {}
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or parts[1].strip() != "0" or not parts[0].lower().endswith(FONT_SUFFIXES):
            continue
        path, _, slant, weight, charset = parts
        try:  # fontconfig's scale: slant 0 roman; weight 80 regular, 200 bold
            rank = (int(float(slant or 0) != 0), abs(int(float((weight or "80").split()[0])) - 200))
        except ValueError:
            rank = (0, 120)
        fonts[path] = SystemFont(path, rank, *_parse_charset(charset))
    return list(fonts.values())


def _list_matplotlib_fonts() -> list[SystemFont]:
    from matplotlib import font_manager

    weights = {"ultralight": 200, "light": 300, "normal": 400, "regular": 400, "book": 400, "medium": 500,
               "roman": 400, "semibold": 600, "demibold": 600, "demi": 600, "bold": 700, "heavy": 800,
               "extra bold": 800, "black": 900}
    fonts = {}
    for entry in font_manager.fontManager.ttflist:
        path = str(entry.fname)
        if not path.lower().endswith(FONT_SUFFIXES) or path in fonts:
            continue
        weight = entry.weight if isinstance(entry.weight, int) else weights.get(str(entry.weight).lower(), 400)
        cmap = sorted(get_codepoints(path))
        fonts[path] = SystemFont(path, (int(entry.style != "normal"), abs(weight - 700)), tuple(cmap), tuple(cmap))
    return list(fonts.values())


@lru_cache(maxsize=1)
def list_system_fonts() -> tuple[tuple[SystemFont, ...], str]:
    """Tier 3 of the search, in search order, and how it was found ("fontconfig" or "matplotlib")."""
    fc_list = shutil.which("fc-list")
    fonts, method = (_list_fontconfig_fonts(fc_list), "fontconfig") if fc_list else (_list_matplotlib_fonts(), "matplotlib")
    return tuple(sorted(fonts, key=lambda f: (f.rank, f.path))), method


@lru_cache(maxsize=4096)
def _find_font(word: str, local: tuple[str, ...]) -> str | None:
    for path in local:
        if not list_missing(word, path):
            return path
    wanted = [ord(ch) for ch in dict.fromkeys(word)]
    for font in list_system_fonts()[0]:
        # fontconfig's charset may leave out a glyph the cmap has (or the reverse): the cmap decides.
        if font.path not in local and all(font.covers(c) for c in wanted) and not list_missing(word, font.path):
            return font.path
    return None


def find_font(word: str) -> str:
    """The first font in the search order (module docstring) with a glyph for every character of `word`.

    Raises:
        RenderError: No font covers the word (one line: the characters, their script, what to install).
    """
    found = _find_font(word, tuple(list_local_fonts()))
    if found is not None:
        return found
    raise RenderError(describe_missing_font(word))


def describe_missing_font(word: str) -> str:
    """The message for a word no font covers: the characters no font has (or, when each has some
    font but none has them all, the word's scripts), and how to get a font."""
    local = list_local_fonts()
    system = list_system_fonts()[0]
    uncovered = [ch for ch in dict.fromkeys(word)
                 if not any(ord(ch) in get_codepoints(p) for p in local) and not any(f.covers(ord(ch)) for f in system)]
    shown = uncovered or [ch for ch in dict.fromkeys(word) if not ch.isspace()]
    scripts = ", ".join(dict.fromkeys(get_script_name(ch) for ch in shown))
    chars = "".join(shown[:8]) + ("…" if len(shown) > 8 else "")
    what = (f"no installed font covers {chars} ({scripts})" if uncovered
            else f"no installed font covers every character of {word!r} ({scripts})")
    package = "fonts-noto-cjk" if {get_script_code(ch) for ch in shown} & _CJK_SCRIPTS else "fonts-noto-core"
    return (f"{what}; install one (apt install {package}), add a folder of fonts to {FONT_DIRS_ENV}, "
            "or pass --font PATH")


def get_script_code(char: str) -> str:
    """The ISO 15924 code of a character's script ("Hang")."""
    from fontTools import unicodedata as fu

    return str(fu.script(char))


def resolve_font(word: str, font: str) -> str:
    """The font file that draws `word` for a style's `font`: the search's choice for `auto`, and for
    the shipped default font when it lacks a character of the word; else `font` itself (a font
    without a glyph is then an error where the word is drawn, naming the character).

    Raises:
        RenderError: `auto` (or the default's fallback) finds no font for the word.
    """
    if font == AUTO_FONT:
        return find_font(word)
    if Path(font) == DEFAULT_FONT and word and list_missing(word, font):
        return find_font(word)
    return font


def resolve_fonts(conditions: Sequence[Condition]) -> tuple[list[Condition], dict[str, Any] | None]:
    """The conditions with each style's font resolved for the text it draws (`resolve_font`), and
    run.json's `fonts` entry: the search order and the font each word got where its style asked for
    `auto` or the default fell back (None when every word is drawn in its style's own font, so a run
    with neither has no entry). The texts of a pseudo-word (`random-class`: one condition per class,
    shown per image) share one font, the first that covers all of them.

    Raises:
        RenderError: A word no font covers.
    """
    # The text each condition's font must cover: its own, or all its pseudo-word's texts together.
    groups: dict[tuple[Any, ...], str] = {}
    for c in conditions:
        if c.per_image:
            key = (c.word, c.fraction, c.placement, c.style)
            groups[key] = groups.get(key, "") + c.drawn_text
    resolved, words = [], {}
    for c in conditions:
        text = "".join(sorted(set(groups[(c.word, c.fraction, c.placement, c.style)]))) if c.per_image else c.drawn_text
        font = resolve_font(text, c.style.font)
        if font != c.style.font:
            resolved.append(dataclasses.replace(c, style=dataclasses.replace(c.style, font=font)))
        else:
            resolved.append(c)
        if c.style.font == AUTO_FONT or font != c.style.font:
            requested = c.style.font if c.style.font == AUTO_FONT else Path(c.style.font).name
            words.setdefault((c.word, requested), {"word": c.word, "requested": requested, "font": font,
                                                   "file": Path(font).name})
    if not words:
        return resolved, None
    search = [str(FONTS_DIR), *map(str, get_font_dirs()), f"installed fonts ({list_system_fonts()[1]})"]
    return resolved, {"search": search, "words": list(words.values())}


def read_run_styles(info: Mapping[str, Any]) -> list[RenderStyle]:
    """A run's text styles from its run.json (`config.styles`), and each with every font chosen for a
    word (`fonts`), so that `records.Condition.from_row` finds the style of every record."""
    styles = [RenderStyle(font=st["font"], fill=tuple(st["fill"]), outline=tuple(st["outline"]),
                          outline_width=st["outline_width"], opacity=st["opacity"])
              for st in info.get("config", {}).get("styles", [])]
    chosen = [d["font"] for d in (info.get("fonts") or {}).get("words", []) if Path(d["font"]).is_file()]
    return [*styles, *dict.fromkeys(dataclasses.replace(st, font=f) for st in styles for f in chosen)]


def get_fingerprint_fonts(info: dict[str, Any] | None) -> list[list[Any]]:
    """What the fingerprint holds of `describe_fonts`: (word, requested, font file, its size in bytes)
    of each chosen font, so that another font installed between two sessions makes another run."""
    if not info:
        return []
    return [[d["word"], d["requested"], d["font"], os.path.getsize(d["font"])] for d in info["words"]]


__all__ = ["FONT_DIRS_ENV", "SystemFont", "describe_missing_font", "find_font", "get_codepoints", "get_fingerprint_fonts",
           "get_font_dirs", "get_script_code", "get_script_name", "list_local_fonts", "list_missing", "list_system_fonts",
           "read_run_styles", "resolve_font", "resolve_fonts"]
