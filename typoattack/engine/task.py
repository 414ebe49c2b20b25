"""The Task protocol: what a kind of benchmark plugs into the engine, and the units it hands over.

The engine (`typoattack.engine.run`) validates nothing and knows no kind by name: a task plans the
cells of a run (one model x one chunk of items), evaluates one cell from picklable inputs in any
process, and turns the records of all cells into its tables. Resume, shards, executors, merge and
the report dispatch are the engine's. Nothing here assumes a classifier: a cell's records are any
table the task defines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from typoattack.analysis.query import RecordSet
from typoattack.config.common import RunSettings
from typoattack.engine.cells import Cell, CellResult
from typoattack.progress import ProgressReporter
from typoattack.engine.rundir import RunInfo


@dataclass
class Plan:
    """What a task decided before any model loads: the cells and what run.json says of the run.

    Attributes:
        fingerprint: Hash of everything that determines the records (a rerun resumes only when equal).
        cells: Every cell of the run, in run order.
        device: The device the models run on, in words (run.json).
        n_items: Items selected (images, photos, stimuli).
        info: The task's own run.json entries (vocabulary, dataset, colours, ...).
        models: Per model, run.json entries known before loading (input size, masks, ...).
        skipped: image_id -> reason, for items dropped before evaluation (undecodable images).
        notes: Lines to show the user before the work starts (warnings about the data).
        seconds: Seconds spent planning, by step, for run.json.
        versions: Versions beyond the engine's (the models' backends), for run.json.
    """

    fingerprint: str
    cells: list[Cell]
    device: str
    n_items: int
    info: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class ReportPart:
    """What a task's report wrote into the report folder.

    Attributes:
        html: The task's report page (.html), beside a .md of the same stem.
        table: The table to print in the terminal (the task's summary over the runs).
    """

    html: Path
    table: pd.DataFrame


class TaskBase:
    """What every task has beside its work: its description, given as class keywords, and its config
    loader. `class MyTask(TaskBase, name=..., title=..., report_stem=..., output_files=..., job_unit=...,
    config_loader=...)`; the attributes are those of `Task`."""

    name: str
    title: str
    report_stem: str
    output_files: tuple[str, ...]
    job_unit: str
    _config_loader: Callable[[str | Path | None, dict[str, Any]], RunSettings]

    def __init_subclass__(cls, *, name: str, title: str, report_stem: str, output_files: tuple[str, ...],
                          job_unit: str, config_loader: Callable[..., RunSettings], **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name, cls.title, cls.report_stem, cls.output_files, cls.job_unit = (
            name, title, report_stem, tuple(output_files), job_unit)
        cls._config_loader = staticmethod(config_loader)

    def load_config(self, path: str | Path | None, overrides: dict[str, Any]) -> RunSettings:
        """The task's config from a YAML file or built-in name and the CLI flags over it (YAML < flags)."""
        return self._config_loader(path, overrides)


class Task(Protocol):
    """A kind of benchmark.

    Attributes:
        name: The command and the run.json `task` value.
        title: A few words for messages ("synthetic attacks on labelled images").
        report_stem: File stem of its report page when it is not the only kind in a report.
        output_files: The tables and figures it writes into a run folder (beside records.parquet,
            run.json and skipped.csv).
        job_unit: What a cell's `n_jobs` counts, for progress bars ("images", "photos").
    """

    name: str
    title: str
    report_stem: str
    output_files: tuple[str, ...]
    job_unit: str

    def load_config(self, path: str | Path | None, overrides: dict[str, Any]) -> RunSettings:
        """The task's config from a YAML file or built-in name and the CLI flags over it."""
        ...

    def plan(self, cfg: Any, progress: ProgressReporter) -> Plan:
        """Check everything that can be checked without loading a model (cheapest first), then cut
        the run into cells.

        Raises:
            TypoAttackError: A user-fixable problem (config, data, weights, fonts).
        """
        ...

    def create_context(self, cell: Cell, progress: ProgressReporter) -> Any:
        """Load what the cells of `cell`'s model need, in this process (the model, its classifier,
        the data); shared by every later cell with the same `context_key`."""
        ...

    def evaluate_cell(self, context: Any, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        """Evaluate one cell with a context made for its model (`advance` gets the jobs done)."""
        ...

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        """Write the task's tables (queries over `records`, never the records loaded whole) into
        `out`; return the summary table (small: one row per model and condition). Also fills
        `info.extra` with totals the task keeps in run.json. Idempotent: a run killed while writing
        them writes them again on rerun."""
        ...

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        """Renderables (rich tables, text) that summarise the summary table of a finished run (`info`)
        or of a report over several runs (None) in 80 columns; `full`: the whole table instead."""
        ...

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        """Rewrite each run's tables from its records and write the task's report page `stem`.html/.md
        (with figures, and `notes` near the top) into `out`.

        Raises:
            OutputError: A run is incomplete, or two runs hold the same model and conditions.
        """
        ...
