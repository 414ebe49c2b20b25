"""Cells sized by their records (issue 26): without `chunk_size`, `eval` takes fewer images per cell when a
cell would hold over MAX_CELL_RECORDS records; an explicit chunk size wins; runs that leave it unset keep
their fingerprint. Only planned, never evaluated."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from typoattack.config.common import (
    DEFAULT_CHUNK_SIZE, MAX_CELL_RECORDS, ChunkSize, load_config, resolve_chunk_size,
)
from typoattack.constants import VOCAB_DIR
from typoattack.engine.task import Plan
from typoattack.progress import NullProgress
from typoattack.tasks.registry import get_task
from typoattack.tasks.synthetic.config import SyntheticConfig, load_synthetic_config

N_WORDS = 40
# The undefended model and every non-empty set of the tiny ViT's 2 x 2 heads: 16 defences, so that 40 words
# x 2 fractions x 2 placements make (1 + 160) x 16 = 2,576 records per image, 388 images per cell.
HEADS = [(layer, head) for layer in range(2) for head in range(2)]
DEFENCES = ["none"] + ["heads:" + ",".join(f"{a}.{b}" for a, b in chosen)
                       for n in range(1, len(HEADS) + 1) for chosen in itertools.combinations(HEADS, n)]
RECORDS_PER_IMAGE = (1 + N_WORDS * 2 * 2) * len(DEFENCES)


@pytest.fixture(scope="module")
def many_conditions(sample_dir, tmp_path_factory) -> dict[str, Any]:
    """`eval` settings (YAML keys) of 40 ImageNet class names at 2 fractions and 2 placements under 16 defences,
    on the 500 sample images and the tiny model, with their own cache (masks and canvases solved once)."""
    folder = tmp_path_factory.mktemp("many")
    words = yaml.safe_load((VOCAB_DIR / "imagenet-classes.yaml").read_text())["words"][:N_WORDS]
    (folder / "vocab.yaml").write_text(yaml.safe_dump({"name": "forty", "words": words}))
    return {"data": str(sample_dir), "model": "typoattack-tiny", "pretrained": "seed:0",
            "vocab": str(folder / "vocab.yaml"), "fractions": [0.04, 0.1], "placement": ["paper8", "random"],
            "defences": DEFENCES, "templates": "simple", "device": "cpu", "workers": 2,
            "cache_dir": str(folder / "cache"), "out": str(folder / "out")}


def _plan(settings: dict[str, Any], path: Path | None = None) -> Plan:
    """The `eval` plan of a YAML file (`path`) with `settings` as the CLI flags over it, as the CLI makes it."""
    cfg = load_config(path, settings, SyntheticConfig) if path else load_synthetic_config(None, settings)
    return get_task("eval").plan(cfg, NullProgress())


def test_rule() -> None:
    # The whole vocabulary: 998 words x 2 fractions x 2 placements, one defence.
    assert resolve_chunk_size(None, 1 + 998 * 2 * 2) == ChunkSize(250, "auto")
    assert resolve_chunk_size(None, 1 + 9 * 2 * 2) == ChunkSize(DEFAULT_CHUNK_SIZE, "auto")
    assert resolve_chunk_size(None, 3 * MAX_CELL_RECORDS) == ChunkSize(1, "auto")
    assert resolve_chunk_size(7, 1 + 998 * 2 * 2) == ChunkSize(7, "config")
    assert resolve_chunk_size(5000, 1) == ChunkSize(5000, "config")
    assert ChunkSize(250, "auto").to_info("images") == {"images": 250, "source": "auto"}


def test_unset_chunk_size_gives_cells_of_at_most_a_million_records(many_conditions) -> None:
    plan = _plan(many_conditions)
    per_cell = MAX_CELL_RECORDS // RECORDS_PER_IMAGE
    assert per_cell == 388
    assert plan.info["chunk_size"] == {"images": per_cell, "source": "auto"}
    assert [len(cell.items) for cell in plan.cells] == [per_cell, 500 - per_cell]
    for cell in plan.cells:
        assert cell.n_jobs * len(DEFENCES) == len(cell.items) * RECORDS_PER_IMAGE <= MAX_CELL_RECORDS
        assert cell.config.chunk_size is None
    assert len(plan.models[0]["masks"]) == N_WORDS * 2 * 2


@pytest.mark.parametrize(("in_yaml", "flag"), [(None, 1000), (1000, None), (50, 1000)],
                         ids=["flag", "yaml", "flag-over-yaml"])
def test_explicit_chunk_size_wins(many_conditions, tmp_path, in_yaml, flag) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**many_conditions, **({"chunk_size": in_yaml} if in_yaml else {})}))
    plan = _plan({"chunk_size": flag}, path)
    assert plan.info["chunk_size"] == {"images": 1000, "source": "config"}
    assert [len(cell.items) for cell in plan.cells] == [500]


def test_unset_chunk_size_keeps_the_fingerprint_of_the_old_default(sample_dir) -> None:
    cfg = load_synthetic_config(None, {"data": str(sample_dir), "model": "typoattack-tiny", "pretrained": "seed:0"})
    assert cfg.chunk_size is None and cfg.to_dict()["chunk_size"] is None
    assert '"chunk_size": 1000' in cfg.fingerprint()
    assert cfg.fingerprint() == replace(cfg, chunk_size=DEFAULT_CHUNK_SIZE).fingerprint()
    assert cfg.fingerprint() != replace(cfg, chunk_size=100).fingerprint()
    # The CI reproduction sets its chunk size: its cells are those of results/ci.
    ci = load_synthetic_config("ci")
    assert resolve_chunk_size(ci.chunk_size, 1 + 9 * 2 * 2) == ChunkSize(100, "config")
