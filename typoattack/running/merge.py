"""`typoattack merge`: combine the folders of `eval --shard K/N` (or `real --shard K/N`) runs into
one run folder with the tables a single run writes (records.parquet in cell order, per_word,
confusion, skipped, run.json; summary and per_attack_word for a real run).

Merging refuses folders of different runs (fingerprints), unfinished shards, and sets whose cells
are missing or given twice.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.analysis.real_tables import write_real_tables
from typoattack.analysis.report import SKIPPED_CSV, read_run_info, summarize_clean, write_csv, write_tables
from typoattack.data.classes import list_class_names
from typoattack.errors import OutputError
from typoattack.files import write_atomic
from typoattack.running import rundir
from typoattack.running.real import RUN_KIND as REAL_KIND


@dataclass
class MergeResult:
    """What `run_merge` wrote (`per_word`: the summary table of a real run)."""

    out_dir: Path
    records: pd.DataFrame
    per_word: pd.DataFrame
    info: dict[str, Any]


def _read_shard(run_dir: Path) -> dict[str, Any]:
    info = read_run_info(run_dir)
    if not info.get("shard"):
        raise OutputError(f"{run_dir} holds a whole run, not a shard; merge takes the folders of `eval --shard K/N` "
                          "or `real --shard K/N`")
    if not info.get("complete"):
        raise OutputError(f"{run_dir} (shard {info['shard']['index']}/{info['shard']['count']}) is unfinished "
                          f"({info.get('chunks_done', 0)} of {info.get('chunks_total', '?')} cells); rerun its "
                          f"`typoattack {info.get('kind') or 'eval'}` command to finish it")
    return info


def check_shard_set(run_dirs: list[Path], infos: list[dict[str, Any]]) -> dict[str, Path]:
    """Check that the shard folders are of one run and hold each of its cells exactly once.

    Returns:
        The folder that holds each cell, in the run's cell order.

    Raises:
        OutputError: Different runs, a cell in two folders, or cells in none.
    """
    first = infos[0]
    for run_dir, info in zip(run_dirs[1:], infos[1:]):
        if info.get("kind") != first.get("kind"):
            raise OutputError(f"{run_dirs[0]} is a shard of `typoattack {first.get('kind') or 'eval'}` and {run_dir} of "
                              f"`typoattack {info.get('kind') or 'eval'}`; merge only the shards of one run")
        if info.get("fingerprint") != first.get("fingerprint") or info.get("cells") != first.get("cells"):
            raise OutputError(f"{run_dirs[0]} and {run_dir} are shards of different runs (config, seed, vocabulary "
                              "or images differ); merge only the shards of one run")
    owner: dict[str, Path] = {}
    for run_dir, info in zip(run_dirs, infos):
        for cell in info["shard"]["cells"]:
            if cell in owner:
                raise OutputError(f"cell {cell} is in both {owner[cell]} and {run_dir} "
                                  f"(shard {info['shard']['index']}/{info['shard']['count']} given twice?)")
            owner[cell] = run_dir
    missing = [c for c in first["cells"] if c not in owner]
    if missing:
        given = sorted({f"{i['shard']['index']}/{i['shard']['count']}" for i in infos})
        raise OutputError(f"{len(missing)} of {len(first['cells'])} cells are missing (first: {missing[0]}); "
                          f"the folders hold shards {', '.join(given)} of {first['shard']['count']}")
    return {c: owner[c] for c in first["cells"]}


def run_merge(run_dirs: list[Path], out: Path, overwrite: bool = False) -> MergeResult:
    """Merge shard folders into `out`.

    Args:
        run_dirs: The folders written by `typoattack eval --shard K/N` (every K of one N).
        out: The run folder to write (empty, or an earlier merge of the same run).
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
    rundir.prepare_out_dir(out, infos[0]["fingerprint"], overwrite)
    out.mkdir(parents=True, exist_ok=True)

    paths = []
    for cell, run_dir in owners.items():
        source, target = rundir.get_chunk_path(run_dir, cell), rundir.get_chunk_path(out, cell)
        if not source.is_file():
            raise OutputError(f"{run_dir} lists cell {cell} but its chunk {source} is missing")
        write_atomic(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        paths.append(target)
    records = rundir.merge_chunks(out, paths)
    real = infos[0].get("kind") == REAL_KIND
    per_word = write_real_tables(records, out) if real else write_tables(records, out, list_class_names())
    skipped = pd.concat([pd.read_csv(d / SKIPPED_CSV, dtype=str, keep_default_na=False) for d in run_dirs],
                        ignore_index=True).drop_duplicates().sort_values(["image_id", "reason"])
    write_csv(skipped.reset_index(drop=True), out / SKIPPED_CSV)

    info = _build_merged_info(run_dirs, infos)
    if real:
        info.update({"complete": True, "n_records": len(records), "n_skipped": len(skipped),
                     "finished": rundir.get_timestamp(), "seconds_total_this_session": round(time.perf_counter() - t0, 3)})
    else:
        rundir.finish_run_info(info, records, len(skipped), summarize_clean(records), time.perf_counter() - t0, None)
    rundir.save_run_info(out, info)
    return MergeResult(out, records, per_word, info)


def _build_merged_info(run_dirs: list[Path], infos: list[dict[str, Any]]) -> dict[str, Any]:
    """run.json of the merged run: the first shard's, without the shard, with what each shard did."""
    info = {k: v for k, v in infos[0].items() if k != "shard"}
    info["config"] = {**info["config"], "shard": None}
    info["chunks_total"] = info["chunks_done"] = len(info["cells"])
    for m_index, model in enumerate(info["models"]):
        encoded = sum(i["models"][m_index].get("images_encoded_this_session") or 0 for i in infos)
        info["models"][m_index] = {**model, "images_encoded_this_session": encoded, "seconds": None,
                                   "images_per_second": None}
    info["merged_from"] = [{"dir": str(d), "shard": f"{i['shard']['index']}/{i['shard']['count']}",
                            "device": i.get("device"), "cells": len(i["shard"]["cells"]),
                            "seconds_total_this_session": i.get("seconds_total_this_session"),
                            "images_per_second": i.get("images_per_second")} for d, i in zip(run_dirs, infos)]
    return info
