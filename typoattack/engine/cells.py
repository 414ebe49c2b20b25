"""Cells: the unit of work that executors run and the run folder commits, how a task's plan cuts a
run into them (`cut_cells`), and the one per-process cache of the model context a task builds for them.

A cell is one model x one chunk of items with a stable id; a task evaluates it from the cell's
picklable inputs alone, so it runs the same in this process or in a Ray worker. A process keeps
the context (model, classifier, data) of the last cell's model for the next cells of that model.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from typoattack.engine.rundir import get_cell_id
from typoattack.progress import NullProgress, ProgressReporter


@dataclass(frozen=True)
class Cell:
    """One unit of work: one model x one chunk of items, evaluated from these picklable inputs alone.

    Attributes:
        cell_id: Stable id, the path of its chunk under chunks/ without the suffix
            (`00-<model label>/00003`, see `typoattack.engine.rundir.get_cell_id`).
        task: The task's name (the engine finds the task in a worker by it).
        config: The run's config.
        model_index: Index of the cell's model in `config.models`.
        items: What the task evaluates in the cell (indices, rows, stimuli), in run order.
        n_jobs: Units of the progress bar the cell advances (e.g. images x conditions).
        context_key: Cells with equal keys share a model context in a process.
        shared: Inputs every cell of the model needs (e.g. the selected image list), or None.
    """

    cell_id: str
    task: str
    config: Any
    model_index: int
    items: Any
    n_jobs: int
    context_key: str
    shared: Any = None


@dataclass
class CellResult:
    """The records of one cell and what the run.json entry of its model gathers.

    Attributes:
        cell_id: The cell.
        model_index: Its model.
        records: The cell's records (the task's record columns), in a fixed order.
        skipped: image_id -> why an item could not be evaluated.
        model_info: Entries of the model in run.json (weights id, input size, cache hits, ...);
            `seconds` (loading, classifier) only on the first cell of a model in a process.
        seconds: Seconds evaluating the cell.
        n_encoded: Images encoded (each once, whatever the number of defences), for images/s.
    """

    cell_id: str
    model_index: int
    records: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    model_info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    n_encoded: int = 0


def get_context_key(task_name: str, cfg: Any, model_index: int) -> str:
    """The key of the model context a cell needs: equal for the cells of one model of one run
    (speed settings included: a worker never reuses a model loaded for another device or precision)."""
    doc = json.dumps([task_name, cfg.to_dict(), model_index], sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


def cut_cells(task_name: str, cfg: Any, items: Sequence[Any], chunk_size: int, *,
              jobs_per_item: int | Sequence[int] = 1, shared: Callable[[int], Any] | None = None) -> list[Cell]:
    """The cells of a run: each model of `cfg.models` x each `chunk_size` consecutive items, in run
    order (model after model, each model's chunks in item order), with their stable ids
    (`rundir.get_cell_id`) and the model's context key.

    Args:
        task_name: The task's name.
        cfg: The run's config (its `models`, and `to_dict` for the context key).
        items: What every model evaluates, in run order; a cell's items are a slice of it, of its type
            (a tuple's are tuples, an array's arrays).
        chunk_size: Items per cell (the last cell of a model may hold fewer).
        jobs_per_item: Progress units of one item (`Cell.n_jobs`): one number for every item, or one
            per item, aligned with `items`.
        shared: Model index -> what every cell of that model needs (`Cell.shared`), called once per
            model; None: nothing.
    """
    cells = []
    for m_index, spec in enumerate(cfg.models):
        key = get_context_key(task_name, cfg, m_index)
        inputs = shared(m_index) if shared is not None else None
        for s_index, start in enumerate(range(0, len(items), chunk_size)):
            chunk = items[start:start + chunk_size]
            if isinstance(jobs_per_item, numbers.Integral):
                n_jobs = len(chunk) * int(jobs_per_item)
            else:
                n_jobs = int(sum(jobs_per_item[start:start + chunk_size]))
            cells.append(Cell(get_cell_id(m_index, spec, s_index), task_name, cfg, m_index, chunk, n_jobs, key, inputs))
    return cells


class CellEvaluator(Protocol):
    """What `run_cell` needs of a task (every `engine.task.Task` has it)."""

    def create_context(self, cell: Cell, progress: ProgressReporter) -> Any:
        """Load what the cells of `cell`'s model need, in this process."""
        ...

    def evaluate_cell(self, context: Any, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        """Evaluate one cell with a context made for its model."""
        ...


_CONTEXT: dict[str, Any] = {}
"""The model context of this process by `Cell.context_key` (at most one: a process that moves on to
another model frees the previous one)."""


def run_cell(task: CellEvaluator, cell: Cell) -> CellResult:
    """Evaluate one cell in this process, building its model context here unless the last cell's
    was the same (the body of a Ray task)."""
    if cell.context_key not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[cell.context_key] = task.create_context(cell, NullProgress())
    return task.evaluate_cell(_CONTEXT[cell.context_key], cell, lambda n: None)
