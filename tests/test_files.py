"""Tests of the single helpers: atomic writes and slugs (typoattack.files) and the untrained check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from typoattack.tasks.synthetic.config import SyntheticConfig
from typoattack.config.types import (
    DataSpec, ModelSpec, get_untrained_warning, is_untrained,
)
from typoattack.files import (
    WORD_SLUG_MAX, build_word_slugs, get_label_slug, get_word_slug, write_atomic, write_parquet_atomic,
    write_text_atomic,
)


def test_write_text_atomic_replaces_and_creates_parents(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.txt"
    write_text_atomic(path, "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["b.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_write_parquet_atomic_round_trip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    write_parquet_atomic(frame, tmp_path / "r.parquet")
    assert pd.read_parquet(tmp_path / "r.parquet").equals(frame)


@pytest.mark.parametrize(("word", "slug"), [
    ("$$$", "dollar-dollar-dollar"), ("iPod", "ipod"), ("a b", "a-b"), ("", "empty"), ("é", "e"), ("café", "cafe"),
    ("<b>&", "lt-b-gt-and"), ("trash can", "trash-can"), ("中文", "u4e2d-u6587"), ("...", "u2e-u2e-u2e"),
    ("C++", "c-plus-plus"), ("50%", "50-percent"), ("x" * 100, "x" * WORD_SLUG_MAX),
])
def test_word_slug(word: str, slug: str) -> None:
    assert get_word_slug(word) == slug


@pytest.mark.parametrize("word", ["$$$", "iPod", "a b", "", "é", "<b>&", "中文", "...", "a/b\\c:d*e?f\"g<h>i|j", "Ω" * 50,
                                  " -lead", "x" * 100])
def test_word_slug_is_file_system_safe(word: str, tmp_path: Path) -> None:
    slug = get_word_slug(word)
    assert slug and len(slug) <= WORD_SLUG_MAX
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") and not slug.startswith("-") and not slug.endswith("-")
    (tmp_path / f"confusion_{slug}.png").write_bytes(b"")  # a name the file system takes


def test_word_slugs_are_unique_in_order() -> None:
    words = ["a b", "A-B", "a_b", "$$$", "iPod", "ipod", "x" * 70, "x" * 80]
    slugs = build_word_slugs(words)
    assert list(slugs) == words
    assert slugs["a b"] == "a-b" and slugs["A-B"] == "a-b-2" and slugs["a_b"] == "a-b-3"
    assert slugs["iPod"] == "ipod" and slugs["ipod"] == "ipod-2"
    assert slugs["x" * 80] == "x" * WORD_SLUG_MAX + "-2"
    # Unique also for a file system that ignores case.
    assert len({s.casefold() for s in slugs.values()}) == len(words)
    assert build_word_slugs(["a", "a"]) == {"a": "a"}


def test_label_slug() -> None:
    assert get_label_slug("ViT-B-32/openai") == "ViT-B-32_openai"
    assert get_label_slug("hf-hub:org/repo.v2") == "hf-hub_org_repo.v2"
    assert len(get_label_slug("x" * 200)) == 80


def test_path_helpers_import_without_torch() -> None:
    code = ("import sys, typoattack.files, typoattack.config.types, typoattack.records; "
            "bad = [m for m in ('torch', 'open_clip', 'yaml', 'typer') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("pretrained", "untrained"), [("seed:0", True), ("seed:12", True), ("openai", False),
                                                       (None, False), ("", False), ("/ckpt/seed:0.pt", False)])
def test_is_untrained(pretrained: str | None, untrained: bool) -> None:
    assert is_untrained(pretrained) is untrained


def test_untrained_warning_and_labels(tmp_path: Path) -> None:
    assert get_untrained_warning(["m/seed:0"]).startswith("UNTRAINED MODEL: m/seed:0 has random weights")
    assert " have random weights" in get_untrained_warning(["a/seed:0", "b/seed:1"])
    cfg = SyntheticConfig(models=(ModelSpec("a", "seed:0"), ModelSpec("b", "openai")), data=DataSpec(str(tmp_path)))
    assert len(cfg.model_warnings) == 1 and "a/seed:0" in cfg.model_warnings[0]


def test_data_sources_import_without_torch() -> None:
    code = ("import sys, typoattack.data.sources, typoattack.data.classes as c; c.list_synsets(); "
            "bad = [m for m in ('torch', 'open_clip') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_temporary_path_is_hidden_and_escapes_suffix_globs(tmp_path: Path) -> None:
    from typoattack.files import get_temporary_path

    tmp = get_temporary_path(tmp_path / "00001.parquet")
    assert tmp.parent == tmp_path and tmp.name.startswith(".") and tmp.name.endswith(".tmp")
    tmp.write_text("half")  # what a process killed mid-write leaves behind
    assert list(tmp_path.glob("*.parquet")) == []


def test_demo_model_gets_its_own_warning(tmp_path: Path) -> None:
    from typoattack.config.types import get_model_warnings

    warnings = get_model_warnings([("typoattack-reader-tiny", "ci500"), ("ViT-B-32", "openai")])
    assert len(warnings) == 1 and warnings[0].startswith("DEMO MODEL: typoattack-reader-tiny/ci500")
    assert "very 500 images" in warnings[0] and "say nothing about CLIP" in warnings[0]
    both = get_model_warnings([("typoattack-reader-tiny", "seed:1"), ("typoattack-reader-tiny", "ci500")])
    assert [w.split(":")[0] for w in both] == ["UNTRAINED MODEL", "DEMO MODEL"]
    assert get_model_warnings([("ViT-B-32", "openai"), ("RN50x4", None)]) == []
