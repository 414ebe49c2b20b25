"""The questions of a vlm cell: each image drawn (a synthetic attack on a cached canvas, or a decoded photo)
when its batch comes, asked under every prompt and option order, answered by option likelihood or by a greedy
answer read with SCAM's parser; one record per image x condition x prompt x order."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from typoattack.attack.render import AttackMask, apply_attack
from typoattack.backends.base import ChatModel
from typoattack.constants import CLEAN_PLACEMENT, CLEAN_WORD
from typoattack.data.canvases import CanvasSet
from typoattack.data.real_datasets import RealSource
from typoattack.errors import DataError
from typoattack.records import CONDITION_DTYPES, Condition, select_condition_images
from typoattack.tasks.vlm.answers import Scoring, choose_options, parse_answer, reduce_forms
from typoattack.tasks.vlm.prompts import AnswerStyle, OptionOrder, PromptTemplate, build_answer_texts, build_question
from typoattack.tasks.vlm.tables import VLM_RECORD_COLUMNS

CLEAN = -1
"""The condition index of a clean control job."""
_DTYPES: dict[str, Any] = {
    **CONDITION_DTYPES, "true_index": np.int64, "pixel_cover": np.float64, "safe_prompt": bool,
    "logp_object": np.float64, "logp_attack": np.float64, "postit_area_pct": np.float64,
}


@dataclass(frozen=True)
class ImageJob:
    """One image shown under one condition.

    Attributes:
        image_id: The image.
        object_label: Option text of what the image shows.
        attack_label: Option text of what the attack names.
        columns: The condition columns of its records (without `pixel_cover`, which drawing measures).
        source_index: Canvas-cache row (synthetic) or item index of the dataset (real).
        condition: Index into the run's conditions, or CLEAN (synthetic only).
    """

    image_id: str
    object_label: str
    attack_label: str
    columns: dict[str, Any]
    source_index: int
    condition: int = CLEAN


@dataclass(frozen=True)
class Questioning:
    """How every image is asked (from the run's config).

    Attributes:
        prompts: The question templates.
        orders: The single option orders asked.
        scoring: Likelihood or generate.
        answer: The answer texts of likelihood scoring.
        max_new_tokens: Bound on generated answers.
    """

    prompts: tuple[PromptTemplate, ...]
    orders: tuple[OptionOrder, ...]
    scoring: Scoring
    answer: AnswerStyle
    max_new_tokens: int


Drawn = tuple[np.ndarray, float] | str
"""A drawn image (uint8 [H, W, 3], share of pixels the attack changed) or why it could not be read."""


def list_synthetic_jobs(canvases: CanvasSet, rows: Iterable[int], conditions: Sequence[Condition],
                        class_names: Sequence[str], seed: int = 0) -> list[ImageJob]:
    """The jobs of canvas-cache rows, image by image: the clean control once per distinct target of the
    conditions the image is shown under (its options: the image's class and that target), then those
    conditions (every one, but a pseudo-word's: the one `select_condition_images` draws for the image with
    `seed`). A target that is the image's own class is not asked (its two options would be the same).
    """
    rows = [int(r) for r in rows]
    items = [canvases.items[r] for r in rows]
    shown = select_condition_images(conditions, [it.image_id for it in items], [it.true_index for it in items], seed)
    jobs = []
    for j, (row, item) in enumerate(zip(rows, items)):
        mine = np.flatnonzero(shown[:, j]).tolist()
        targets = list(dict.fromkeys(conditions[k].target_index for k in mine))
        obj = class_names[item.true_index]
        for target in targets:
            if target != item.true_index:
                columns = {"true_index": item.true_index, "word": CLEAN_WORD, "target_index": target, "fraction": 0.0,
                           "placement": CLEAN_PLACEMENT, "font": "", "fill": "", "outline": "", "outline_width": -1,
                           "opacity": math.nan}
                jobs.append(ImageJob(item.image_id, obj, class_names[target], columns, int(row)))
        for k in mine:
            condition = conditions[k]
            if condition.target_index != item.true_index:
                columns = {"true_index": item.true_index, **condition.to_columns()}
                jobs.append(ImageJob(item.image_id, obj, class_names[condition.target_index], columns, int(row), k))
    return jobs


def list_photo_jobs(source: RealSource, indices: Iterable[int], dataset: str) -> list[ImageJob]:
    """One job per photo of a real dataset (options: its object label and its attack word)."""
    return [ImageJob(it.image_id, it.object_label, it.attack_word,
                     {"photo_id": it.photo_id, "dataset": dataset, "variant": it.variant,
                      "postit_area_pct": it.postit_area_pct}, int(i))
            for i, it in ((i, source.items[int(i)]) for i in indices)]


def draw_synthetic(canvases: CanvasSet, masks: Sequence[AttackMask], seed: int, job: ImageJob) -> Drawn:
    """The canvas of a synthetic job: the cached clean canvas, or the condition's mask drawn on it (the CPU
    reference renderer, bit-identical to eval's batch compositing) with its measured pixel cover."""
    canvas = np.array(canvases.canvases[job.source_index])
    if job.condition == CLEAN:
        return canvas, 0.0
    return apply_attack(canvas, masks[job.condition], job.image_id, seed)


def draw_photo(source: RealSource, transform: Callable[[Any], Any], job: ImageJob) -> Drawn:
    """A photo decoded and brought to the canvas by `transform`, or the reason it could not be read."""
    try:
        return np.asarray(transform(source.open_image(job.source_index)), dtype=np.uint8), 0.0
    except (DataError, OSError, ValueError, SyntaxError) as e:  # what PIL raises on broken files, or the loader
        text = str(e).splitlines()[0] if str(e) else ""
        return text if isinstance(e, DataError) else f"{type(e).__name__}: {text}"


@dataclass(frozen=True)
class Question:
    """One question waiting for its batch: the image, the question text, its option order, its record so far."""

    image: np.ndarray
    text: str
    order: OptionOrder
    row: dict[str, Any]


class BatchSize:
    """Questions per forward pass; halved for the rest of the cell after a CUDA out-of-memory error."""

    def __init__(self, size: int) -> None:
        self.size = size


def ask_jobs(model: ChatModel, jobs: Sequence[ImageJob], draw: Callable[[ImageJob], Drawn],
             questioning: Questioning, batch: BatchSize, base: dict[str, Any], extra_columns: Sequence[str],
             advance: Callable[[int], None]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Ask every job under every prompt and order, drawing images as their batch fills.

    Args:
        model: The loaded model.
        jobs: The images, in record order.
        draw: Draws a job's image.
        questioning: Prompts, orders and scoring.
        batch: Questions per forward pass (halved on CUDA out-of-memory).
        base: Columns every record shares (model, weights_id, scoring).
        extra_columns: The condition columns after VLM_RECORD_COLUMNS (SYNTHETIC_COLUMNS or REAL_COLUMNS).
        advance: Called with the number of questions done.

    Returns:
        (records: VLM_RECORD_COLUMNS + extra_columns, job by job, then prompt by prompt, then order by order;
        image_id -> reason for the images that could not be read).
    """
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    pending: list[Question] = []
    per_job = len(questioning.prompts) * len(questioning.orders)

    def flush() -> None:
        answers = _answer(model, pending, questioning, batch)
        rows.extend({**q.row, **answer} for q, answer in zip(pending, answers))
        advance(len(pending))
        pending.clear()

    for job in jobs:
        drawn = draw(job)
        if isinstance(drawn, str):
            skipped[job.image_id] = drawn
            advance(per_job)
            continue
        image, cover = drawn
        columns = {**job.columns, **({"pixel_cover": cover} if "pixel_cover" in extra_columns else {})}
        for prompt in questioning.prompts:
            for order in questioning.orders:
                row = {"image_id": job.image_id, **base, "prompt_id": prompt.prompt_id, "safe_prompt": prompt.safe,
                       "order": order.value, "object_label": job.object_label, "attack_label": job.attack_label,
                       **columns}
                pending.append(Question(image, build_question(prompt, job.object_label, job.attack_label, order),
                                        order, row))
                if len(pending) >= batch.size:
                    flush()
    if pending:
        flush()
    columns = [*VLM_RECORD_COLUMNS, *extra_columns]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.astype({c: t for c, t in _DTYPES.items() if c in columns}), skipped


def _answer(model: ChatModel, pending: list[Question], questioning: Questioning,
            batch: BatchSize) -> list[dict[str, Any]]:
    """choice, logp_object, logp_attack and answer of each pending question; on CUDA out-of-memory the
    questions are answered in halves and the batch size stays halved."""
    try:
        return _answer_batch(model, pending, questioning)
    except torch.cuda.OutOfMemoryError:
        if len(pending) == 1:
            raise
        torch.cuda.empty_cache()
        batch.size = max(1, len(pending) // 2)
        half = len(pending) // 2
        return _answer(model, pending[:half], questioning, batch) + _answer(model, pending[half:], questioning, batch)


def _answer_batch(model: ChatModel, pending: list[Question],
                  questioning: Questioning) -> list[dict[str, Any]]:
    images = [q.image for q in pending]
    questions = [q.text for q in pending]
    orders = [q.order for q in pending]
    labels = [(q.row["object_label"], q.row["attack_label"]) for q in pending]
    if questioning.scoring is Scoring.GENERATE:
        texts = model.generate_answers(images, questions, questioning.max_new_tokens, batch_size=len(images))
        return [{"choice": parse_answer(text, obj, att, order).value, "logp_object": math.nan,
                 "logp_attack": math.nan, "answer": text} for text, (obj, att), order in zip(texts, labels, orders)]
    options = [build_answer_texts(questioning.answer, obj, att, order) for (obj, att), order in zip(labels, orders)]
    n_forms = len(options[0][0])
    scores = model.score_options(images, questions, [[*o, *a] for o, a in options], batch_size=len(images))
    logp = reduce_forms(scores, n_forms)
    choices = choose_options(logp[:, 0], logp[:, 1])
    return [{"choice": c.value, "logp_object": float(o), "logp_attack": float(a), "answer": ""}
            for c, o, a in zip(choices, logp[:, 0], logp[:, 1])]

