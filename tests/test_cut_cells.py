"""`engine.cells.cut_cells`, the one cell-chunking loop of every task: each task's cells (ids, items, progress
jobs, context keys, shared inputs, order) are those of the loop each plan wrote inline before it existed, so
run folders written before resume across it. Only planned, never evaluated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from typoattack.config.common import resolve_chunk_size
from typoattack.config.types import ModelSpec
from typoattack.constants import SAMPLE_DIR
from typoattack.data.sources import open_image_source, select_subset
from typoattack.data.vocab import load_vocab
from typoattack.engine.cells import Cell, cut_cells, get_context_key
from typoattack.engine.rundir import get_cell_id, get_items_digest
from typoattack.progress import NullProgress
from typoattack.records import list_conditions
from typoattack.tasks.registry import get_task

TWO_TINY = {"model": ["typoattack-tiny", "typoattack-tiny"], "pretrained": ["seed:0", "seed:1"]}


def _describe(cell: Cell) -> dict[str, Any]:
    """Everything of a cell a run folder or a worker sees, in comparable form (arrays as lists, with the
    Python types of items and counts)."""
    items = cell.items
    return {"cell_id": cell.cell_id, "task": cell.task, "config": cell.config, "model_index": cell.model_index,
            "items_type": type(items).__name__, "items": [(type(x).__name__, int(x)) for x in items],
            "digest": get_items_digest(items), "n_jobs": (type(cell.n_jobs).__name__, cell.n_jobs),
            "context_key": cell.context_key, "shared": cell.shared}


def _assert_same_cells(got: list[Cell], expected: list[Cell]) -> None:
    assert [_describe(c) for c in got] == [_describe(c) for c in expected]


def test_cut_cells_cuts_every_model_into_chunks_in_run_order() -> None:
    class Cfg:
        models = (ModelSpec("a", "x"), ModelSpec("b", None))

        def to_dict(self) -> dict[str, Any]:
            return {"models": ["a/x", "b"]}

    cfg = Cfg()
    cells = cut_cells("t", cfg, tuple(range(5)), 2, jobs_per_item=3, shared=lambda m: ("inputs", m))
    assert [c.cell_id for c in cells] == [get_cell_id(m, cfg.models[m], s) for m in (0, 1) for s in (0, 1, 2)]
    assert [c.items for c in cells] == [(0, 1), (2, 3), (4,)] * 2
    assert [c.n_jobs for c in cells] == [6, 6, 3] * 2
    assert [c.shared for c in cells] == [("inputs", 0)] * 3 + [("inputs", 1)] * 3
    assert {c.context_key for c in cells[:3]} == {get_context_key("t", cfg, 0)} != {get_context_key("t", cfg, 1)}
    weighted = cut_cells("t", cfg, np.arange(5), 2, jobs_per_item=np.array([1, 2, 3, 4, 5]))
    assert [c.n_jobs for c in weighted] == [3, 7, 5] * 2 and all(type(c.n_jobs) is int for c in weighted)
    assert isinstance(weighted[0].items, np.ndarray) and weighted[0].shared is None
    assert cut_cells("t", cfg, (), 2) == []


@pytest.mark.parametrize("chunk_size", [5, None])
def test_eval_cells_are_those_of_the_old_loop(cache_dir, tmp_path, chunk_size) -> None:
    task = get_task("eval")
    cfg = task.load_config(None, {**TWO_TINY, "data": str(SAMPLE_DIR), "vocab": "goh2021", "fractions": [0.07],
                                  "placement": ["paper8"], "templates": "simple", "device": "cpu", "limit": 12,
                                  "chunk_size": chunk_size, "workers": 0, "cache_dir": str(cache_dir),
                                  "out": str(tmp_path / "out")})
    got = task.plan(cfg, NullProgress()).cells
    # The loop of SyntheticTask.plan before cut_cells.
    indices = select_subset(open_image_source(cfg.data).items, cfg.limit, cfg.seed)
    n_jobs_per_image = 1 + len(list_conditions(cfg, load_vocab(cfg.vocab)))
    size = resolve_chunk_size(cfg.chunk_size, n_jobs_per_image * len(cfg.defences))
    expected = []
    for m_index, spec in enumerate(cfg.models):
        rows = np.arange(len(indices))
        key = get_context_key(task.name, cfg, m_index)
        for s_index, start in enumerate(range(0, rows.size, size.items)):
            chunk = rows[start:start + size.items]
            expected.append(Cell(get_cell_id(m_index, spec, s_index), task.name, cfg, m_index, chunk,
                                 int(chunk.size) * n_jobs_per_image, key, tuple(indices)))
    assert len(expected) == (6 if chunk_size else 2)
    _assert_same_cells(got, expected)


def test_real_cells_are_those_of_the_old_loop(tmp_path) -> None:
    from real_datasets_builders import make_named_folder
    from typoattack.data.real_datasets import select_photos
    from typoattack.tasks.real.task import open_dataset

    task = get_task("real")
    cfg = task.load_config(None, {**TWO_TINY, "dataset": "rta100", "data": str(make_named_folder(tmp_path / "rta")),
                                  "device": "cpu", "chunk_size": 4, "out": str(tmp_path / "out")})
    got = task.plan(cfg, NullProgress()).cells
    indices = select_photos(open_dataset(cfg).items, cfg.limit, cfg.seed)
    size = resolve_chunk_size(cfg.chunk_size, len(cfg.defences)).items
    expected = []
    for m_index, spec in enumerate(cfg.models):
        key = get_context_key(task.name, cfg, m_index)
        for s_index, start in enumerate(range(0, len(indices), size)):
            chunk = tuple(indices[start:start + size])
            expected.append(Cell(get_cell_id(m_index, spec, s_index), task.name, cfg, m_index, chunk, len(chunk), key))
    assert len(expected) == 6
    _assert_same_cells(got, expected)


def test_stroop_cells_are_those_of_the_old_loop(tmp_path) -> None:
    from typoattack.tasks.stroop.task import StroopInputs, list_run_stimuli

    task = get_task("stroop")
    cfg = task.load_config(None, {**TWO_TINY, "device": "cpu", "chunk_size": 50, "out": str(tmp_path / "out")})
    got = task.plan(cfg, NullProgress()).cells
    colours, _, indices, stimuli = list_run_stimuli(cfg)
    inputs = StroopInputs(colours, tuple(stimuli), tuple(indices))
    size = resolve_chunk_size(cfg.chunk_size, 1).items
    expected = []
    for m_index, spec in enumerate(cfg.models):
        key = get_context_key(task.name, cfg, m_index)
        for s_index, start in enumerate(range(0, len(stimuli), size)):
            chunk = tuple(range(start, min(start + size, len(stimuli))))
            expected.append(Cell(get_cell_id(m_index, spec, s_index), task.name, cfg, m_index, chunk, len(chunk),
                                 key, inputs))
    assert len(expected) == 4
    _assert_same_cells(got, expected)


def _fake_vlm_models(monkeypatch, size: int) -> None:
    """Plan vlm runs without model files: every model checked as a 'fake' family at a `size` canvas."""
    import typoattack.tasks.vlm.task as vlm_task

    def check(cfg: Any) -> list[dict[str, Any]]:
        return [{"family": "fake", "weights_id": f"fake-{k}", "native_image_size": None,
                 "canvas_size": [size, size], "canvas": "--image-size"} for k, _ in enumerate(cfg.models)]

    monkeypatch.setattr(vlm_task, "check_vlm_models", check)


def test_vlm_synthetic_cells_are_those_of_the_old_loop(monkeypatch, cache_dir, tmp_path) -> None:
    from typoattack.data.classes import list_class_names
    from typoattack.tasks.vlm.prompts import list_orders, resolve_prompts
    from typoattack.tasks.vlm.task import VlmInputs, _count_questions

    _fake_vlm_models(monkeypatch, 64)
    task = get_task("vlm")
    vocab = tmp_path / "two.yaml"
    # Class 252 is one of the selected images: its question about 252 is not asked (fewer jobs for that image).
    vocab.write_text("name: two\nwords:\n  - {text: pizza, target: pizza}\n  - {text: dog, target: 252}\n")
    cfg = task.load_config(None, {"model": ["org/a", "org/b"], "data": "sample", "vocab": str(vocab), "limit": 7,
                                  "fractions": [0.1], "placement": ["center"], "prompt": ["1", "5"], "chunk_size": 3,
                                  "device": "cpu", "workers": 0, "cache_dir": str(cache_dir),
                                  "out": str(tmp_path / "out")})
    got = task.plan(cfg, NullProgress()).cells
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    trues = np.array([source.items[i].true_index for i in indices], dtype=np.int64)
    prompts = resolve_prompts(cfg.question_prompts)
    ids = [source.items[i].image_id for i in indices]
    per_image = (_count_questions(trues, list_conditions(cfg, load_vocab(cfg.vocab)), ids, cfg.seed) * len(prompts)
                 * len(list_orders(cfg.order)))
    assert len(set(per_image.tolist())) > 1 or 252 not in trues.tolist()
    size = resolve_chunk_size(cfg.chunk_size, int(per_image.max(initial=1)))
    expected = []
    for m_index, spec in enumerate(cfg.models):
        rows = np.arange(len(indices))
        inputs = VlmInputs(prompts, (64, 64), tuple(indices))
        key = get_context_key(task.name, cfg, m_index)
        for s_index, start in enumerate(range(0, rows.size, size.items)):
            chunk = rows[start:start + size.items]
            expected.append(Cell(get_cell_id(m_index, spec, s_index), task.name, cfg, m_index, tuple(map(int, chunk)),
                                 int(per_image[chunk].sum()), key, inputs))
    assert len(expected) == 6 and len(list_class_names()) == 1000
    _assert_same_cells(got, expected)


def test_vlm_real_cells_are_those_of_the_old_loop(monkeypatch, tmp_path) -> None:
    from real_datasets_builders import make_named_folder
    from typoattack.data.real_datasets import open_real_dataset, select_photos
    from typoattack.tasks.vlm.prompts import list_orders, resolve_prompts
    from typoattack.tasks.vlm.task import VlmInputs

    _fake_vlm_models(monkeypatch, 40)
    task = get_task("vlm")
    cfg = task.load_config(None, {"model": ["org/a", "org/b"], "dataset": "rta100",
                                  "data": str(make_named_folder(tmp_path / "rta")), "prompt": ["1"], "chunk_size": 4,
                                  "device": "cpu", "out": str(tmp_path / "out")})
    got = task.plan(cfg, NullProgress()).cells
    indices = select_photos(open_real_dataset(cfg.dataset, cfg.data.source, cfg.data.hf_split).items, cfg.limit,
                            cfg.seed)
    prompts = resolve_prompts(cfg.question_prompts)
    per_photo = len(prompts) * len(list_orders(cfg.order))
    size = resolve_chunk_size(cfg.chunk_size, per_photo)
    expected = []
    for m_index, spec in enumerate(cfg.models):
        inputs = VlmInputs(prompts, (40, 40))
        key = get_context_key(task.name, cfg, m_index)
        for s_index, start in enumerate(range(0, len(indices), size.items)):
            chunk = tuple(indices[start:start + size.items])
            expected.append(Cell(get_cell_id(m_index, spec, s_index), task.name, cfg, m_index, chunk,
                                 len(chunk) * per_photo, key, inputs))
    assert len(expected) == 6
    _assert_same_cells(got, expected)
