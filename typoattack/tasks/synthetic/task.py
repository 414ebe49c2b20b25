"""`typoattack eval` as a task: words of a vocabulary drawn on labelled images at controlled pixel
fractions, classified zero-shot over the run's class set (`--classes`: the 1000 ImageNet classes by default).

Plan: validate cheaply (data source, vocabulary, templates, glyphs, device, weights), solve the
text masks once (cached), decode the images once into the canvas cache of each model's input
geometry (to know which decode), and cut each model's images into cells of `chunk_size` images
(unset: `resolve_chunk_size`, at most about 1 M records a cell). A cell: every image of its chunk
clean and under every condition, under every defence.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from typoattack.analysis.languages import PER_TARGET_LANGUAGE_CSV, write_per_target_language
from typoattack.analysis.query import RecordSet
from typoattack.analysis.report import summarize_clean, write_tables
from typoattack.attack.masks import MaskInfo
from typoattack.attack.solver import UnreachableFractionError
from typoattack.config.common import resolve_chunk_size
from typoattack.config.defences import PREFIX_BASELINE
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.babel import get_classifier_texts
from typoattack.data.class_sets import ClassSet
from typoattack.data.fonts import get_fingerprint_fonts
from typoattack.data.sources import select_subset
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import RunInfo
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.progress import ProgressReporter
from typoattack.records import Condition, count_image_conditions, get_record_dtypes
from typoattack.tasks.synthetic.config import SyntheticConfig, load_synthetic_config

if TYPE_CHECKING:
    from typoattack.backends.base import ZeroShotModel
    from typoattack.defences.apply import BatchEncoder

# The model side (torch, the backends, tasks.shared) is imported where a run plans or evaluates, so
# that writing tables (`merge`) or a report of eval runs loads no model library.

OUTPUT_FILES = ("per_word.csv", "per_word.md", "confusion.csv", "confusion.parquet", "per_target.csv",
                PER_TARGET_LANGUAGE_CSV)


def build_mask_info(conditions: Sequence[Condition], infos: Sequence[MaskInfo]) -> list[dict[str, Any]]:
    """The `masks` entry of a model in run.json: each condition (with `infos[k]` its mask's) with
    its solved font size, the stamps' sub-pixel phases, the number of random stamps and the coverage."""
    keys = ("word", "fraction", "placement", "font", "fill", "outline")
    return [{**{k: c.to_columns()[k] for k in keys}, **({"text": c.text} if c.text else {}),
             "font_size": m.font_size, "phases": list(m.phases), "copies": m.copies,
             "mask_coverage": round(m.coverage, 6)} for c, m in zip(conditions, infos, strict=True)]


@dataclass
class SyntheticContext:
    """A loaded model with its canvases, masks bound to its device (`DeviceMasks`), classifier and
    batch encoder."""

    model: ZeroShotModel
    canvases: CanvasSet
    conditions: list[Condition]
    device_masks: Sequence[Any]
    encoder: BatchEncoder
    info: dict[str, Any] = field(default_factory=dict)


class SyntheticTask(TaskBase, name="eval", title="synthetic attacks on labelled images", report_stem="eval_report",
                    output_files=OUTPUT_FILES, job_unit="canvases", config_loader=load_synthetic_config):
    """Synthetic attacks on labelled images (`typoattack eval`)."""

    def plan(self, cfg: SyntheticConfig, progress: ProgressReporter) -> Plan:
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
        sizes = [get_backend(spec.backend).get_input_size(spec) for spec in cfg.models]
        t0 = time.perf_counter()
        # Only the masks' infos stay: the pixels are in the cache, for the cells.
        try:
            mask_infos = {size: solve_condition_masks(cfg, conditions, size, progress).infos
                          for size in dict.fromkeys(sizes) if size}
        except UnreachableFractionError as e:  # the canvas is the model's input
            raise e.with_fix("a model with a larger input (--model)") from None
        seconds_masks = time.perf_counter() - t0
        indices = select_subset(source.items, cfg.limit, cfg.seed)
        # The class set's names enter the fingerprint when they are not ImageNet's (those runs keep theirs).
        fingerprint = build_fingerprint(cfg, [(w.text, w.target_index) for w in vocab.words], templates,
                                        [source.items[i].image_id for i in indices],
                                        *([] if classes.is_imagenet else [{"classes": list(classes.names)}]),
                                        *([{"fonts": get_fingerprint_fonts(fonts)}] if fonts else []))
        models = []
        n_jobs_per_image = 1 + count_image_conditions(conditions)
        chunk_size = resolve_chunk_size(cfg.chunk_size, n_jobs_per_image * len(cfg.defences))
        for spec in cfg.models:
            geometry = get_backend(spec.backend).get_geometry(spec)
            canvases = decode_canvases(cfg, source, indices, geometry, progress)
            models.append({"input_size": list(geometry.size), "transform": geometry.key, "canvas_cache": canvases.path,
                           **({"masks": build_mask_info(conditions, mask_infos[geometry.size])}
                              if geometry.size in mask_infos else {})})
        # Cells are cut over every selected image (rows of the canvas cache), fixed by the fingerprint's
        # image list: an image that does not decode is skipped in its own cell (and listed in its chunk),
        # so no other image moves to another cell when one stops decoding between two runs.
        image_list = tuple(indices)
        cells = cut_cells(self.name, cfg, np.arange(len(indices)), chunk_size.items, jobs_per_item=n_jobs_per_image,
                          shared=lambda m_index: image_list)
        info = {"classes": classes.to_info(),
                "vocab": {"name": vocab.name, "path": vocab.path,
                          **({"pseudo_word": vocab.pseudo_word} if vocab.pseudo_word else {}),
                          "words": [{"text": w.text, "target_index": w.target_index,
                                     "target_name": classes.names[w.target_index], "language": w.language}
                                    for w in vocab.words],
                          **({"notes": list(vocab.notes)} if vocab.notes else {})},
                "templates": {"name": cfg.templates, "count": len(templates[0])},
                **({"fonts": fonts} if fonts else {}),
                **({"class_language": language.describe(templates[0])} if language else {}),
                "chunk_size": chunk_size.to_info("images")}
        notes = ([f"Prefix defences are compared with {PREFIX_BASELINE}, their own single prompt without the "
                  "learned token, which the run evaluates too."]
                 if PREFIX_BASELINE in cfg.defences and len(cfg.defences) > 1 else [])
        notes += [*vocab.notes, *([language.describe_line(templates[0])] if language else [])]
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, models, {}, notes,
                    seconds={"masks": round(seconds_masks, 3)}, versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> SyntheticContext:
        """Load the cell's model, the masks of every condition (packed, bound to its device as they
        are drawn), its canvases (from the node's canvas cache, decoded there on first use), and its
        zero-shot classifier with the classifiers and head sets of the run's defences.

        Raises:
            ConfigError: A defence does not fit the model (heads of a ResNet, a prefix of another width).
        """
        from typoattack.attack.compose import DeviceMasks
        from typoattack.tasks.shared import (
            create_encoder, get_templates, load_model, read_sweep_words, solve_condition_masks,
        )

        cfg: SyntheticConfig = cell.config
        model, load_seconds = load_model(cfg, cell.model_index, progress)
        words = read_sweep_words(cfg, check=False)
        classes, conditions = words.classes, words.conditions
        masks = solve_condition_masks(cfg, conditions, model.canvas_size)  # cached by the plan: no second bar
        device_masks = DeviceMasks(masks, model.device)
        t0 = time.perf_counter()
        g = model.geometry
        canvases = prepare_canvases(words.source, list(cell.shared),
                                    g.transform, g.key, g.size, cfg.cache_dir,
                                    workers=cfg.workers)  # filled by the plan (on this node)
        canvas_seconds = time.perf_counter() - t0
        names, templates = get_classifier_texts(cfg.class_language, classes,  # --class-language
                                                get_templates(cfg.templates, model.spec, classes), cfg.templates)
        encoder, info = create_encoder(model, cfg, names, templates, progress, "classes")
        info.update(masks=build_mask_info(conditions, masks.infos),
                    seconds={"load_model": round(load_seconds, 3), "canvases": round(canvas_seconds, 3),
                             **info["seconds"]})
        return SyntheticContext(model, canvases, conditions, device_masks, encoder, info)

    def evaluate_cell(self, context: SyntheticContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        import torch

        from typoattack.tasks.sweep import evaluate_shard

        cfg: SyntheticConfig = cell.config
        t0 = time.perf_counter()
        canvases = context.canvases
        items = np.asarray(cell.items, dtype=np.int64)
        valid = canvases.valid[items]
        skipped = canvases.list_skipped(items)
        if skipped:
            advance(len(skipped) * (1 + count_image_conditions(context.conditions)))
        if not valid.any():
            frame = pd.DataFrame({c: pd.Series(dtype=t) for c, t in get_record_dtypes().items()})
        else:
            with torch.inference_mode():
                frame = evaluate_shard(context.model, context.encoder, canvases, items[valid], context.conditions,
                                       context.device_masks, cfg.seed, context.info["batch_size"], advance)
        model_info = {**context.info, "encoder_batch_size_final": context.encoder.max_batch}
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, frame, skipped, model_info, time.perf_counter() - t0,
                          len(frame) // len(cfg.defences))

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        classes = ClassSet.from_info(info.extra.get("classes"))
        tables = write_tables(records, out, classes.names, None if classes.is_imagenet else classes.describe())
        write_per_target_language(tables.per_word, [info.extra], out)  # only when the words mix languages
        info.extra["clean"] = summarize_clean(records)
        info.extra["confusion"] = tables.confusion
        return tables.per_word

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        if full:
            from typoattack.analysis.report import build_rich_tables

            return list(build_rich_tables(summary))
        from typoattack.analysis.report import PER_WORD_CSV
        from typoattack.analysis.summary import build_summary

        if info is None:  # a report over runs: the report folder holds the per-word table of them all
            where = f"{PER_WORD_CSV} in the report folder"
        else:
            where = f"{info.config['out']}/per_word.md" if info.config.get("out") else "per_word.md"
        return [*build_summary(summary), f"Every word: {where} (or --table full)"]

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        from typoattack.tasks.synthetic.report import write_synthetic_report

        return write_synthetic_report(list(run_dirs), list(infos), out, stem, list(notes), progress)


TASK = SyntheticTask()

