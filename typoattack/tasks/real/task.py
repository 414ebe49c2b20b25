"""`typoattack real` as a task: photographs with real typographic attacks (SCAM, RTA-100, PAINT,
Disentangling, any labelled folder) classified zero-shot against their object labels and attack
words, under the union or the binary protocol.

Plan: validate cheaply (data format, templates, device, weights), select the photos, cut them into
cells. A cell: the model's classifier over the dataset's vocabulary (cached on disk) with the
defences, its photos decoded with the model's own geometry and encoded in batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.analysis.query import RecordSet
from typoattack.backends.base import ZeroShotModel
from typoattack.config.common import resolve_chunk_size
from typoattack.config.parsing import load_templates
from typoattack.data.real_datasets import RealSource, open_real_dataset, select_photos
from typoattack.defences.apply import BatchEncoder
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import RunInfo
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.errors import DataError
from typoattack.progress import ProgressReporter
from typoattack.config.types import LabelSet, ModelSpec
from typoattack.tasks.real.config import (
    DEFAULT_TEMPLATES, RealConfig, get_default_templates, get_prefix_prompt, load_real_config,
)
from typoattack.tasks.real.tables import CLEAN_VARIANT, PER_ATTACK_WORD_CSV, SUMMARY_CSV, write_real_tables
from typoattack.tasks.shared import (
    build_fingerprint, check_models, create_encoder, describe_run_device, get_backend_versions, get_templates,
    load_model,
)


def resolve_templates(cfg: RealConfig, spec: ModelSpec) -> tuple[str, ...]:
    """The prompt templates of a model in a run: the dataset's own (`dataset`), or a set, a file
    or the family's (`get_templates`)."""
    if cfg.templates == DEFAULT_TEMPLATES:
        default = get_default_templates(cfg.dataset, cfg.protocol)
        return load_templates(default) if isinstance(default, str) else default
    return get_templates(cfg.templates, spec)


def open_dataset(cfg: RealConfig) -> RealSource:
    """The run's dataset."""
    return open_real_dataset(cfg.dataset, cfg.data.source, cfg.data.hf_split)


def get_vocabulary(cfg: RealConfig, source: RealSource) -> list[str]:
    """The classes of the run's classifier, sorted: the dataset's labels and words, with its own
    class list (Disentangling's classes.json) unless `--label-set annotations`."""
    return source.list_vocabulary(with_classes=cfg.label_set is LabelSet.DATASET)


def get_unpaired_warning(source: RealSource, indices: list[int]) -> str | None:
    """A warning when the selection holds NoSCAM and attacked photos but no photo in both (the
    ids then follow a scheme typoattack does not pair, and the summary has no paired drop)."""
    by_variant: dict[str, set[str]] = {}
    for i in indices:
        by_variant.setdefault(source.items[i].variant, set()).add(source.items[i].photo_id)
    clean = by_variant.pop(CLEAN_VARIANT, set())
    attacked = set().union(*by_variant.values()) if by_variant else set()
    if clean and attacked and not clean & attacked:
        return (f"no {CLEAN_VARIANT} photo shares its `id` with a photo of another variant, so the summary has no "
                "paired drop; check the dataset's `id` column")
    return None


@dataclass
class RealContext:
    """A loaded model with the dataset, its vocabulary, and the classifier and defences over it."""

    source: RealSource
    vocabulary: list[str]
    model: ZeroShotModel
    encoder: BatchEncoder
    info: dict[str, Any] = field(default_factory=dict)


class RealTask(TaskBase, name="real", title="real typographic-attack photos", report_stem="real",
               output_files=(SUMMARY_CSV, PER_ATTACK_WORD_CSV), job_unit="photos", config_loader=load_real_config):
    """Real typographic-attack photos (`typoattack real`)."""

    def plan(self, cfg: RealConfig, progress: ProgressReporter) -> Plan:
        source = open_dataset(cfg)
        templates = [resolve_templates(cfg, spec) for spec in cfg.models]
        check_models(cfg)
        vocabulary = get_vocabulary(cfg, source)
        indices = select_photos(source.items, cfg.limit, cfg.seed)
        fingerprint = build_fingerprint(cfg, [templates, vocabulary], [
            [it.image_id, it.object_label, it.attack_word, it.variant, it.photo_id]
            for it in (source.items[i] for i in indices)])
        cells = cut_cells(self.name, cfg, tuple(indices), resolve_chunk_size(cfg.chunk_size, len(cfg.defences)).items)
        info = {"dataset": {"name": cfg.dataset.value, "source": source.description, "n_items": len(source.items),
                            "vocabulary_size": len(vocabulary), "label_set": cfg.label_set.value,
                            "n_classes_file": len(source.classes), "notes": source.notes},
                "templates": {"name": cfg.templates, "count": len(templates[0]), "first": templates[0][0],
                              "prefix_prompt": get_prefix_prompt(cfg.dataset)}}
        unpaired = get_unpaired_warning(source, indices)
        notes = [*source.notes, *([unpaired] if unpaired else [])]
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, notes=notes,
                    versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> RealContext:
        """Open the dataset, load the cell's model, and build the zero-shot classifier over the
        dataset's vocabulary with the classifiers and head sets of the defences.

        Raises:
            ConfigError: A defence does not fit the model.
        """
        cfg: RealConfig = cell.config
        source = open_dataset(cfg)
        vocabulary = get_vocabulary(cfg, source)
        model, load_seconds = load_model(cfg, cell.model_index, progress)
        encoder, info = create_encoder(model, cfg, vocabulary, resolve_templates(cfg, model.spec), progress,
                                       "labels", get_prefix_prompt(cfg.dataset))
        info["seconds"] = {"load_model": round(load_seconds, 3), **info["seconds"]}
        return RealContext(source, vocabulary, model, encoder, info)

    def evaluate_cell(self, context: RealContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        import torch

        from typoattack.tasks.real.evaluate import evaluate_photos

        cfg: RealConfig = cell.config
        t0 = time.perf_counter()
        with torch.inference_mode(), ThreadPoolExecutor(max_workers=max(cfg.workers, 1)) as pool:
            frame, skipped = evaluate_photos(cfg, context.source, list(cell.items), context.model, context.encoder,
                                             context.vocabulary, context.info["batch_size"], pool, advance)
        model_info = {**context.info, "encoder_batch_size_final": context.encoder.max_batch}
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, frame, skipped, model_info, time.perf_counter() - t0,
                          len(frame) // len(cfg.defences))

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        if records.count() == 0:
            raise DataError(f"none of the {info.n_items} photos could be decoded (see skipped.csv)")
        return write_real_tables(records, out)

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        from typoattack.tasks.real.report import build_summary_rich_table

        title = "Real typographic attacks"
        if info is not None:
            title += f": {info.config['dataset']}, protocol {info.config['protocol']}"
        return [build_summary_rich_table(summary, title)]

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        from typoattack.tasks.real.report import write_real_report_page

        return write_real_report_page(run_dirs, infos, out, stem, notes, progress)


TASK = RealTask()
