"""`typoattack merge`: combine the shard folders of one run (any task) into the run folder a single
run writes: the shards' chunk files hard-linked (or copied) into records.parquet/, the task's tables
(queries over them), skipped.csv and run.json. No record is loaded: memory does not grow with the
records.

Merging refuses folders of different runs (fingerprints, tasks), unfinished shards, and sets whose
cells are missing or given twice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from typoattack.engine.rundir import SKIPPED_CSV, RunFolder, RunInfo, describe_shard, read_run_info
from typoattack.engine.run import finish_info
from typoattack.engine.task import Task
from typoattack.errors import OutputError


@dataclass
class MergeResult:
    """What `run_merge` wrote (`summary`: the task's summary table)."""

    out_dir: Path
    n_records: int
    summary: pd.DataFrame
    info: RunInfo


def _read_shard(run_dir: Path) -> RunInfo:
    info = read_run_info(run_dir)
    if not info.shard:
        raise OutputError(f"{run_dir} holds a whole run, not a shard; merge takes the folders of "
                          "`typoattack <command> --shard K/N`")
    if not info.complete:
        raise OutputError(f"{run_dir} ({describe_shard(info.shard)}) is unfinished ({info.chunks_done} of "
                          f"{info.chunks_total or '?'} cells); rerun its `typoattack {info.task}` command to finish it")
    return info


def check_shard_set(run_dirs: list[Path], infos: list[RunInfo]) -> dict[str, Path]:
    """Check that the shard folders are of one run and hold each of its cells exactly once.

    Returns:
        The folder that holds each cell, in the run's cell order.

    Raises:
        OutputError: Different runs, a cell in two folders, or cells in none.
    """
    first = infos[0]
    for run_dir, info in zip(run_dirs[1:], infos[1:]):
        if info.task != first.task:
            raise OutputError(f"{run_dirs[0]} is a shard of `typoattack {first.task}` and {run_dir} of "
                              f"`typoattack {info.task}`; merge only the shards of one run")
        if info.fingerprint != first.fingerprint or info.cells != first.cells:
            raise OutputError(f"{run_dirs[0]} and {run_dir} are shards of different runs (config, seed, vocabulary "
                              "or images differ); merge only the shards of one run")
    owner: dict[str, Path] = {}
    for run_dir, info in zip(run_dirs, infos):
        assert info.shard is not None
        for cell in info.shard["cells"]:
            if cell in owner:
                raise OutputError(f"cell {cell} is in both {owner[cell]} and {run_dir} "
                                  f"({describe_shard(info.shard)} given twice?)")
            owner[cell] = run_dir
    missing = [c for c in first.cells if c not in owner]
    if missing:
        given = sorted({f"{i.shard['index']}/{i.shard['count']}" for i in infos if i.shard})
        raise OutputError(f"{len(missing)} of {len(first.cells)} cells are missing (first: {missing[0]}); "
                          f"the folders hold shards {', '.join(given)} of {first.shard['count'] if first.shard else '?'}")
    return {c: owner[c] for c in first.cells}


def run_merge(run_dirs: list[Path], out: Path, tasks: Mapping[str, Task], overwrite: bool = False) -> MergeResult:
    """Merge shard folders into `out`.

    Args:
        run_dirs: The folders written by `typoattack <command> --shard K/N` (every K of one N).
        out: The run folder to write (empty, or an earlier merge of the same run).
        tasks: The tasks by name (the shards' task writes the tables).
        overwrite: Replace a different run that `out` holds.

    Raises:
        OutputError: A folder is not a finished shard, the set is inconsistent, or `out` is one of
            the inputs or holds another run.
    """
    t0 = time.perf_counter()
    if not run_dirs:
        raise OutputError("no shard folders given")
    resolved = [d.resolve() for d in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise OutputError("a shard folder is given twice")
    if out.resolve() in resolved:
        raise OutputError(f"--out {out} is one of the shard folders; choose a new folder")
    infos = [_read_shard(d) for d in run_dirs]
    owners = check_shard_set(run_dirs, infos)
    if infos[0].task not in tasks:
        raise OutputError(f"{run_dirs[0]} holds a run of `{infos[0].task}`, which this typoattack does not know")
    task = tasks[infos[0].task]
    folder, _ = RunFolder.open(out, infos[0].fingerprint, overwrite, None)
    try:
        folder.prepare_records(list(owners))
        for cell, run_dir in owners.items():
            folder.link_chunk_from(RunFolder(run_dir), infos[0].fingerprint, cell)
        info = _build_merged_info(run_dirs, infos)
        skipped = pd.concat([_read_skipped_csv(d) for d in run_dirs],
                            ignore_index=True).drop_duplicates().sort_values(["image_id", "reason"])
        folder.write_skipped(dict(zip(skipped["image_id"], skipped["reason"])))
        with folder.open_records() as records:
            summary = task.write_tables(records, out, info)
            n_records = records.count()
        finish_info(info, n_records, skipped["image_id"].nunique(), time.perf_counter() - t0, None)
        folder.save_info(info)
    finally:
        folder.unlock()
    return MergeResult(out, n_records, summary, info)


def _read_skipped_csv(run_dir: Path) -> pd.DataFrame:
    path = run_dir / SKIPPED_CSV
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise OutputError(f"cannot read {path}: {e}") from None


def _build_merged_info(run_dirs: list[Path], infos: list[RunInfo]) -> RunInfo:
    """run.json of the merged run: the first shard's, without the shard, with what each shard did."""
    first = infos[0]
    models = []
    for m_index, model in enumerate(first.models):
        shard_models = [i.models[m_index] for i in infos if m_index < len(i.models)]
        models.append({**model, "images_encoded_this_session": sum(m.get("images_encoded_this_session") or 0
                                                                   for m in shard_models),
                       "n_images": sum(m.get("n_images") or 0 for m in shard_models),
                       "seconds": None, "images_per_second": None})
    return RunInfo(
        task=first.task, fingerprint=first.fingerprint, config={**first.config, "shard": None},
        versions=first.versions, device=first.device, started=first.started, executor=first.executor,
        cells=list(first.cells), shard=None, files=list(first.files), n_items=first.n_items,
        chunks_total=len(first.cells), chunks_done=len(first.cells), models=models, extra=dict(first.extra),
        merged_from=[{"dir": str(d), "shard": f"{i.shard['index']}/{i.shard['count']}" if i.shard else "",
                      "device": i.device, "cells": len(i.shard["cells"]) if i.shard else 0,
                      "seconds_total_this_session": i.seconds_total_this_session,
                      "images_per_second": i.images_per_second} for d, i in zip(run_dirs, infos)],
    )
