"""File and path helpers shared by every stage: atomic writes, file-name slugs, `~` expansion.

Importable without torch, PIL or pandas (pandas is imported only inside `write_parquet_atomic`).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def expand_path(value: str | Path) -> Path:
    """Path with `~` expanded where possible (an unknown `~user` is left as written)."""
    try:
        return Path(value).expanduser()
    except RuntimeError:
        return Path(value)


def get_temporary_path(path: Path) -> Path:
    """A sibling of `path` private to this process, for a write-then-rename: `.NAME.PID.tmp`.

    Hidden and without the final suffix, so a process killed mid-write leaves nothing that a glob
    such as `*.parquet` picks up; the PID lets a later run tell a live writer's file from an orphan.
    """
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Create `path` all at once: `write` fills a temporary sibling, which is then renamed over it.

    A reader never sees a half-written file, and an interrupted write leaves the old file (or
    none) in place. The parent folder is created when missing.

    Args:
        path: The file to create or replace.
        write: Writes the complete content to the path it is given.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = get_temporary_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 text to `path` atomically (see `write_atomic`)."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame (without its index) as Parquet atomically (see `write_atomic`)."""
    write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_csv(frame: pd.DataFrame, path: Path, decimals: int = 6) -> None:
    """Write a DataFrame (without its index) as CSV atomically, floats rounded to `decimals` places so
    reference tables diff cleanly across machines."""
    write_text_atomic(path, frame.round(decimals).to_csv(index=False, lineterminator="\n"))


def get_label_slug(label: str, limit: int = 80) -> str:
    """A file-name-safe spelling of a model label: characters other than letters, digits and
    `-_.` become `_` ('ViT-B-32/openai' -> 'ViT-B-32_openai'), cut to `limit` characters."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:limit]


WORD_SLUG_MAX = 60
"""The longest word slug, in characters (before a `-2` suffix that keeps slugs unique)."""

_SYMBOL_NAMES = {
    "$": "dollar", "&": "and", "@": "at", "+": "plus", "#": "hash", "%": "percent", "*": "star", "=": "equals",
    "<": "lt", ">": "gt", "!": "excl", "?": "q", "€": "euro", "£": "pound", "¥": "yen", "©": "c", "®": "r",
    "~": "tilde", "^": "caret", "|": "bar",
}
# Characters that separate the parts of a slug; every other character is named or spelled by its code.
_SEPARATORS = set(" \t\n-_.,/\\:;'\"`()[]{}")


def get_word_slug(text: str) -> str:
    """A file-name spelling of an attack word that a person reads: `$$$` -> `dollar-dollar-dollar`.

    The rule (the report lists each word beside its file, so the mapping is documented where it is
    used; it is not reversible): accents are dropped (`café` -> `cafe`), ASCII letters and digits are
    kept in lower case, the symbols of `_SYMBOL_NAMES` become their name (`$` dollar, `&` and, `<` lt,
    ...), spaces and punctuation such as `-_.,/:;'"` separate parts, any other character becomes `u`
    and its code point in hex (`中` -> `u4e2d`); parts are joined by `-` and the slug is cut to
    WORD_SLUG_MAX characters. A word of separators only is spelled by its code points (`...` ->
    `u2e-u2e-u2e`); the empty word is `empty`. The result holds only `a-z`, `0-9` and `-`: safe on
    every file system, and equal for words that differ only in case, so a report makes its slugs
    unique with `build_word_slugs`.
    """
    if text == "":
        return "empty"
    parts: list[str] = []
    word = ""
    for c in unicodedata.normalize("NFKD", text):
        if unicodedata.combining(c):
            continue
        if c.isascii() and c.isalnum():
            word += c.lower()
            continue
        if word:
            parts.append(word)
            word = ""
        if c in _SEPARATORS:
            continue
        parts.append(_SYMBOL_NAMES.get(c, f"u{ord(c):x}"))
    if word:
        parts.append(word)
    if not parts:
        parts = [f"u{ord(c):x}" for c in text]
    return "-".join(parts)[:WORD_SLUG_MAX].strip("-")


def build_word_slugs(words: Sequence[str]) -> dict[str, str]:
    """A unique `get_word_slug` per word: the first word with a slug keeps it, later words whose slug
    is taken get `-2`, `-3`, ... (in the order given), so `a b` and `A-B` become `a-b` and `a-b-2`.

    Args:
        words: Distinct attack words, in the order their files are listed.

    Returns:
        word -> slug, in the order of `words`.
    """
    slugs: dict[str, str] = {}
    taken: set[str] = set()
    for word in dict.fromkeys(words):
        base = slug = get_word_slug(word)
        k = 2
        while slug in taken:
            slug = f"{base}-{k}"
            k += 1
        taken.add(slug)
        slugs[word] = slug
    return slugs


def describe_write_error(error: OSError, folder: Path, what: str, needed: int | None = None) -> str:
    """One line for a failed write: what, where, why (a full disk says how much is free and needed)."""
    import errno
    import shutil

    reason = error.strerror or str(error)
    fix = "pass --cache-dir with a folder you can write"
    if error.errno == errno.ENOSPC:
        fix = "free space there or pass --cache-dir with a folder on another disk"
        try:
            free = shutil.disk_usage(folder).free
            reason = f"the disk is full ({free / 2**30:.2f} GiB free" + (
                f", {needed / 2**30:.2f} GiB needed)" if needed else ")")
        except OSError:
            reason = "the disk is full"
    elif error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "the folder is read-only" if error.errno == errno.EROFS else "permission denied"
    elif error.errno in (errno.ENOTDIR, errno.EEXIST):
        reason = "a file stands where a folder is needed"
    return f"cannot write {what} in {folder}: {reason}; {fix}"


def get_content_digest(path: Path, cache_dir: str | Path | None = None) -> str:
    """SHA-256 of a file's bytes, or of a folder's files (relative names and bytes, in name order).

    Hashing a multi-GB checkpoint takes seconds, so the digest is kept in `cache_dir/digests/`
    under the path's (resolved name, size, mtime) and read back while those stay the same; a file
    replaced at the same path has another size or mtime and is hashed again.

    Raises:
        OSError: The path cannot be read.
    """
    import hashlib
    import json

    path = Path(path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stamp = [(str(p.relative_to(path)) if p != path else "", p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([str(path), stamp]).encode()).hexdigest()[:32]
    cached = Path(cache_dir).expanduser() / "digests" / f"{key}.txt" if cache_dir else None
    if cached is not None and cached.is_file():
        text = cached.read_text().strip()
        if len(text) == 64:
            return text
    h = hashlib.sha256()
    for p, (name, _, _) in zip(files, stamp):
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    digest = h.hexdigest()
    if cached is not None:
        try:
            write_text_atomic(cached, digest + "\n")
        except OSError:  # a read-only cache: hash again next time
            pass
    return digest
