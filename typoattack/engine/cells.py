"""Cells: the unit of work that executors run and the run folder commits, and the one per-process
cache of the model context a task builds for them.

A cell is one model x one chunk of items with a stable id; a task evaluates it from the cell's
picklable inputs alone, so it runs the same in this process or in a Ray worker. A process keeps
the context (model, classifier, data) of the last cell's model for the next cells of that model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from typoattack.progress import NullProgress

if TYPE_CHECKING:
    from typoattack.engine.task import Task


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


_CONTEXT: dict[str, Any] = {}
"""The model context of this process by `Cell.context_key` (at most one: a process that moves on to
another model frees the previous one)."""


def run_cell(task: Task, cell: Cell) -> CellResult:
    """Evaluate one cell in this process, building its model context here unless the last cell's
    was the same (the body of a Ray task)."""
    if cell.context_key not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[cell.context_key] = task.create_context(cell, NullProgress())
    return task.evaluate_cell(_CONTEXT[cell.context_key], cell, lambda n: None)
