"""The eval and prepare pipelines: validate, prepare canvases, evaluate every model in committed
chunks (see `typoattack.running.rundir`), then write the tables from the records."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.report import SKIPPED_CSV, summarize_clean, write_csv, write_tables
from typoattack.attack.masks import MaskRequest, create_attack_masks
from typoattack.attack.render import AttackMask, check_glyphs
from typoattack.config.loading import load_templates, load_vocab
from typoattack.config.types import ModelSpec, RunConfig, Vocabulary
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.classes import list_class_names
from typoattack.data.sources import ImageSource, open_image_source, select_subset
from typoattack.errors import ConfigError, DataError
from typoattack.records import Condition, list_conditions
from typoattack.running import rundir
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

    Work is committed per (model, shard of `chunk_size` images); rerunning the same config on
    the same folder resumes and gives the same files as an uninterrupted run.

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
    if not cfg.out:
        raise ConfigError("no output folder; pass --out DIR or set `out` in the config")
    out = Path(cfg.out)
    t_start = time.perf_counter()
    vocab, templates, source, mask_seconds = _validate_before_loading(cfg, progress)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    fingerprint = rundir.get_run_fingerprint(cfg, vocab, templates, [source.items[i].image_id for i in indices])
    previous = rundir.prepare_out_dir(out, fingerprint, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    from typoattack.models.loading import resolve_device

    device = resolve_device(cfg.device)
    for warning in cfg.model_warnings:
        progress.log(f"[bold yellow]{warning}[/]")
    info = rundir.build_run_info(cfg, vocab, templates, fingerprint, device, len(indices), previous)
    info["seconds_masks"] = round(mask_seconds, 3)
    rundir.save_run_info(out, info)
    state = _RunState(cfg, out, source, indices, templates, list_conditions(cfg, vocab), device, info, progress, [], {})
    for m_index, spec in enumerate(cfg.models):
        _evaluate_model(state, m_index, spec)

    records = rundir.merge_chunks(out, state.chunk_paths)
    per_word = write_tables(records, out, list_class_names())
    write_csv(pd.DataFrame(sorted(state.skipped.items()), columns=["image_id", "reason"]), out / SKIPPED_CSV)
    ips = round(state.encoded / state.encode_seconds, 1) if state.encoded and state.encode_seconds > 0 else None
    rundir.finish_run_info(info, records, len(state.skipped), summarize_clean(records),
                           time.perf_counter() - t_start, ips)
    rundir.save_run_info(out, info)
    return RunResult(out, records, per_word, info)


def _evaluate_model(state: _RunState, m_index: int, spec: ModelSpec) -> None:
    """Load one model, prepare its canvases and classifier, and evaluate every shard not yet
    committed; append the model's entry to run.json."""
    from typoattack.attack.compose import upload_mask
    from typoattack.models.classify import build_classifier
    from typoattack.models.loading import create_model

    cfg, progress, conditions = state.cfg, state.progress, state.conditions
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    progress.log(f"Loading {spec.label} on {state.device}")
    loaded = create_model(spec, state.device, cfg.precision, compile=cfg.compile)
    seconds["load_model"] = round(time.perf_counter() - t0, 3)
    from typoattack.defences.apply import check_defences

    check_defences(loaded, cfg.defences)
    masks = _solve_masks(cfg, conditions, loaded.canvas_size, progress)
    device_masks = [upload_mask(masks[c], state.device) for c in conditions]

    t0 = time.perf_counter()
    canvases = prepare_canvases(
        state.source, state.indices, loaded.canvas_transform, loaded.transform_key, loaded.canvas_size,
        cfg.cache_dir, workers=cfg.workers,
        progress=progress.start(f"Canvases {loaded.canvas_size[0]}x{loaded.canvas_size[1]}", len(state.indices)),
    )
    seconds["canvases"] = round(time.perf_counter() - t0, 3)
    state.skipped.update(dict(canvases.skipped))
    rows = np.flatnonzero(canvases.valid)
    if rows.size == 0:
        raise DataError(f"none of the {len(state.indices)} images could be decoded (see {SKIPPED_CSV} reasons: "
                        f"{canvases.skipped[0][1] if canvases.skipped else 'unknown'})")

    t0 = time.perf_counter()
    classifier, cached = build_classifier(
        loaded, list_class_names(), state.templates, cfg.cache_dir,
        progress=progress.start(f"Classifier {spec.label} ({len(state.templates)} templates)", len(list_class_names())),
    )
    defences = _build_defences(state, loaded, classifier, cached)
    seconds["classifier"] = round(time.perf_counter() - t0, 3)
    # The defence set goes where the classifier went: BatchEncoder takes either.
    timing = _evaluate_shards(state, m_index, loaded, defences, canvases, rows, device_masks, seconds)
    state.info["models"].append({
        "name": spec.name, "pretrained": spec.pretrained, "weights_id": loaded.weights_id,
        "canvas_size": list(loaded.canvas_size), "canvas_transform": loaded.transform_key,
        "canvas_cache": canvases.path, "n_images": int(rows.size), "n_skipped": len(canvases.skipped),
        "classifier_from_cache": cached, "defences": list(defences.labels), "batch_size": timing.pop("batch_size"),
        "encoder_batch_size_final": timing.pop("encoder_batch_size_final"),
        "masks": rundir.build_mask_info(conditions, masks), **timing,
    })
    rundir.save_run_info(state.out, state.info)


