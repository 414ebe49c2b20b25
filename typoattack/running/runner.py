"""The eval and prepare pipelines: validate, prepare canvases, cut the run into cells (model x
chunk of images; see `typoattack.running.cells`), evaluate the pending cells of this run (or of
its `--shard K/N`) on the configured executor, committing each as a chunk (see
`typoattack.running.rundir`), then write the tables from the records."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.report import SKIPPED_CSV, summarize_clean, write_csv, write_tables
from typoattack.attack.masks import MaskRequest, create_attack_masks
from typoattack.attack.render import AttackMask, check_glyphs
from typoattack.config.loading import load_templates, load_vocab
from typoattack.config.types import RunConfig, Vocabulary
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.classes import list_class_names
from typoattack.data.sources import ImageSource, open_image_source, select_subset
from typoattack.errors import DataError, OutputError
from typoattack.records import Condition, list_conditions
from typoattack.running import rundir
from typoattack.running.cells import CellResult, CellTask
from typoattack.running.progress import NullProgress, ProgressReporter

__all__ = ["NullProgress", "ProgressReporter", "RunResult", "run_eval", "run_prepare"]


@dataclass
class RunResult:
    """What `run_eval` produced."""

    out_dir: Path
    records: pd.DataFrame
    per_word: pd.DataFrame
    info: dict[str, Any]


@dataclass
class _RunState:
    """What the models of one eval share: inputs, output folder and the growing run.json."""

    cfg: RunConfig
    out: Path
    source: ImageSource
    indices: list[int]
    templates: tuple[str, ...]
    conditions: list[Condition]
    device: Any
    info: dict[str, Any]
    progress: ProgressReporter
    chunk_paths: list[Path]
    skipped: dict[str, str]
    model_canvases: list[tuple[CanvasSet, np.ndarray]] = field(default_factory=list)
    encoded: int = 0
    encode_seconds: float = 0.0


def _validate_before_loading(cfg: RunConfig,
                             progress: ProgressReporter) -> tuple[Vocabulary, tuple[str, ...], ImageSource, float]:
    """Everything that can be checked without loading a model or decoding an image, cheapest
    first: the data source, vocabulary and templates, glyphs, device, model names and weights,
    then the text masks (solved once here and cached on disk for the evaluation; the seconds
    that took are returned last)."""
    source = open_image_source(cfg.data)
    from typoattack.models.loading import check_precision, check_weights_available, get_canvas_size, resolve_device

    vocab = load_vocab(cfg.vocab)
    templates = load_templates(cfg.templates)
    for style in cfg.styles:
        for word in vocab.words:
            check_glyphs(word.text, style.font)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    sizes = []
    for spec in cfg.models:
        check_weights_available(spec)
        sizes.append(get_canvas_size(spec))
    conditions = list_conditions(cfg, vocab)
    t0 = time.perf_counter()
    for size in dict.fromkeys(s for s in sizes if s is not None):
        _solve_masks(cfg, conditions, size, progress)
    return vocab, templates, source, time.perf_counter() - t0


def _solve_masks(cfg: RunConfig, conditions: list[Condition], canvas_size: tuple[int, int],
                 progress: ProgressReporter) -> dict[Condition, AttackMask]:
    """The text mask of every condition at one canvas size, from the mask cache or solved on
    `cfg.workers` processes (and cached)."""
    requests = [MaskRequest(c.word, c.fraction, c.placement, c.style, canvas_size) for c in conditions]
    advance = progress.start(f"Text masks {canvas_size[0]}x{canvas_size[1]}", len(requests))
    masks = create_attack_masks(requests, cfg.cache_dir, workers=cfg.workers, advance=advance)
    return dict(zip(conditions, masks))


def run_eval(cfg: RunConfig, progress: ProgressReporter | None = None, overwrite: bool = False) -> RunResult:
    """Run the benchmark described by `cfg` and write its results to `cfg.out`.

    Work is committed per cell (model, shard of `chunk_size` images); rerunning the same config on
    the same folder resumes and gives the same files as an uninterrupted run, whichever executor
    computed the cells. With `cfg.shard`, only that shard's cells are evaluated and no tables are
    written (`typoattack merge` writes them from all the shards).

    Args:
        cfg: The resolved run config (`out` must be set).
        progress: Progress display (nothing shown when None).
        overwrite: Replace a different run that `cfg.out` already holds.

    Returns:
        The records, the per-word table and the run.json contents.

    Raises:
        TypoAttackError: A user-fixable problem (config, data, weights, font, output folder).
    """
    progress = progress or NullProgress()
    out = rundir.get_out_dir(cfg.out)
    t_start = time.perf_counter()
    from typoattack.running.executors import check_executor

    check_executor(cfg.executor)
    vocab, templates, source, mask_seconds = _validate_before_loading(cfg, progress)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    fingerprint = rundir.get_run_fingerprint(cfg, vocab, templates, [source.items[i].image_id for i in indices])
    previous = rundir.prepare_out_dir(out, fingerprint, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    from typoattack.models.loading import resolve_device

    device = resolve_device(cfg.device)
    for warning in cfg.model_warnings:
        progress.log(f"[bold yellow]{warning}[/]")
    if previous is not None and rundir.describe_shard(previous.get("shard")) != rundir.describe_shard(
            rundir.get_shard_info(cfg)):
        raise OutputError(f"{out} holds {rundir.describe_shard(previous.get('shard'))} of this run, not "
                          f"{rundir.describe_shard(rundir.get_shard_info(cfg))}; choose another --out")
    info = rundir.build_run_info(cfg, vocab, templates, fingerprint, device, len(indices), previous)
    info["shard"] = rundir.get_shard_info(cfg)
    info["seconds_masks"] = round(mask_seconds, 3)
    rundir.save_run_info(out, info)
    state = _RunState(cfg, out, source, indices, templates, list_conditions(cfg, vocab), device, info, progress, [], {})
    tasks = _plan_cells(state)
    mine = rundir.select_shard(tasks, cfg.shard)
    state.chunk_paths = [rundir.get_chunk_path(out, t.cell_id) for t in mine]
    if cfg.shard is not None:
        info["shard"] = {**rundir.get_shard_info(cfg), "cells": [t.cell_id for t in mine]}
    info["cells"] = [t.cell_id for t in tasks]
    info["chunks_total"] = len(mine)
    pending = [t for t, path in zip(mine, state.chunk_paths) if not path.is_file()]
    info["chunks_done"] = len(mine) - len(pending)
    rundir.save_run_info(out, info)
    _evaluate_cells(state, pending, previous)

    records = rundir.merge_chunks(out, state.chunk_paths)
    write_csv(pd.DataFrame(sorted(state.skipped.items()), columns=["image_id", "reason"]), out / SKIPPED_CSV)
    if cfg.shard is None:
        per_word = write_tables(records, out, list_class_names())
    else:
        # A shard's tables would describe a part of the images: only `typoattack merge` writes them.
        per_word = pd.DataFrame()
    ips = round(state.encoded / state.encode_seconds, 1) if state.encoded and state.encode_seconds > 0 else None
    rundir.finish_run_info(info, records, len(state.skipped), summarize_clean(records),
                           time.perf_counter() - t_start, ips)
    rundir.save_run_info(out, info)
    return RunResult(out, records, per_word, info)


def _plan_cells(state: _RunState) -> list[CellTask]:
    """Every cell of the run, model by model: decode the images once into the canvas cache (to
    know which can be evaluated), then cut them into shards of `chunk_size`."""
    from typoattack.models.loading import get_canvas_transform

    cfg, tasks = state.cfg, []
    n_jobs_per_image = 1 + len(state.conditions)
    for m_index, spec in enumerate(cfg.models):
        transform, key, size = get_canvas_transform(spec)
        canvases = prepare_canvases(state.source, state.indices, transform, key, size, cfg.cache_dir,
                                    workers=cfg.workers,
                                    progress=state.progress.start(f"Canvases {size[0]}x{size[1]}", len(state.indices)))
        state.skipped.update(dict(canvases.skipped))
        rows = np.flatnonzero(canvases.valid)
        if rows.size == 0:
            raise DataError(f"none of the {len(state.indices)} images could be decoded (see {SKIPPED_CSV} reasons: "
                            f"{canvases.skipped[0][1] if canvases.skipped else 'unknown'})")
        state.model_canvases.append((canvases, rows))
        for s_index, start in enumerate(range(0, rows.size, cfg.chunk_size)):
            shard = rows[start:start + cfg.chunk_size]
            tasks.append(CellTask(cfg, m_index, s_index, rundir.get_cell_id(m_index, spec, s_index),
                                  tuple(state.indices), shard, int(shard.size) * n_jobs_per_image))
    return tasks


def _evaluate_cells(state: _RunState, pending: list[CellTask], previous: dict[str, Any] | None) -> None:
    """Run the pending cells on the configured executor, committing each cell's chunk as its
    records arrive; then write each model's entry in run.json."""
    from typoattack.running.evaluate import resolve_batch_size
    from typoattack.running.executors import create_executor

    cfg = state.cfg
    by_model: list[dict[str, Any]] = [{"encoded": 0, "seconds": 0.0, "info": {}} for _ in cfg.models]

    def commit(result: CellResult) -> None:
        rundir.save_chunk(result.records, rundir.get_chunk_path(state.out, result.cell_id))
        stats = by_model[result.model_index]
        stats["encoded"] += len(result.records) // len(cfg.defences)  # records hold every defence
        stats["seconds"] += result.seconds
        seconds = {**stats["info"].get("seconds", {}), **result.model_info.get("seconds", {})}
        stats["info"] = {**stats["info"], **result.model_info, "seconds": seconds}
        state.info["chunks_done"] += 1
        rundir.save_run_info(state.out, state.info)

    t0 = time.perf_counter()
    if pending:
        create_executor(cfg).run(pending, commit, state.progress)
    t_eval = time.perf_counter() - t0
    state.encoded = sum(s["encoded"] for s in by_model)
    state.encode_seconds = t_eval
    old_models = (previous or {}).get("models") or []
    from typoattack.models.loading import get_canvas_transform, get_weights_id

    for m_index, spec in enumerate(cfg.models):
        canvases, rows = state.model_canvases[m_index]
        _, key, size = get_canvas_transform(spec)
        stats, old = by_model[m_index], (old_models[m_index] if m_index < len(old_models) else {})
        info = stats["info"]
        masks = _solve_masks(cfg, state.conditions, size, NullProgress())
        encoded, seconds = stats["encoded"], stats["seconds"]
        state.info["models"].append({
            "name": spec.name, "pretrained": spec.pretrained, "weights_id": get_weights_id(spec),
            "canvas_size": list(size), "canvas_transform": key, "canvas_cache": canvases.path,
            "n_images": int(rows.size), "n_skipped": len(canvases.skipped),
            "classifier_from_cache": info.get("classifier_from_cache", old.get("classifier_from_cache")),
            "batch_size": resolve_batch_size(cfg.batch_size, state.device),
            "encoder_batch_size_final": info.get("encoder_batch_size_final", old.get("encoder_batch_size_final")),
            "masks": rundir.build_mask_info(state.conditions, masks),
            "seconds": {**info.get("seconds", {}), "evaluate": round(seconds, 3)},
            "images_encoded_this_session": encoded,
            "images_per_second": round(encoded / seconds, 1) if encoded and seconds > 0 else None,
        })
    rundir.save_run_info(state.out, state.info)


def run_prepare(cfg: RunConfig, progress: ProgressReporter | None = None) -> list[dict[str, Any]]:
    """Fill the canvas cache for every distinct canvas transform of the config's models.

    Later `eval` runs with any words, fractions or models of those canvas sizes read the cache.

    Returns:
        One summary per canvas cache (path, size, images, skipped, seconds, GB).
    """
    from typoattack.models.loading import get_canvas_transform

    progress = progress or NullProgress()
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    summaries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in cfg.models:
        transform, key, size = get_canvas_transform(spec)
        if key in seen:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        canvases = prepare_canvases(source, indices, transform, key, size, cfg.cache_dir, workers=cfg.workers,
                                    progress=progress.start(f"Canvases {size[0]}x{size[1]}", len(indices)))
        summaries.append({"cache": canvases.path, "canvas_size": list(size), "n_images": len(indices),
                          "n_skipped": len(canvases.skipped), "seconds": round(time.perf_counter() - t0, 2),
                          "gigabytes": round(Path(canvases.path).stat().st_size / 1e9, 3)})
    return summaries
