"""The one driver: runs any task's cells in a run folder, resumably, locally or on Ray, whole or one
shard at a time, then has the task write its tables from the records."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.config.common import RunSettings
from typoattack.engine import rundir
from typoattack.engine.cells import Cell, CellResult
from typoattack.engine.executors import check_executor, create_executor
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.engine.rundir import ENGINE_FILES, ChunkProvenance, RunFolder, RunInfo
from typoattack.engine.task import Plan, Task


@dataclass
class RunResult:
    """What `run_task` produced.

    Attributes:
        out_dir: The run folder (its records: `out_dir / records.parquet`).
        n_records: The records of this folder's cells (all of them, or the shard's).
        summary: The task's summary table (empty for a shard: `typoattack merge` writes the tables).
        info: run.json.
    """

    out_dir: Path
    n_records: int
    summary: pd.DataFrame
    info: RunInfo


def get_shard_info(cfg: RunSettings) -> dict[str, int] | None:
    """The `shard` entry of run.json without its cell list (None for a whole run)."""
    return None if cfg.shard is None else {"index": cfg.shard.index, "count": cfg.shard.count}


def run_task(task: Task, cfg: Any, progress: ProgressReporter | None = None, overwrite: bool = False) -> RunResult:
    """Run `task` as `cfg` describes and write its results to `cfg.out`.

    Work is committed per cell; rerunning the same config on the same folder resumes and gives the
    same files as an uninterrupted run, whichever executor computed the cells. With `cfg.shard`,
    only that shard's cells are evaluated (none is a finished shard too) and no tables are written.

    Args:
        task: The kind of benchmark.
        cfg: The task's config (`out` must be set).
        progress: Progress display (nothing shown when None).
        overwrite: Replace a different run that `cfg.out` already holds.

    Raises:
        TypoAttackError: A user-fixable problem (config, data, weights, font, output folder).
        KeyboardInterrupt: Ctrl-C, or SIGTERM while the run lasts (run from the main thread): the
            committed chunks stay, and rerunning the same config resumes.
    """
    progress = progress or NullProgress()
    out = rundir.get_out_dir(cfg.out)
    t_start = time.perf_counter()
    check_executor(cfg.executor)
    with interrupt_on_sigterm():
        plan = task.plan(cfg, progress)
        shard = get_shard_info(cfg)
        folder, previous = RunFolder.open(out, plan.fingerprint, overwrite, shard, tuple(task.output_files))
        try:
            return _run_in_folder(task, cfg, plan, folder, previous, shard, progress, t_start)
        finally:
            folder.unlock()


@contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM stops it as Ctrl-C does (KeyboardInterrupt: the driver's
    `finally` blocks run, committed chunks stay, the CLI says how to resume) instead of ending the
    process at once.

    Only in the main thread (where Python runs signal handlers; a run in another thread leaves the
    process's handling alone). The earlier handler comes back after the block, unless something
    replaced this one meanwhile. A process forked during the block (a decoding or mask worker)
    inherits the handler: there SIGTERM still ends the process, as without it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def interrupt(signum: int, frame: Any) -> None:
        if os.getpid() != pid:  # a forked worker: die of the signal, as without this handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def get_chunk_provenance(plan: Plan, cell: Cell) -> ChunkProvenance:
    """What the chunk of `cell` must say of itself to be taken on resume or merge."""
    return ChunkProvenance(plan.fingerprint, cell.cell_id, rundir.get_items_digest(cell.items), 0)


def _run_in_folder(task: Task, cfg: Any, plan: Plan, folder: RunFolder, previous: RunInfo | None,
                   shard: dict[str, int] | None, progress: ProgressReporter, t_start: float) -> RunResult:
    out = folder.path
    mine = rundir.select_shard(plan.cells, cfg.shard)
    expected = {c.cell_id: get_chunk_provenance(plan, c) for c in mine}
    notes = folder.prepare_records(list(expected))
    pending = [c for c in mine if not folder.check_chunk(expected[c.cell_id])]
    # The models' warnings (untrained, demo) are the caller's to show, beside the numbers (the CLI
    # prints them after the summary): shown here too, they appeared twice.
    for line in [*plan.notes, *notes]:
        text = line.replace("[", r"\[")  # a note is text, not rich markup
        progress.log(f"[bold yellow]{text}[/]")
    if previous is not None and mine:
        progress.log(describe_resume(out, len(mine) - len(pending), len(mine)).replace("[", r"\["))
    info = _start_info(task, cfg, plan, previous, [c.cell_id for c in mine], shard)
    info.chunks_total, info.chunks_done = len(mine), len(mine) - len(pending)
    folder.save_info(info)
    if shard is not None and not mine:
        progress.log(f"Shard {cfg.shard} holds no cell (the run has {len(plan.cells)}); it is finished with "
                     "nothing to evaluate and merges with the others.")
    stats = _evaluate(task, cfg, folder, info, pending, expected, progress)
    info.models = _build_model_entries(cfg, plan, mine, previous, stats, folder)
    skipped = {**plan.skipped, **folder.read_skipped([c.cell_id for c in mine])}
    folder.write_skipped(skipped)
    with folder.open_records() as records:
        summary = task.write_tables(records, out, info) if shard is None else pd.DataFrame()
        n_records = records.count()
    # images/s while evaluating: the images encoded over the seconds the cells took (`CellResult.seconds`),
    # without loading the models and building their classifiers (`seconds_setup_this_session`).
    encoded, evaluating = sum(s["encoded"] for s in stats), sum(s["seconds"] for s in stats)
    finish_info(info, n_records, len(skipped), time.perf_counter() - t_start,
                round(encoded / evaluating, 1) if encoded and evaluating > 0 else None,
                seconds_evaluating=evaluating if pending else None,
                seconds_setup=sum(s["setup"] for s in stats) if pending else None)
    folder.save_info(info)
    return RunResult(out, n_records, summary, info)


def describe_resume(out: Path, done: int, total: int) -> str:
    """The line that says a rerun takes up an earlier session's run in `out` (`done` of its `total`
    cells committed)."""
    if done == total:
        return f"Resuming {out}: every cell ({total}) already done; writing the tables"
    return f"Resuming {out}: {done} of {total} cell{'' if total == 1 else 's'} already done"


def _start_info(task: Task, cfg: RunSettings, plan: Plan, previous: RunInfo | None, mine: list[str],
                shard: dict[str, int] | None) -> RunInfo:
    versions = {**rundir.get_versions(), **plan.versions}
    return RunInfo(
        task=task.name, fingerprint=plan.fingerprint, config=cfg.to_dict(), versions=versions, device=plan.device,
        started=(previous.started if previous else "") or rundir.get_timestamp(), executor=cfg.executor.value,
        cells=[c.cell_id for c in plan.cells], shard=None if shard is None else {**shard, "cells": mine},
        files=[*ENGINE_FILES, *task.output_files], n_items=plan.n_items,
        extra={**plan.info, **({"seconds_planning": plan.seconds} if plan.seconds else {})},
    )


def _evaluate(task: Task, cfg: RunSettings, folder: RunFolder, info: RunInfo, pending: list[Cell],
              expected: dict[str, ChunkProvenance], progress: ProgressReporter) -> list[dict[str, Any]]:
    """Run the pending cells on the configured executor, committing each cell's chunk as it arrives.

    Returns:
        Per model: images encoded, seconds evaluating (the cells' `seconds`), seconds of setup (the
        `seconds` its cells' model info reported: loading, canvases, classifier; summed over the
        processes that loaded it) and the model info its cells reported.
    """
    stats: list[dict[str, Any]] = [{"encoded": 0, "seconds": 0.0, "setup": 0.0, "info": {}} for _ in cfg.models]

    def commit(result: CellResult) -> None:
        weights = {k: result.model_info[k] for k in ("weights_id",) if k in result.model_info}
        folder.save_chunk(replace(expected[result.cell_id], skipped=dict(result.skipped), model=weights),
                          result.records)
        model = stats[result.model_index]
        model["encoded"] += result.n_encoded
        model["seconds"] += result.seconds
        model["setup"] += sum(v for v in result.model_info.get("seconds", {}).values() if isinstance(v, (int, float)))
        seconds = {**model["info"].get("seconds", {}), **result.model_info.get("seconds", {})}
        model["info"] = {**model["info"], **result.model_info, "seconds": seconds}
        info.chunks_done += 1
        folder.save_info(info)

    if pending:
        create_executor(cfg).run(task, pending, commit, progress)
    return stats


def _build_model_entries(cfg: RunSettings, plan: Plan, mine: list[Cell], previous: RunInfo | None,
                         stats: list[dict[str, Any]], folder: RunFolder) -> list[dict[str, Any]]:
    """run.json's `models`: per model, what was known before loading, what its cells reported (in
    this session, or in an earlier one when every cell was committed then), and the counts."""
    old_models = previous.models if previous else []
    entries = []
    for m_index, spec in enumerate(cfg.models):
        cells = [c for c in mine if c.model_index == m_index]
        skipped = folder.read_skipped([c.cell_id for c in cells])
        old = old_models[m_index] if m_index < len(old_models) else {}
        planned = plan.models[m_index] if m_index < len(plan.models) else {}
        model = stats[m_index]
        encoded, seconds = model["encoded"], model["seconds"]
        reported = {k: v for k, v in model["info"].items() if k != "seconds"}
        entries.append({
            **{k: v for k, v in old.items() if k not in ("seconds",)},
            "name": spec.name, "pretrained": spec.pretrained, "backend": spec.backend,
            **planned, **reported,
            "n_images": sum(len(c.items) for c in cells) - len(skipped),
            "n_skipped": planned.get("n_skipped", 0) + len(skipped),
            "seconds": {**model["info"].get("seconds", {}), "evaluate": round(seconds, 3)},
            "images_encoded_this_session": encoded,
            "images_per_second": round(encoded / seconds, 1) if encoded and seconds > 0 else None,
        })
    return entries


def finish_info(info: RunInfo, n_records: int, n_skipped: int, seconds: float, images_per_second: float | None,
                *, seconds_evaluating: float | None = None, seconds_setup: float | None = None) -> None:
    """Mark run.json complete with the totals of the run.

    Args:
        info: run.json.
        n_records: The folder's records.
        n_skipped: Items that could not be evaluated.
        seconds: Wall time of this session (planning, loading, evaluating, tables).
        images_per_second: Images encoded per second of evaluating (None: none encoded).
        seconds_evaluating: Seconds this session's cells spent evaluating (`CellResult.seconds`,
            summed; None: no cell evaluated).
        seconds_setup: Seconds this session spent loading models and building what their cells
            need (canvases, classifiers), summed over models and processes (None: no cell evaluated).
    """
    info.complete = True
    info.n_records = n_records
    info.n_skipped = n_skipped
    info.finished = rundir.get_timestamp()
    info.seconds_total_this_session = round(seconds, 3)
    info.images_per_second = images_per_second
    info.seconds_evaluating_this_session = None if seconds_evaluating is None else round(seconds_evaluating, 3)
    info.seconds_setup_this_session = None if seconds_setup is None else round(seconds_setup, 3)
