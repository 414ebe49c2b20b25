"""Executors: where the cells of a run are computed, for any task. Both hand each cell's result to
the driver (`on_result`), which commits it as the same chunk files, whichever computed it.

- `LocalExecutor`: cell after cell in this process, one model context at a time.
- `RayExecutor`: one Ray task per cell (one GPU where the cluster has GPUs, else one CPU); a worker
  keeps its model context between cells; Ray retries a task whose worker dies.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from typoattack.cluster import connect_ray, import_ray
from typoattack.config.common import RunSettings
from typoattack.config.types import Executor
from typoattack.engine.cells import Cell, CellResult, run_cell
from typoattack.progress import ProgressReporter
from typoattack.errors import TypoAttackError

if TYPE_CHECKING:
    from typoattack.engine.task import Task

MAX_RETRIES = 3
"""Times Ray reruns a cell whose worker process died (a lost node, an out-of-memory kill)."""
FAULT_MARKER_ENV = "TYPOATTACK_FAULT_MARKER"
"""Fault injection for the tests: when this names an existing file, the first Ray task to see it
removes it and kills its worker process (Ray then retries the task)."""


class CellExecutor(Protocol):
    """What the driver needs from an executor."""

    def run(self, task: Task, cells: Sequence[Cell], on_result: Callable[[CellResult], None],
            progress: ProgressReporter) -> None:
        """Evaluate every cell; call `on_result` in the driver process as each cell finishes."""
        ...


class LocalExecutor:
    """Evaluate the cells one after another in this process, one model context at a time."""

    def run(self, task: Task, cells: Sequence[Cell], on_result: Callable[[CellResult], None],
            progress: ProgressReporter) -> None:
        context, key, advance = None, None, None
        for cell in cells:
            if cell.context_key != key:
                context = None  # frees the previous model before loading the next
                context, key = task.create_context(cell, progress), cell.context_key
            if advance is None:  # after the first model's classifier, so a cold build shows its own bar
                advance = progress.start(f"Evaluating {count_cells(len(cells))}", sum(c.n_jobs for c in cells),
                                         task.job_unit)
            on_result(task.evaluate_cell(context, cell, advance))


def _run_cell_task(task: Task, cell: Cell) -> CellResult:
    """The body of a Ray task."""
    marker = os.environ.get(FAULT_MARKER_ENV)
    if marker:
        try:
            os.remove(marker)
        except FileNotFoundError:
            pass
        else:
            os._exit(1)
    return run_cell(task, cell)


class RayExecutor:
    """Evaluate each cell as a Ray task; one progress bar over all cells on the driver."""

    def __init__(self, address: str | None, timeout: float) -> None:
        self.address, self.timeout = address, timeout

    def run(self, task: Task, cells: Sequence[Cell], on_result: Callable[[CellResult], None],
            progress: ProgressReporter) -> None:
        ray = _connect_keeping_sigterm(self.address, self.timeout)
        has_gpus = ray.cluster_resources().get("GPU", 0) > 0
        remote = ray.remote(_run_cell_task).options(num_cpus=1, num_gpus=1 if has_gpus else 0,
                                                    max_retries=MAX_RETRIES)
        progress.log(f"Ray: {count_cells(len(cells))} on {_describe_cluster(ray)}")
        advance = progress.start(f"{count_cells(len(cells))} on Ray", sum(c.n_jobs for c in cells), task.job_unit)
        pending = {remote.remote(task, cell): cell for cell in cells}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    on_result(_get_result(ray, ref))
                    advance(cell.n_jobs)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def count_cells(n: int) -> str:
    """'1 cell', '8 cells'."""
    return f"{n} cell" if n == 1 else f"{n} cells"


def _connect_keeping_sigterm(address: str | None, timeout: float) -> Any:
    """`connect_ray`, keeping the SIGTERM handler this process had set (`run.interrupt_on_sigterm`):
    `ray.init` replaces it with one that exits at once, which would end a run without saying that
    it resumes. The default handling (none set) is left to Ray."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    ray = connect_ray(address, timeout)
    if callable(before) and signal.getsignal(signal.SIGTERM) is not before:
        signal.signal(signal.SIGTERM, before)
    return ray


def _get_result(ray: Any, ref: Any) -> Any:
    """A task's result; a user error raised in the worker comes back as that error (one line)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, TypoAttackError):
            raise cause from None
        raise


def _describe_cluster(ray: Any) -> str:
    resources = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    return (f"{nodes} node(s), {int(resources.get('CPU', 0))} CPUs, {int(resources.get('GPU', 0))} GPUs")


def check_executor(executor: Executor) -> None:
    """Fail before any work when `executor` cannot run here (Ray not installed: says how to install it)."""
    if executor is Executor.RAY:
        import_ray()


def create_executor(cfg: RunSettings) -> CellExecutor:
    """The executor `cfg.executor` names."""
    if cfg.executor is Executor.RAY:
        import_ray()
        return RayExecutor(cfg.ray_address, cfg.ray_timeout)
    return LocalExecutor()