def _build_defences(state: _RunState, loaded: Any, classifier: Any, cached: bool) -> Any:
    """The run's defences for one model (`typoattack.defences.apply.DefenceSet`)."""
    from typoattack.defences.apply import build_defence_set
    from typoattack.models.classify import build_classifier

    def build_templates(name: str) -> Any:
        return build_classifier(loaded, list_class_names(), load_templates(name), state.cfg.cache_dir)

    return build_defence_set(loaded, state.cfg.defences, classifier, cached, build_templates, list_class_names(),
                             state.cfg.cache_dir)


def _evaluate_shards(state: _RunState, m_index: int, loaded: Any, classifier: Any, canvases: CanvasSet,
                     rows: np.ndarray, device_masks: list[Any], seconds: dict[str, float]) -> dict[str, Any]:
    """Evaluate the shards of one model that have no committed chunk; return its run.json timings."""
    import torch

    from typoattack.running.evaluate import BatchEncoder, evaluate_shard, resolve_batch_size

    cfg, spec = state.cfg, loaded.spec
    shards = [rows[i:i + cfg.chunk_size] for i in range(0, rows.size, cfg.chunk_size)]
    state.info["chunks_total"] += len(shards)
    per_image = 1 + len(state.conditions)
    advance = state.progress.start(f"Evaluating {spec.label}", rows.size * per_image)
    batch_size = resolve_batch_size(cfg.batch_size, state.device)
    encoder = BatchEncoder(loaded, classifier, batch_size, state.progress)
    t0 = time.perf_counter()
    encoded = 0
    with torch.inference_mode():
        for s_index, shard in enumerate(shards):
            path = rundir.get_chunk_path(state.out, m_index, spec, s_index)
            state.chunk_paths.append(path)
            if path.is_file():
                advance(shard.size * per_image)
            else:
                frame = evaluate_shard(loaded, encoder, canvases, shard, state.conditions, device_masks, cfg.seed,
                                       batch_size, advance)
                rundir.save_chunk(frame, path)
                encoded += len(frame)
            state.info["chunks_done"] += 1
            rundir.save_run_info(state.out, state.info)
    t_eval = time.perf_counter() - t0
    state.encoded += encoded
    state.encode_seconds += t_eval
    return {"batch_size": batch_size, "encoder_batch_size_final": encoder.max_batch,
            "seconds": {**seconds, "evaluate": round(t_eval, 3)},
            "images_encoded_this_session": encoded,
            "images_per_second": round(encoded / t_eval, 1) if encoded and t_eval > 0 else None}


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
