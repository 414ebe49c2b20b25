"""File and path helpers shared by every stage: atomic writes, file-name slugs, `~` expansion.

Importable without torch, PIL or pandas (pandas is imported only inside `write_parquet_atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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


def get_word_slug(text: str) -> str:
    """A reversible file-name-safe spelling of an attack word: ASCII letters, digits and `-_` are
    kept, any other character becomes `x` and its hex code ('$$$' -> 'x24x24x24'); '' -> 'empty'."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"x{ord(c):02x}" for c in text) or "empty"
