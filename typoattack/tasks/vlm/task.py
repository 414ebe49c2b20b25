"""`typoattack vlm` as a task: vision-language chat models asked SCAM's question "What entity is depicted
in the image? (a) X (b) Y" about synthetic attacks on labelled images or about a real typographic-attack
dataset, in both option orders, every prompt, scored by option likelihood or greedy answers.

Plan: validate cheaply (prompts, data, vocabulary, glyphs, device, each model's files and input size without
its weights), solve the text masks at each canvas size (cached), decode the images once into the canvas cache
(synthetic input), and cut each model's images into cells of `chunk_size` (unset: `resolve_chunk_size`, at most
about 1 M records a cell). A cell: every image of its chunk (clean and under every condition, or the photos) under
every prompt and order.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from typoattack.analysis.query import RecordSet
from typoattack.attack.solver import UnreachableFractionError
from typoattack.backends.base import ChatModel, InputGeometry, check_precision, resolve_device
from typoattack.backends.registry import get_chat_backend
from typoattack.config.common import resolve_chunk_size
from typoattack.config.types import Vocabulary
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.babel import get_class_language
from typoattack.data.fonts import get_fingerprint_fonts
from typoattack.data.real_datasets import RealSource, open_real_dataset, select_photos
from typoattack.data.sources import select_subset
from typoattack.engine.cells import Cell, CellResult, cut_cells
from typoattack.engine.rundir import SKIPPED_CSV, RunInfo
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.errors import ConfigError, DataError
from typoattack.progress import ProgressReporter
from typoattack.records import Condition, select_condition_images
from typoattack.tasks.shared import (
    build_fingerprint, decode_canvases, describe_run_device, get_backend_versions, read_sweep_words,
    solve_condition_masks,
)
from typoattack.tasks.vlm.config import VLM_BACKEND, VlmConfig, load_vlm_config
from typoattack.tasks.vlm.prompts import (
    AnswerStyle, OptionOrder, PromptTemplate, build_answer_texts, list_orders, resolve_prompts,
)
from typoattack.tasks.vlm.tables import PER_WORD_CSV, SUMMARY_CSV, write_vlm_tables

if TYPE_CHECKING:
    from typoattack.tasks.vlm.evaluate import BatchSize, Drawn, ImageJob

DEFAULT_BATCH_SIZE = 8
"""Questions per forward pass when --batch-size is auto (a 7B model with hundreds of image tokens per question
fits this on one GPU; CUDA out-of-memory halves it)."""


@dataclass(frozen=True)
class VlmInputs:
    """What every cell of one model needs beyond the config (picklable).

    Attributes:
        prompts: The resolved prompts (their texts fixed when the run was planned).
        canvas_size: (height, width) of the model's canvases.
        indices: Synthetic input: the selected images of the source (rows of the canvas cache); empty for a
            real dataset.
    """

    prompts: tuple[PromptTemplate, ...]
    canvas_size: tuple[int, int]
    indices: tuple[int, ...] = ()


@dataclass
class VlmContext:
    """A loaded model with what drawing its jobs needs.

    Attributes:
        model: The loaded chat model (`backends.base.ChatModel`).
        draw: Draws one job's image (`evaluate.draw_synthetic` or `evaluate.draw_photo`, bound).
        canvases: The canvas cache (synthetic input), else None.
        conditions: The attack conditions (synthetic input), else empty.
        source: The dataset (real input), else None.
        batch: Questions per forward pass (`evaluate.BatchSize`).
        info: The model's run.json entries.
        class_names: The class set's names (synthetic input: the options), else empty.
    """

    model: ChatModel
    draw: Callable[[ImageJob], Drawn]
    canvases: CanvasSet | None
    conditions: list[Condition]
    source: RealSource | None
    batch: BatchSize
    info: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()


def get_canvas_geometry(size: tuple[int, int], backend: str = VLM_BACKEND) -> InputGeometry:
    """The canvas transform of a square canvas, as the chat backend draws its models' canvases
    (`ChatBackend.get_canvas_geometry`).

    Raises:
        ConfigError: The size is not square.
    """
    if size[0] != size[1]:
        raise ConfigError(f"the model's input is {size[0]}x{size[1]}, not square; pass --image-size N for a square "
                          "canvas")
    return get_chat_backend(backend).get_canvas_geometry(size[0])


def check_vlm_models(cfg: VlmConfig) -> list[dict[str, Any]]:
    """Device, precision, and each model's files (config, processor, tokenizer, chat template; the weights are
    not loaded) with the canvas it gets.

    Returns:
        Per model, its run.json entries known before loading: family, weights_id, native_image_size,
        canvas_size (height, width) and canvas (how the size was chosen).

    Raises:
        ConfigError: An unknown device, a precision the device cannot run, a model this backend cannot run
            or that needs --trust-remote-code, or a model without a size to go by and no --image-size; the
            backend's library is not installed.
        WeightsError: A model's files are missing or unreadable.
    """
    check_precision(cfg.precision, resolve_device(cfg.device))
    entries = []
    for spec in cfg.models:
        facts = get_chat_backend(spec.backend).check_model(spec.name, cfg.trust_remote_code)
        if cfg.image_size is not None:
            size, how = (cfg.image_size, cfg.image_size), "--image-size"
        elif facts.canvas_size is not None:
            size = facts.canvas_size
            how = "native" if facts.native_image_size else "tile (the processor keeps the aspect ratio)"
        else:
            raise ConfigError(f"model {spec.name}: its processor names no input size; pass --image-size N")
        entries.append({"family": facts.family, "weights_id": facts.weights_id,
                        "native_image_size": list(facts.native_image_size) if facts.native_image_size else None,
                        "canvas_size": list(size), "canvas": how})
    return entries


def check_answer_labels(answer: AnswerStyle, pairs: Sequence[tuple[str, str]]) -> None:
    """Raise ConfigError when an answer style cannot tell a pair of option labels apart (`label` answers
    whose one label is a prefix of the other), before any model loads."""
    if answer is AnswerStyle.LABEL:
        for obj, att in dict.fromkeys(pairs):
            if obj != att:
                build_answer_texts(answer, obj, att, OptionOrder.OBJECT_FIRST)


class VlmTask(TaskBase, name="vlm", title="vision-language models asked which entity an image shows",
              report_stem="vlm_report", output_files=(SUMMARY_CSV, PER_WORD_CSV), job_unit="questions",
              config_loader=load_vlm_config):
    """Vision-language chat models under typographic attacks (`typoattack vlm`)."""

    def plan(self, cfg: VlmConfig, progress: ProgressReporter) -> Plan:
        prompts = resolve_prompts(cfg.question_prompts)
        if cfg.dataset is None:
            return self._plan_synthetic(cfg, prompts, progress)
        return self._plan_real(cfg, prompts)

    def _plan_synthetic(self, cfg: VlmConfig, prompts: tuple[PromptTemplate, ...], progress: ProgressReporter) -> Plan:
        words = read_sweep_words(cfg)
        classes, source, vocab, conditions, fonts = (words.classes, words.source, words.vocab, words.conditions,
                                                     words.fonts)
        models = check_vlm_models(cfg)
        indices = select_subset(source.items, cfg.limit, cfg.seed)
        # The options: the image's class and the word's target, as the class set names them (in --class-language).
        language = get_class_language(cfg.class_language, classes)
        names = language.names if language is not None else classes.names
        trues = np.array([source.items[i].true_index for i in indices], dtype=np.int64)
        check_answer_labels(cfg.answer, [(names[t], names[c.target_index]) for t in set(trues.tolist())
                                         for c in conditions if c.target_index != t])
        sizes = [tuple(m["canvas_size"]) for m in models]
        t0 = time.perf_counter()
        # Only the masks' infos stay: the pixels are in the cache, for the cells.
        try:
            mask_infos = {size: solve_condition_masks(cfg, conditions, size, progress).infos
                          for size in dict.fromkeys(sizes)}
        except UnreachableFractionError as e:
            raise e.with_fix("a larger canvas (--image-size)") from None
        seconds_masks = time.perf_counter() - t0
        canvas_sets = {}
        for size in dict.fromkeys(sizes):
            canvas_sets[size] = decode_canvases(cfg, source, indices, get_canvas_geometry(size), progress)
        ids = [source.items[i].image_id for i in indices]
        per_image = _count_questions(trues, conditions, ids, cfg.seed) * len(prompts) * len(list_orders(cfg.order))
        chunk_size = resolve_chunk_size(cfg.chunk_size, int(per_image.max(initial=1)))
        for m_index, size in enumerate(sizes):
            canvases = canvas_sets[size]
            models[m_index].update(canvas_cache=canvases.path,
                                   masks=[{"word": c.word, "fraction": c.fraction, "placement": c.placement.value,
                                           "font_size": mask.font_size, "mask_coverage": round(mask.coverage, 6)}
                                          for c, mask in zip(conditions, mask_infos[size])])
        # Cells are cut over every selected image (rows of the canvas cache, as eval's): an image that does
        # not decode is skipped in its own cell, and no other image changes cell when one stops decoding.
        image_list = tuple(indices)
        cells = cut_cells(self.name, cfg, tuple(range(len(indices))), chunk_size.items, jobs_per_item=per_image,
                          shared=lambda m_index: VlmInputs(prompts, sizes[m_index], image_list))
        fingerprint = build_fingerprint(cfg, _describe_models(models), _describe_prompts(prompts),
                                        [(w.text, w.target_index) for w in vocab.words],
                                        [source.items[i].image_id for i in indices],
                                        *([] if classes.is_imagenet else [{"classes": list(classes.names)}]),
                                        *([{"fonts": get_fingerprint_fonts(fonts)}] if fonts else []))
        info = {"classes": classes.to_info(), "vocab": _describe_vocab(vocab, names),
                **({"fonts": fonts} if fonts else {}),
                **({"class_language": {"language": language.language, "names_in_language":
                                       len(names) - language.n_english, "names_in_english": language.n_english}}
                   if language is not None else {}),
                "prompts": _describe_prompts(prompts),
                "orders": [o.value for o in list_orders(cfg.order)], "chunk_size": chunk_size.to_info("images")}
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, models, {}, list(vocab.notes),
                    seconds={"masks": round(seconds_masks, 3)}, versions=get_backend_versions(cfg))

    def _plan_real(self, cfg: VlmConfig, prompts: tuple[PromptTemplate, ...]) -> Plan:
        source = open_real_dataset(cfg.dataset, cfg.data.source, cfg.data.hf_split)
        indices = select_photos(source.items, cfg.limit, cfg.seed)
        check_answer_labels(cfg.answer, [(source.items[i].object_label, source.items[i].attack_word) for i in indices])
        models = check_vlm_models(cfg)
        per_photo = len(prompts) * len(list_orders(cfg.order))
        chunk_size = resolve_chunk_size(cfg.chunk_size, per_photo)
        cells = cut_cells(self.name, cfg, tuple(indices), chunk_size.items, jobs_per_item=per_photo,
                          shared=lambda m_index: VlmInputs(prompts, tuple(models[m_index]["canvas_size"])))
        items = [[it.image_id, it.object_label, it.attack_word, it.variant, it.photo_id]
                 for it in (source.items[i] for i in indices)]
        fingerprint = build_fingerprint(cfg, _describe_models(models), _describe_prompts(prompts), items)
        info = {"dataset": {"name": cfg.dataset.value, "source": source.description, "n_items": len(source.items),
                            "notes": source.notes},
                "prompts": _describe_prompts(prompts), "orders": [o.value for o in list_orders(cfg.order)],
                "chunk_size": chunk_size.to_info("photos")}
        return Plan(fingerprint, cells, describe_run_device(cfg), len(indices), info, models, notes=list(source.notes),
                    versions=get_backend_versions(cfg))

    def create_context(self, cell: Cell, progress: ProgressReporter) -> VlmContext:
        """Load the cell's model on its device, and the canvases and masks (synthetic input: from the caches
        the plan filled, or filled here on another node) or the dataset (real input)."""
        from typoattack.tasks.vlm.evaluate import BatchSize, draw_photo, draw_synthetic

        cfg: VlmConfig = cell.config
        inputs: VlmInputs = cell.shared
        spec = cfg.models[cell.model_index]
        device = resolve_device(cfg.device)
        progress.log(f"Loading {spec.label} on {device}")
        t0 = time.perf_counter()
        model = get_chat_backend(spec.backend).load(spec.name, device, cfg.precision, cfg.trust_remote_code)
        load_seconds = time.perf_counter() - t0
        geometry = get_canvas_geometry(inputs.canvas_size, spec.backend)
        batch = BatchSize(cfg.batch_size or DEFAULT_BATCH_SIZE)
        info = {"weights_id": model.weights_id, "family": model.family, "canvas_size": list(inputs.canvas_size),
                "batch_size": batch.size, "seconds": {"load_model": round(load_seconds, 3)}}
        if cfg.dataset is not None:
            source = open_real_dataset(cfg.dataset, cfg.data.source, cfg.data.hf_split)
            return VlmContext(model, functools.partial(draw_photo, source, geometry.transform), None, [], source,
                              batch, info)
        words = read_sweep_words(cfg, check=False)
        classes, conditions = words.classes, words.conditions
        masks = solve_condition_masks(cfg, conditions, inputs.canvas_size)
        language = get_class_language(cfg.class_language, classes)  # --class-language: the options' names
        canvases = prepare_canvases(words.source, list(inputs.indices), geometry.transform, geometry.key,
                                    inputs.canvas_size, cfg.cache_dir, workers=cfg.workers)
        return VlmContext(model, functools.partial(draw_synthetic, canvases, masks, cfg.seed), canvases, conditions,
                          None, batch, info, language.names if language is not None else classes.names)

    def evaluate_cell(self, context: VlmContext, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        import torch

        from typoattack.tasks.vlm.evaluate import Questioning, ask_jobs, list_photo_jobs, list_synthetic_jobs
        from typoattack.tasks.vlm.tables import REAL_COLUMNS, SYNTHETIC_COLUMNS

        cfg: VlmConfig = cell.config
        inputs: VlmInputs = cell.shared
        undecoded: dict[str, str] = {}
        if context.canvases is not None:
            canvases = context.canvases
            rows = [r for r in cell.items if canvases.valid[r]]
            undecoded = canvases.list_skipped(cell.items)
            jobs = list_synthetic_jobs(canvases, tuple(rows), context.conditions, context.class_names, cfg.seed)
            columns = SYNTHETIC_COLUMNS
        else:
            jobs = list_photo_jobs(context.source, cell.items, cfg.dataset.value)
            columns = REAL_COLUMNS
        questioning = Questioning(inputs.prompts, list_orders(cfg.order), cfg.scoring, cfg.answer, cfg.max_new_tokens)
        base = {"model": cfg.models[cell.model_index].name, "weights_id": context.model.weights_id,
                "scoring": cfg.scoring.value}
        t0 = time.perf_counter()
        with torch.inference_mode():
            frame, skipped = ask_jobs(context.model, jobs, context.draw, questioning, context.batch, base, columns,
                                      advance)
        model_info = {**context.info, "batch_size_final": context.batch.size}
        context.info = {k: v for k, v in context.info.items() if k != "seconds"}  # loading is counted once
        return CellResult(cell.cell_id, cell.model_index, frame, {**undecoded, **skipped}, model_info,
                          time.perf_counter() - t0, len(frame))

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        if records.count() == 0:
            raise DataError(f"none of the {info.n_items} images could be read (see {SKIPPED_CSV})")
        return write_vlm_tables(records, out)

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        from typoattack.tasks.vlm.report import build_summary_rich_tables

        where = f"{info.config['out']}/{SUMMARY_CSV}" if info and info.config.get("out") else SUMMARY_CSV
        return [*build_summary_rich_tables(summary, full), *([] if full else [f"With 95% intervals: {where}"])]

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        from typoattack.tasks.vlm.report import write_vlm_report_page

        return write_vlm_report_page(run_dirs, infos, out, stem, notes, progress)


def _count_questions(trues: np.ndarray, conditions: Sequence[Condition], image_ids: Sequence[str],
                     seed: int) -> np.ndarray:
    """int64 [n]: images (clean controls and attacked) each selected image is shown as (a target that is the
    image's own class is not asked; a pseudo-word's conditions only where `select_condition_images` shows them)."""
    shown = select_condition_images(conditions, image_ids, trues, seed)  # [n_conditions, n]
    per_condition = np.array([c.target_index for c in conditions], dtype=np.int64)
    attacked = ((trues[None, :] != per_condition[:, None]) & shown).sum(axis=0)
    targets = list(dict.fromkeys(per_condition.tolist()))
    clean = sum(((trues != t) & shown[per_condition == t].any(axis=0)).astype(np.int64) for t in targets)
    return np.asarray(attacked + clean, dtype=np.int64)


def _describe_models(models: Sequence[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(m["weights_id"], m["canvas_size"]) for m in models]


def _describe_prompts(prompts: Sequence[PromptTemplate]) -> list[dict[str, Any]]:
    return [{"id": p.prompt_id, "text": p.text, "safe": p.safe} for p in prompts]


def _describe_vocab(vocab: Vocabulary, names: Sequence[str]) -> dict[str, Any]:
    return {"name": vocab.name, "path": vocab.path,
            "words": [{"text": w.text, "target_index": w.target_index, "target_name": names[w.target_index]}
                      for w in vocab.words]}


TASK = VlmTask()
