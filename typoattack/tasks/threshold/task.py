"""`typoattack threshold` as a task: per image, word, placement, style and defence, the smallest pixel
fraction at which the zero-shot prediction becomes the word's target (f_target) and at which it leaves
the true class (f_flip), found by a grid then a bisection in log space (`search`).

Plan: validate cheaply (class set, data source, vocabulary, templates, glyphs, device, weights), clip the searched
range of each series (word x placement x style) to what the model's canvas can draw and solve the grid's
masks (cached), decode the images once into the canvas cache of each model's input geometry, and cut each
model's images into cells of `chunk_size` images. A cell: its images' search, every series and defence at
once: one batched pass per grid point and per bisection step (`evaluate.PassEvaluator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from typoattack.analysis.query import RecordSet
from typoattack.attack.masks import MaskPool
from typoattack.attack.render import check_glyphs
from typoattack.config.common import resolve_chunk_size
from typoattack.config.types import Vocabulary
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.babel import get_classifier_texts
from typoattack.data.class_sets import ClassSet, load_class_set
from typoattack.data.sources import ImageSource, open_image_source, select_subset
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import RunInfo
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.progress import ProgressReporter
from typoattack.tasks.threshold.config import ThresholdConfig, load_threshold_config
from typoattack.tasks.threshold.masks import (
    Series, describe_ranges, find_series_ranges, get_mask_requests, list_series, load_threshold_vocab, solve_masks,
)
from typoattack.tasks.threshold.search import SeriesRange, get_lattice_fraction, search_thresholds
from typoattack.tasks.threshold.tables import (
    OUTPUT_FILES, build_threshold_records, empty_threshold_records, write_threshold_tables,
)

if TYPE_CHECKING:
    from typoattack.backends.base import ZeroShotModel
    from typoattack.defences.apply import BatchEncoder

# The model side (torch, the backends, tasks.shared) is imported where a run plans or evaluates, so that
# writing tables (`merge`) or a report of threshold runs loads no model library.

SEARCH = "grid then log-space bisection on a lattice of (grid - 1) x 2^steps intervals per series"
"""What run.json says of the search (part of the fingerprint: another search is another run)."""


@dataclass
class ThresholdContext:
    """A loaded model with its canvases, batch encoder, and its series' ranges and lattices."""

    model: ZeroShotModel
    canvases: CanvasSet
    encoder: BatchEncoder
    series: list[Series]
    ranges: list[SeriesRange]
    fractions: list[np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


def get_lattices(ranges: Sequence[SeriesRange], n_intervals: int) -> list[np.ndarray]:
    """Each series' lattice fractions, float64 [n_intervals + 1] (empty for an unreachable series)."""
    return [get_lattice_fraction(r.lo, r.hi, n_intervals, np.arange(n_intervals + 1)) if r.reachable
            else np.zeros(0) for r in ranges]


def read_threshold_words(cfg: ThresholdConfig) -> tuple[ClassSet, ImageSource, Vocabulary]:
    """The run's class set, images (labelled in it) and vocabulary (its targets in it), cheapest first.

    Raises:
        TypoAttackError: The class set, data or vocabulary is unusable (one line).
    """
    classes = load_class_set(cfg.classes, cfg.data)
    source = open_image_source(cfg.data, len(classes.names), classes.label)
    return classes, source, load_threshold_vocab(cfg.vocab, classes)


def solve_grid_masks(cfg: ThresholdConfig, series: Sequence[Series], ranges: Sequence[SeriesRange],
                     canvas_size: tuple[int, int], progress: ProgressReporter | None = None) -> None:
    """Solve (or find in the cache) the masks of every series' grid fractions, so that cells start encoding."""
    span = 2 ** cfg.steps
    keys = [(s, k * span) for s, r in enumerate(ranges) if r.reachable for k in range(cfg.grid)]
    advance = (progress.start(f"Text masks {canvas_size[0]}x{canvas_size[1]}", len(keys), "masks")
               if progress else None)
    solve_masks(get_mask_requests(series, ranges, cfg.n_intervals, keys, canvas_size), cfg.cache_dir, cfg.workers,
                advance)


class ThresholdTask(TaskBase, name="threshold", title="the smallest pixel fraction that changes each prediction",
                    report_stem="threshold_report", output_files=OUTPUT_FILES, job_unit="image-steps",
                    config_loader=load_threshold_config):
    """Per-image threshold search over the pixel fraction (`typoattack threshold`)."""

    def plan(self, cfg: ThresholdConfig, progress: ProgressReporter) -> Plan:
        from typoattack.backends.registry import get_backend
        from typoattack.tasks.shared import (
            build_fingerprint, check_models, decode_canvases, describe_run_device, get_backend_versions,
            get_run_templates,
        )

        classes, source, vocab = read_threshold_words(cfg)
        templates, language = get_run_templates(cfg, classes)
        series = list_series(cfg, vocab)
        for text, font in dict.fromkeys((s.word, s.style.font) for s in series):
            check_glyphs(text, font)
        check_models(cfg)
        t0 = time.perf_counter()
        ranges = {}
        for size in dict.fromkeys(get_backend(spec.backend).get_input_size(spec) for spec in cfg.models):
            if size:  # the cells find them again in the solver's caches
                ranges[size] = find_series_ranges(series, cfg.min_fraction, cfg.max_fraction, size)
                solve_grid_masks(cfg, series, ranges[size], size, progress)
        seconds_masks = time.perf_counter() - t0
        indices = select_subset(source.items, cfg.limit, cfg.seed)
        # As eval: the class set's names enter the fingerprint when they are not ImageNet's.
        fingerprint = build_fingerprint(cfg, [(w.text, w.target_index) for w in vocab.words], templates,
                                        [source.items[i].image_id for i in indices], {"search": SEARCH},
                                        {"fonts": [[s.word, Path(s.style.font).name] for s in series]},
                                        *([] if classes.is_imagenet else [{"classes": list(classes.names)}]))
        models = []
        records_per_image = len(series) * len(cfg.defences)
        chunk_size = resolve_chunk_size(cfg.chunk_size, records_per_image)
        for spec in cfg.models:
            geometry = get_backend(spec.backend).get_geometry(spec)
            canvases = decode_canvases(cfg, source, indices, geometry, progress)
            entry: dict[str, Any] = {"input_size": list(geometry.size), "transform": geometry.key,
                                     "canvas_cache": canvases.path}
            if geometry.size in ranges:
                entry["ranges"] = describe_ranges(series, ranges[geometry.size])
            models.append(entry)
        # As eval: cells cut over every selected image (rows of the canvas cache), an undecodable image
        # skipped in its own cell.
        image_list = tuple(indices)
        per_image = 1 + len(series) * (cfg.grid + cfg.steps)
        cells = cut_cells(self.name, cfg, np.arange(len(indices)), chunk_size.items, jobs_per_item=per_image,
                          shared=lambda m_index: image_list)
        info = {"classes": classes.to_info(),
                "vocab": {"name": vocab.name, "path": vocab.path,
                          "words": [{"text": w.text, "target_index": w.target_index,
                                     "target_name": classes.names[w.target_index], "language": w.language}
                                    for w in vocab.words],
                          **({"notes": list(vocab.notes)} if vocab.notes else {})},
                "templates": {"name": cfg.templates, "count": len(templates[0])},
                **({"class_language": language.describe(templates[0])} if language else {}),
                "search": {"method": SEARCH, "min_fraction": cfg.min_fraction, "max_fraction": cfg.max_fraction,
                           "grid": cfg.grid, "steps": cfg.steps, "lattice_intervals": cfg.n_intervals},
                "chunk_size": chunk_size.to_info("images")}
        notes = [*vocab.notes, *([language.describe_line(templates[0])] if language else [])]
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, models, {}, notes,
                    seconds={"masks": round(seconds_masks, 3)}, versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> ThresholdContext:
        """Load the cell's model, its series' ranges on its canvas, its canvases (decoded by the plan on this
        node, else here), and its zero-shot classifier with the run's defences.

        Raises:
            ConfigError: A defence does not fit the model.
        """
        from typoattack.tasks.shared import create_encoder, get_templates, load_model

        cfg: ThresholdConfig = cell.config
        model, load_seconds = load_model(cfg, cell.model_index, progress)
        classes, source, vocab = read_threshold_words(cfg)
        series = list_series(cfg, vocab)
        ranges = find_series_ranges(series, cfg.min_fraction, cfg.max_fraction, model.canvas_size)
        t0 = time.perf_counter()
        g = model.geometry
        canvases = prepare_canvases(source, list(cell.shared), g.transform, g.key, g.size, cfg.cache_dir,
                                    workers=cfg.workers)
        canvas_seconds = time.perf_counter() - t0
        names, templates = get_classifier_texts(cfg.class_language, classes,  # --class-language
                                                get_templates(cfg.templates, model.spec, classes), cfg.templates)
        encoder, info = create_encoder(model, cfg, names, templates, progress, "classes")
        info.update(ranges=describe_ranges(series, ranges),
                    seconds={"load_model": round(load_seconds, 3), "canvases": round(canvas_seconds, 3),
                             **info["seconds"]})
        return ThresholdContext(model, canvases, encoder, series, ranges, get_lattices(ranges, cfg.n_intervals), info)

    def evaluate_cell(self, context: ThresholdContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        import torch

        from typoattack.tasks.threshold.evaluate import PassEvaluator

        cfg: ThresholdConfig = cell.config
        t0 = time.perf_counter()
        canvases = context.canvases
        items = np.asarray(cell.items, dtype=np.int64)
        valid = canvases.valid[items]
        skipped = canvases.list_skipped(items)
        if skipped:
            advance(len(skipped) * (1 + len(context.series) * (cfg.grid + cfg.steps)))
        rows = items[valid]
        n_encoded = 0
        if not len(rows):
            frame = empty_threshold_records()
        else:
            pool = MaskPool(cfg.workers)
            evaluator = PassEvaluator(context.model, context.encoder, canvases, rows, context.series, context.ranges,
                                      cfg.n_intervals, cfg.seed, context.info["batch_size"], cfg.cache_dir, pool)
            trues = np.array([canvases.items[int(r)].true_index for r in rows], dtype=np.int64)
            with pool, torch.inference_mode():
                result = search_thresholds(trues, np.array([s.target_index for s in context.series], dtype=np.int64),
                                           context.ranges, len(context.encoder.defences.labels), cfg.grid, cfg.steps,
                                           evaluator, advance)
            spec = context.model.spec
            frame = build_threshold_records(result, [canvases.items[int(r)].image_id for r in rows], trues,
                                            [s.to_columns() for s in context.series],
                                            [(r.lo, r.hi) for r in context.ranges], context.fractions, spec.name,
                                            spec.pretrained, context.encoder.defences.labels)
            n_encoded = evaluator.n_encoded
        model_info = {**context.info, "encoder_batch_size_final": context.encoder.max_batch}
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, frame, skipped, model_info, time.perf_counter() - t0,
                          n_encoded)

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        return write_threshold_tables(records, out, info)

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        from typoattack.tasks.threshold.report import build_summary_renderables

        return build_summary_renderables(summary, info, full)

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        from typoattack.tasks.threshold.report import write_threshold_report

        return write_threshold_report(list(run_dirs), list(infos), out, stem, list(notes))


TASK = ThresholdTask()
