"""`typoattack find-heads` as a task: choose the vision attention heads to ablate (`--defence heads:@FILE`)
for each model, knowing where the drawn text is (`typoattack.defences.find_heads`: the scores, the
greedy rule, the seeded split).

Plan: validate cheaply (data source, vocabulary, templates, glyphs, device, weights), solve the text
masks once (cached), decode the images once into the canvas cache of each model's input geometry, and
make one cell per model (its greedy search is sequential): a run of several models searches each (in
turn, or a model per Ray task, or a model per shard) and resumes past the models already searched.
A cell: score every head on the selection half of the images, then the greedy search, measuring
accuracy with eval's evaluation loop (`tasks.sweep.evaluate_shard`); its records describe the search
(`tables.HEADS_COLUMNS`), from which the heads files are written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from rich.text import Text

from typoattack.analysis.query import RecordSet
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.babel import get_classifier_texts
from typoattack.data.fonts import get_fingerprint_fonts
from typoattack.data.sources import select_subset
from typoattack.defences.find_heads import (
    MAX_CLEAN_DROP, MAX_REJECTED, MIN_GAIN, Accuracy, Head, measure_accuracy, score_heads, search_heads, split_images,
)
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import SKIPPED_CSV, RunInfo
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.errors import DataError
from typoattack.progress import ProgressReporter
from typoattack.records import Condition
from typoattack.tasks.heads.config import FindHeadsConfig, load_find_heads_config
from typoattack.tasks.heads.tables import OUTPUT_FILES, build_search_records, write_heads_tables

if TYPE_CHECKING:
    import torch

    from typoattack.backends.base import ZeroShotModel

# The model side (torch, the backends, tasks.shared) is imported where a run plans or evaluates, so
# that writing the heads files (`merge`, `report`) loads no model library.

SCORE = "class-token attention share on the patches the text covers (selection half)"
RULE = {"min_gain": MIN_GAIN, "max_clean_drop": MAX_CLEAN_DROP, "max_rejected_in_a_row": MAX_REJECTED}
"""What heads.yaml says of the score and the rule (run.json `score`, `rule`; part of the fingerprint,
so a search under another rule is another run)."""
SCORE_BATCH = 64
"""Canvases per forward pass when recording attention (at most: the batch size when smaller)."""


@dataclass
class HeadsContext:
    """A loaded model with its canvases, masks on its device, zero-shot classifier and batch size."""

    model: ZeroShotModel
    canvases: CanvasSet
    conditions: list[Condition]
    device_masks: list[Any]
    classifier: torch.Tensor
    batch_size: int
    progress: ProgressReporter
    info: dict[str, Any] = field(default_factory=dict)


class FindHeadsTask(TaskBase, name="find-heads", title="attention heads chosen for ablation",
                    report_stem="heads_report", output_files=OUTPUT_FILES, job_unit="images",
                    config_loader=load_find_heads_config):
    """Greedy search of the vision attention heads to ablate (`typoattack find-heads`)."""

    def plan(self, cfg: FindHeadsConfig, progress: ProgressReporter) -> Plan:
        from typoattack.backends.registry import get_backend
        from typoattack.tasks.shared import (
            build_fingerprint, check_models, decode_canvases, describe_run_device, get_backend_versions,
            get_run_templates, read_sweep_words, solve_condition_masks,
        )

        words = read_sweep_words(cfg)
        classes, source, vocab, conditions, fonts = (words.classes, words.source, words.vocab, words.conditions,
                                                     words.fonts)
        templates, language = get_run_templates(cfg, classes)
        check_models(cfg)
        t0 = time.perf_counter()
        for size in dict.fromkeys(get_backend(spec.backend).get_input_size(spec) for spec in cfg.models):
            if size:  # solved once here (cached); the cells read them from the cache
                solve_condition_masks(cfg, conditions, size, progress)
        seconds_masks = time.perf_counter() - t0
        indices = select_subset(source.items, cfg.limit, cfg.seed)
        fingerprint = build_fingerprint(cfg, [(w.text, w.target_index) for w in vocab.words], templates,
                                        [source.items[i].image_id for i in indices], {"score": SCORE, "rule": RULE},
                                        *([] if classes.is_imagenet else [{"classes": list(classes.names)}]),
                                        *([{"fonts": get_fingerprint_fonts(fonts)}] if fonts else []))
        models, decoded = [], {}
        for spec in cfg.models:
            geometry = get_backend(spec.backend).get_geometry(spec)
            if (geometry.key, geometry.size) not in decoded:  # models of one input geometry share their canvases
                decoded[geometry.key, geometry.size] = decode_canvases(cfg, source, indices, geometry, progress,
                                                                       check=False)  # at least 2: below
            canvases = decoded[geometry.key, geometry.size]
            n_valid = int(canvases.valid.sum())
            if n_valid < 2:
                reason = f" (see {SKIPPED_CSV} reasons: {canvases.skipped[0][1]})" if canvases.skipped else ""
                raise DataError(f"find-heads needs at least 2 images (one to select on, one to report on); "
                                f"{n_valid} of the {len(indices)} selected decode{reason}")
            models.append({"input_size": list(geometry.size), "transform": geometry.key, "canvas_cache": canvases.path})
        # One cell per model, over every selected image (the search splits the ones that decode).
        items = tuple(int(i) for i in indices)
        cells = cut_cells(self.name, cfg, items, len(items))
        info = {"classes": classes.to_info(), "vocab": {"name": vocab.name, "path": vocab.path},
                "n_conditions": len(conditions),
                "templates": {"name": cfg.templates, "count": len(templates[0])}, "score": SCORE, "rule": RULE,
                **({"fonts": fonts} if fonts else {}),
                **({"class_language": language.describe(templates[0])} if language else {})}
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, models,
                    seconds={"masks": round(seconds_masks, 3)}, versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> HeadsContext:
        """Load the cell's model (failing at once for a tower that cannot be split per head), the masks
        of every condition on its device, its canvases (decoded by the plan on this node, else here)
        and its zero-shot classifier.

        Raises:
            ConfigError: The model's vision tower has no attention heads to ablate (a ResNet).
        """
        from typoattack.attack.compose import upload_mask
        from typoattack.backends.base import get_classifier
        from typoattack.defences.apply import resolve_batch_size
        from typoattack.tasks.shared import get_templates, load_model, read_sweep_words, solve_condition_masks

        cfg: FindHeadsConfig = cell.config
        model, load_seconds = load_model(cfg, cell.model_index, progress)
        model.get_head_grid()  # fails early for towers that cannot be split per head
        words = read_sweep_words(cfg, check=False)
        classes, conditions = words.classes, words.conditions
        masks = solve_condition_masks(cfg, conditions, model.canvas_size)
        device_masks = [upload_mask(mask, model.device) for mask in masks]
        t0 = time.perf_counter()
        g = model.geometry
        canvases = prepare_canvases(words.source, list(cell.items),
                                    g.transform, g.key, g.size, cfg.cache_dir, workers=cfg.workers)
        canvas_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        names, templates = get_classifier_texts(cfg.class_language, classes,  # --class-language
                                                get_templates(cfg.templates, model.spec, classes), cfg.templates)
        classifier, cached = get_classifier(model, names, templates, cfg.cache_dir,
                                            progress=progress.start("Classifier", len(names), "classes"))
        batch_size = resolve_batch_size(cfg.batch_size, model.device)
        info = {"weights_id": model.weights_id, "input_size": list(model.canvas_size), "transform": g.key,
                "classifier_from_cache": cached, "batch_size": batch_size,
                "seconds": {"load_model": round(load_seconds, 3), "canvases": round(canvas_seconds, 3),
                            "classifier": round(time.perf_counter() - t0, 3)}}
        return HeadsContext(model, canvases, conditions, device_masks, classifier, batch_size, progress, info)

    def evaluate_cell(self, context: HeadsContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        """The search of one model: score the heads on the selection half, keep them greedily, measure
        each kept set on the held-out half (for the report only)."""
        cfg: FindHeadsConfig = cell.config
        t0 = time.perf_counter()
        model, canvases = context.model, context.canvases
        skipped = canvases.list_skipped(range(len(canvases.items)))
        selection, heldout = split_images(np.flatnonzero(canvases.valid), cfg.seed)
        layers, heads = model.get_head_grid()
        scores = score_heads(model, canvases, selection, context.device_masks, cfg.seed,
                             min(context.batch_size, SCORE_BATCH))
        bar = context.progress.start("Greedy search", layers * heads, "heads")
        evaluate = _make_evaluator(context, {"selection": selection, "heldout": heldout}, cfg.seed, bar)
        search = search_heads(scores, evaluate, context.progress.log)
        bar(layers * heads - len(search.tried))  # a search that stops early leaves no bar standing short
        records = build_search_records(cfg.models[cell.model_index], model.weights_id, search, int(selection.size),
                                       int(heldout.size), [canvases.items[int(r)].image_id for r in heldout])
        advance(len(cell.items))
        seconds = time.perf_counter() - t0
        model_info = dict(context.info)  # the search's seconds are the cell's (run.json: `seconds.evaluate`)
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, records, skipped, model_info, seconds)

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        return write_heads_tables(records, out, info)

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        """Per model: the heads and why the search stopped, the accuracy before and after ablating them on
        each half, and the --defence that evaluates them."""
        out = info.config.get("out") if info is not None else None
        lines = []
        for row in summary.to_dict("records"):  # a report's summary has the run folder of each row
            folder = out or row.get("run")
            label = row["model"] + (f"/{row['pretrained']}" if isinstance(row["pretrained"], str) else "")
            lines.append(Text(f"{label + ': ' if len(summary) > 1 else ''}Heads: {row['heads'] or 'none'} "
                              f"({row['stopped']})"))
            for name, half in (("selection", "selection"), ("held-out", "heldout")):
                clean, typographic = (f"{row[f'{half}_{kind}_top1_baseline']:.1%} -> {row[f'{half}_{kind}_top1']:.1%}"
                                      for kind in ("clean", "attacked"))
                lines.append(Text(f"  {name}: clean top-1 {clean}, typographic top-1 {typographic}"))
            path = Path(folder) / row["file"] if folder else row["file"]
            lines.append(Text(f"  evaluate with --defence heads:@{path}"))
        return lines

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        from typoattack.tasks.heads.report import write_heads_report

        return write_heads_report(list(run_dirs), list(infos), out, stem, list(notes))


def _make_evaluator(context: HeadsContext, halves: dict[str, np.ndarray], seed: int,
                    advance: Callable[[int], None]) -> Callable[[str, Sequence[Head]], Accuracy]:
    """evaluate(half, heads) for `search_heads`: the model's accuracy on one half of the images with
    `heads` ablated (eval's evaluation loop on the half's canvases under every condition, clean
    first); `advance` gets a head per head tried (an evaluation of a selection set with heads)."""
    from typoattack.defences.apply import BatchEncoder, DefenceSet, ImageVariant
    from typoattack.tasks.sweep import evaluate_shard

    classifier = context.classifier

    def evaluate(half: str, chosen: Sequence[Head]) -> Accuracy:
        variant = ImageVariant(tuple(chosen), (classifier,), (0,))
        encoder = BatchEncoder(context.model, DefenceSet(("search",), (variant,), int(classifier.shape[1])),
                               context.batch_size, context.progress)
        records = evaluate_shard(context.model, encoder, context.canvases, halves[half], context.conditions,
                                 context.device_masks, seed, context.batch_size, lambda n: None)
        if half == "selection" and chosen:
            advance(1)
        return measure_accuracy(records)

    return evaluate


TASK = FindHeadsTask()
