"""The cells of a `real` run: one (model, shard of `chunk_size` photos), evaluated from picklable
inputs alone, so the same code runs in this process (`LocalExecutor`) or in a Ray worker
(`RayExecutor`); see `typoattack.running.executors`. A cell's id is the path of its chunk under
chunks/ without the suffix (`rundir.get_cell_id`), as for eval.

A Ray worker process keeps the dataset, model, classifier and defences of the last model it
evaluated.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from typoattack.config.real import RealConfig, get_prefix_prompt
from typoattack.data.real_datasets import RealSource, open_real_dataset
from typoattack.running import rundir
from typoattack.running.executors import CellKind
from typoattack.running.progress import NullProgress, ProgressReporter


@dataclass(frozen=True)
class RealCellTask:
    """Everything a process needs to evaluate one cell of a real run (picklable).

    Attributes:
        cfg: The run config.
        model_index: Index of the model in `cfg.models`.
        shard_index: Index of the shard among the model's shards.
        cell_id: Stable id of the cell (see `rundir.get_cell_id`).
        items: Indices into the dataset's items of the cell's photos, in run order.
        n_jobs: Photos of the cell (the unit of the progress bar).
    """

    cfg: RealConfig
    model_index: int
    shard_index: int
    cell_id: str
    items: tuple[int, ...]
    n_jobs: int


@dataclass
class RealCellResult:
    """The records of one cell and what its model's run.json entry needs.

    Attributes:
        cell_id: The cell.
        model_index: Its model.
        records: REAL_RECORD_COLUMNS, photo by photo, then defence by defence in config order.
        skipped: image_id -> why the photo could not be decoded.
        model_info: weights_id, input size, transform, classifier cache hit, defences, batch sizes,
            and the seconds the process spent loading (only on the first cell of a model in a process).
        seconds: Seconds evaluating the cell.
    """

    cell_id: str
    model_index: int
    records: pd.DataFrame
    skipped: dict[str, str]
    model_info: dict[str, Any]
    seconds: float


@dataclass
class RealModelContext:
    """A loaded model with the dataset, its vocabulary, and the classifier and defences over it."""

    key: tuple[Any, ...]
    model_index: int
    source: RealSource
    vocabulary: list[str]
    loaded: Any
    encoder: Any
    batch_size: int
    info: dict[str, Any] = field(default_factory=dict)


def plan_real_cells(cfg: RealConfig, indices: list[int]) -> list[RealCellTask]:
    """Every cell of a run, model by model: the selected photos cut into shards of `chunk_size`."""
    tasks = []
    for m_index, spec in enumerate(cfg.models):
        for s_index, start in enumerate(range(0, len(indices), cfg.chunk_size)):
            shard = tuple(indices[start:start + cfg.chunk_size])
            tasks.append(RealCellTask(cfg, m_index, s_index, rundir.get_cell_id(m_index, spec, s_index), shard,
                                      len(shard)))
    return tasks


def _get_context_key(cfg: RealConfig, model_index: int) -> tuple[Any, ...]:
    return (cfg.fingerprint(), cfg.labels, cfg.data, cfg.cache_dir, cfg.device, cfg.precision, cfg.compile,
            cfg.batch_size, model_index)


def create_real_context(task: RealCellTask, progress: ProgressReporter) -> RealModelContext:
    """Open the dataset, load the task's model, check the defences against it, and build the
    zero-shot classifier over the dataset's vocabulary (from the classifier cache when there)
    with the classifiers and head sets of the defences.

    Raises:
        ConfigError: A defence does not fit the model (heads of a ResNet or out of range, a prefix of another width).
    """
    from typoattack.config.loading import load_templates
    from typoattack.defences.apply import build_defence_set, check_defences
    from typoattack.models.classify import build_classifier
    from typoattack.models.loading import create_model, resolve_device
    from typoattack.running.evaluate import BatchEncoder, resolve_batch_size
    from typoattack.running.real import get_vocabulary, resolve_templates

    cfg = task.cfg
    spec = cfg.models[task.model_index]
    source = open_real_dataset(cfg.dataset, cfg.data, cfg.hf_split)
    vocabulary = get_vocabulary(cfg, source)
    templates = resolve_templates(cfg)
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    progress.log(f"Loading {spec.label} on {device}")
    loaded = create_model(spec, device, cfg.precision, compile=cfg.compile)
    t_load = time.perf_counter() - t0
    for note in check_defences(loaded, cfg.defences):
        progress.log(note.replace("[", r"\["))  # a note is text, not rich markup
    t0 = time.perf_counter()
    classifier, cached = build_classifier(
        loaded, vocabulary, templates, cfg.cache_dir,
        progress=progress.start(f"Classifier {spec.label} ({len(vocabulary)} labels, {len(templates)} templates)",
                                len(vocabulary)))

    def build_templates(name: str) -> tuple[Any, bool]:
        return build_classifier(loaded, vocabulary, load_templates(name), cfg.cache_dir)

    # Text-side defences add classifiers over the vocabulary, image-side ones encoder passes.
    defences = build_defence_set(loaded, cfg.defences, classifier, cached, build_templates, vocabulary, cfg.cache_dir,
                                 prefix_prompt=get_prefix_prompt(cfg.dataset))
    t_classifier = time.perf_counter() - t0
    batch_size = resolve_batch_size(cfg.batch_size, device)
    encoder = BatchEncoder(loaded, defences, batch_size, progress)
    info = {"weights_id": loaded.weights_id, "input_size": list(loaded.canvas_size), "transform": loaded.transform_key,
            "classifier_from_cache": cached, "defences": list(defences.labels), "batch_size": batch_size,
            "seconds": {"load_model": round(t_load, 3), "classifier": round(t_classifier, 3)}}
    return RealModelContext(_get_context_key(cfg, task.model_index), task.model_index, source, vocabulary, loaded,
                            encoder, batch_size, info)


def evaluate_real_cell(ctx: RealModelContext, task: RealCellTask, advance: Any = None) -> RealCellResult:
    """Classify the photos of one cell with a context made for its model (`advance` gets photos done)."""
    import torch

    from typoattack.running.real import evaluate_photos

    t0 = time.perf_counter()
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=max(task.cfg.workers, 1)) as pool:
        frame, skipped = evaluate_photos(task.cfg, ctx.source, list(task.items), ctx.loaded, ctx.encoder,
                                         ctx.vocabulary, ctx.batch_size, pool, advance or (lambda n: None))
    model_info = {**ctx.info, "encoder_batch_size_final": ctx.encoder.max_batch}
    ctx.info = {k: v for k, v in ctx.info.items() if k != "seconds"}  # loading is counted once per process
    return RealCellResult(task.cell_id, task.model_index, frame, skipped, model_info, time.perf_counter() - t0)


_CONTEXT: list[RealModelContext] = []
"""The real model context of this process (at most one)."""


def run_real_cell(task: RealCellTask) -> RealCellResult:
    """Evaluate one cell in this process, loading its model here unless the last cell's model was
    the same (the entry point of a Ray task)."""
    key = _get_context_key(task.cfg, task.model_index)
    if not _CONTEXT or _CONTEXT[0].key != key:
        _CONTEXT.clear()
        _CONTEXT.append(create_real_context(task, NullProgress()))
    return evaluate_real_cell(_CONTEXT[0], task)


REAL_CELLS = CellKind(create_real_context, evaluate_real_cell, run_real_cell)
"""How the executors compute the cells of a real run."""
