"""Evaluation cells: the unit of work that executors run and the run folder commits.

A cell is one (model, shard of `chunk_size` images) with every condition; its id is the chunk's
path under chunks/ without the suffix (`00-typoattack-reader-tiny-ci500/00003`). `run_cell`
evaluates one cell from picklable inputs alone, so it runs the same in this process or in a Ray
worker; a process keeps the model, canvases and classifier of the last model it evaluated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from typoattack.config.loading import load_templates, load_vocab
from typoattack.config.types import RunConfig
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.classes import list_class_names
from typoattack.data.sources import open_image_source
from typoattack.records import Condition, list_conditions
from typoattack.running.progress import NullProgress, ProgressReporter


@dataclass(frozen=True)
class CellTask:
    """Everything a process needs to evaluate one cell (picklable).

    Attributes:
        cfg: The run config.
        model_index: Index of the model in `cfg.models`.
        shard_index: Index of the shard among the model's shards.
        cell_id: Stable id of the cell (see `rundir.get_cell_id`).
        indices: The selected items of the data source, in run order (the canvas set's rows).
        rows: int [n] rows of the canvas set the cell evaluates (decodable images only).
        n_jobs: Classifications of the cell: each image clean and under every condition.
    """

    cfg: RunConfig
    model_index: int
    shard_index: int
    cell_id: str
    indices: tuple[int, ...]
    rows: np.ndarray
    n_jobs: int


@dataclass
class CellResult:
    """The records of one cell and what the run.json entry of its model needs.

    Attributes:
        cell_id: The cell.
        model_index: Its model.
        records: The cell's records (RECORD_COLUMNS), image by image, clean first.
        model_info: weights_id, canvas size and transform, classifier cache hit, batch sizes, and
            the seconds the process spent loading (only on the first cell of a model in a process).
        seconds: Seconds evaluating the cell.
    """

    cell_id: str
    model_index: int
    records: pd.DataFrame
    model_info: dict[str, Any]
    seconds: float


@dataclass
class ModelContext:
    """A loaded model with its canvases, masks on the device, classifier and batch encoder."""

    key: tuple[Any, ...]
    model_index: int
    loaded: Any
    canvases: CanvasSet
    conditions: list[Condition]
    masks: dict[Condition, Any]
    device_masks: list[Any]
    encoder: Any
    batch_size: int
    info: dict[str, Any] = field(default_factory=dict)


def _get_context_key(cfg: RunConfig, model_index: int, indices: tuple[int, ...]) -> tuple[Any, ...]:
    return (cfg.fingerprint(), cfg.cache_dir, cfg.device, cfg.precision, cfg.compile, cfg.batch_size, model_index,
            hash(indices))


def create_model_context(cfg: RunConfig, model_index: int, indices: tuple[int, ...],
                         progress: ProgressReporter) -> ModelContext:
    """Load a model, its canvases (from the node's canvas cache, decoded there on first use),
    the masks of every condition on its device, and its zero-shot classifier with the classifiers
    and head sets of the run's defences.

    Raises:
        ConfigError: A defence does not fit the model (heads of a ResNet, a prefix of another width).
    """
    from typoattack.attack.compose import upload_mask
    from typoattack.attack.masks import MaskRequest, create_attack_masks
    from typoattack.defences.apply import build_defence_set, check_defences
    from typoattack.models.classify import build_classifier
    from typoattack.models.loading import create_model, resolve_device
    from typoattack.running.evaluate import BatchEncoder, resolve_batch_size

    spec = cfg.models[model_index]
    device = resolve_device(cfg.device)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    progress.log(f"Loading {spec.label} on {device}")
    loaded = create_model(spec, device, cfg.precision, compile=cfg.compile)
    seconds["load_model"] = round(time.perf_counter() - t0, 3)
    for note in check_defences(loaded, cfg.defences):
        progress.log(note.replace("[", r"\["))  # a note is text, not rich markup
    conditions = list_conditions(cfg, load_vocab(cfg.vocab))
    requests = [MaskRequest(c.word, c.fraction, c.placement, c.style, loaded.canvas_size) for c in conditions]
    advance = progress.start(f"Text masks {loaded.canvas_size[0]}x{loaded.canvas_size[1]}", len(requests))
    masks = dict(zip(conditions, create_attack_masks(requests, cfg.cache_dir, workers=cfg.workers, advance=advance)))
    device_masks = [upload_mask(masks[c], device) for c in conditions]

    t0 = time.perf_counter()
    canvases = prepare_canvases(
        open_image_source(cfg.data), list(indices), loaded.canvas_transform, loaded.transform_key,
        loaded.canvas_size, cfg.cache_dir, workers=cfg.workers,
        progress=progress.start(f"Canvases {loaded.canvas_size[0]}x{loaded.canvas_size[1]}", len(indices)),
    )
    seconds["canvases"] = round(time.perf_counter() - t0, 3)
    templates = load_templates(cfg.templates)
    t0 = time.perf_counter()
    classifier, cached = build_classifier(
        loaded, list_class_names(), templates, cfg.cache_dir,
        progress=progress.start(f"Classifier {spec.label} ({len(templates)} templates)", len(list_class_names())),
    )

    def build_templates(name: str) -> tuple[Any, bool]:
        return build_classifier(loaded, list_class_names(), load_templates(name), cfg.cache_dir)

    # Each defence changes only its side: text-side ones add classifiers, image-side ones encoder passes.
    defences = build_defence_set(loaded, cfg.defences, classifier, cached, build_templates, list_class_names(),
                                 cfg.cache_dir)
    seconds["classifier"] = round(time.perf_counter() - t0, 3)
    batch_size = resolve_batch_size(cfg.batch_size, device)
    encoder = BatchEncoder(loaded, defences, batch_size, progress)
    info = {"weights_id": loaded.weights_id, "canvas_size": list(loaded.canvas_size),
            "canvas_transform": loaded.transform_key, "classifier_from_cache": cached,
            "defences": list(defences.labels), "batch_size": batch_size, "seconds": seconds}
    return ModelContext(_get_context_key(cfg, model_index, indices), model_index, loaded, canvases, conditions, masks,
                        device_masks, encoder, batch_size, info)


def evaluate_cell(ctx: ModelContext, task: CellTask, advance: Any = None) -> CellResult:
    """Evaluate one cell with a model context made for its model (`advance` gets jobs done)."""
    import torch

    from typoattack.running.evaluate import evaluate_shard

    t0 = time.perf_counter()
    with torch.inference_mode():
        frame = evaluate_shard(ctx.loaded, ctx.encoder, ctx.canvases, task.rows, ctx.conditions, ctx.device_masks,
                               task.cfg.seed, ctx.batch_size, advance or (lambda n: None))
    model_info = {**ctx.info, "encoder_batch_size_final": ctx.encoder.max_batch}
    ctx.info = {k: v for k, v in ctx.info.items() if k != "seconds"}  # loading is counted once per process
    return CellResult(task.cell_id, task.model_index, frame, model_info, time.perf_counter() - t0)


_CONTEXT: list[ModelContext] = []
"""The model context of this process (at most one: a worker that moves on to another model frees
the previous one)."""


def run_cell(task: CellTask) -> CellResult:
    """Evaluate one cell in this process, loading its model here unless the last cell's model was
    the same (the entry point of a Ray task)."""
    key = _get_context_key(task.cfg, task.model_index, task.indices)
    if not _CONTEXT or _CONTEXT[0].key != key:
        _CONTEXT.clear()
        _CONTEXT.append(create_model_context(task.cfg, task.model_index, task.indices, NullProgress()))
    return evaluate_cell(_CONTEXT[0], task)
