"""What the zero-shot tasks share beneath the engine: checking models before a run, loading one in a
cell's context, building its classifier with the run's defences, the run fingerprint, the words and
text masks of a sweep's conditions, and the canvases of the selected images."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from typoattack.attack.masks import MaskRequest, MaskSet, create_attack_masks
from typoattack.attack.render import check_glyphs
from typoattack.backends.base import (
    InputGeometry, ZeroShotModel, check_precision, describe_device, get_classifier, resolve_device,
)
from typoattack.backends.registry import get_backend
from typoattack.config.classes import DATASET_TEMPLATES, ClassSetSettings
from typoattack.config.common import ImageSetSettings, RunSettings
from typoattack.config.parsing import load_templates
from typoattack.config.attack import AttackSettings
from typoattack.config.types import FAMILY_TEMPLATES, ModelSpec, Vocabulary
from typoattack.data.babel import ClassLanguage, get_class_language
from typoattack.data.canvases import CanvasSet, prepare_canvases
from typoattack.data.class_sets import ClassSet, load_class_set
from typoattack.data.fonts import resolve_fonts
from typoattack.data.sources import ImageSource, open_image_source
from typoattack.data.vocab import load_attack_vocab
from typoattack.defences.apply import BatchEncoder, build_defence_set, check_defences, resolve_batch_size
from typoattack.defences.prefix import PREFIX_PROMPT
from typoattack.engine.rundir import SKIPPED_CSV
from typoattack.errors import DataError
from typoattack.files import expand_path, get_content_digest
from typoattack.progress import ProgressReporter
from typoattack.records import Condition, list_conditions


@dataclass(frozen=True)
class SweepWords:
    """What a sweep of synthetic attacks draws, read and checked before any model loads.

    Attributes:
        classes: The run's class set (`--classes`).
        source: The labelled images (labels are indices into `classes`).
        vocab: The attack words, their targets resolved against `classes`.
        conditions: Every condition of the sweep, each with the font that draws its text.
        fonts: The fonts chosen per word (`data.fonts.resolve_fonts`; None when every word takes its own).
    """

    classes: ClassSet
    source: ImageSource
    vocab: Vocabulary
    conditions: list[Condition]
    fonts: dict[str, Any] | None


def read_sweep_words(cfg: AttackSettings, check: bool = True) -> SweepWords:
    """The class set, images, vocabulary and conditions of a sweep config (an `AttackSettings` that is
    also a `ClassSetSettings` and a `DataSettings`: eval, vlm, find-heads), cheapest first; `check`: also that each condition's font draws every glyph of its text (the plan;
    a cell's context reads what the plan checked).

    Raises:
        TypoAttackError: The class set, data, vocabulary or a font is unusable (one line).
    """
    classes = load_class_set(cfg.classes, cfg.data)
    source = open_image_source(cfg.data, len(classes.names), classes.label)
    vocab = load_attack_vocab(cfg.vocab, classes)
    # Each word's font (`--font auto`, or the default's fallback for a word it cannot draw), then its glyphs.
    conditions, fonts = resolve_fonts(list_conditions(cfg, vocab))
    if check:
        for text, font in dict.fromkeys((c.drawn_text, c.style.font) for c in conditions):
            check_glyphs(text, font)
    return SweepWords(classes, source, vocab, conditions, fonts)


def decode_canvases(cfg: RunSettings, source: ImageSource, indices: Sequence[int], geometry: InputGeometry,
                    progress: ProgressReporter, check: bool = True) -> CanvasSet:
    """The selected images' canvases at one input geometry, from the canvas cache (decoded into it, with
    a progress bar, on first use); `check`: that at least one decodes (a task with another rule checks
    its own).

    Raises:
        DataError: None of the images decodes.
    """
    canvases = prepare_canvases(source, indices, geometry.transform, geometry.key, geometry.size, cfg.cache_dir,
                                workers=cfg.workers, progress=progress.start(
                                    f"Canvases {geometry.size[0]}x{geometry.size[1]}", len(indices), "images"))
    if check and not canvases.valid.any():
        raise DataError(f"none of the {len(indices)} images could be decoded (see {SKIPPED_CSV} reasons: "
                        f"{canvases.skipped[0][1] if canvases.skipped else 'unknown'})")
    return canvases


def check_models(cfg: RunSettings) -> torch.device:
    """Device, precision, and every model's backend, name and weights, before any work.

    Returns:
        The device the models will run on.

    Raises:
        ConfigError: An unknown backend or device, or a precision the device cannot run.
        WeightsError: A model or its weights cannot be had (the message says how to supply them).
    """
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    for spec in cfg.models:
        get_backend(spec.backend).check_model(spec)
    return device


def describe_run_device(cfg: RunSettings) -> str:
    """The run's device in words, for run.json."""
    return describe_device(resolve_device(cfg.device))


def get_backend_versions(cfg: RunSettings) -> dict[str, str]:
    """Library version of each backend the run's models use (run.json `versions`)."""
    return {spec.backend: get_backend(spec.backend).get_version() for spec in cfg.models}


def get_local_weights(spec: ModelSpec) -> Path | None:
    """The checkpoint file or model folder on this machine that holds `spec`'s weights (a
    `pretrained` path, a `local-dir:` or `save_pretrained` folder), None for tags, Hub ids and seeds."""
    for value in (spec.pretrained, spec.name.removeprefix("local-dir:")):
        if value and not str(value).startswith("seed:") and expand_path(value).exists():
            return expand_path(value)
    return None


def build_fingerprint(cfg: RunSettings, *parts: Any) -> str:
    """Hash of everything that determines a run's records: the config's settings (defence files by
    their contents), the contents of local checkpoint files and model folders (a checkpoint replaced
    at the same path is another run), and `parts` (JSON-serialisable: the contents behind the
    config's other files, the selected items)."""
    h = hashlib.sha256(cfg.fingerprint().encode())
    weights = [get_local_weights(spec) for spec in cfg.models]
    if any(w is not None for w in weights):
        h.update(json.dumps([None if w is None else get_content_digest(w, cfg.cache_dir) for w in weights]).encode())
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()


def solve_condition_masks(cfg: RunSettings, conditions: Sequence[Condition], canvas_size: tuple[int, int],
                          progress: ProgressReporter | None = None) -> MaskSet:
    """The text mask of every condition at one canvas size, in order: from the mask cache under
    `cfg.cache_dir`, or solved on `cfg.workers` processes and cached. Packed (a few KB a mask), so
    a vocabulary of any size fits; a bar on `progress` when given.

    Raises:
        RenderError: A condition's mask cannot be drawn.
    """
    requests = [MaskRequest(c.drawn_text, c.fraction, c.placement, c.style, canvas_size) for c in conditions]
    advance = progress.start(f"Text masks {canvas_size[0]}x{canvas_size[1]}", len(requests), "masks") if progress else None
    return create_attack_masks(requests, cfg.cache_dir, workers=cfg.workers, advance=advance)


def get_templates(name: str, spec: ModelSpec, classes: ClassSet | None = None) -> tuple[str, ...]:
    """The zero-shot templates `name` means for model `spec`: a built-in set or file, with
    `family` the templates its family recommends (open_clip's `openai` set when it has none), with
    `dataset` the class set's own (`openai` for ImageNet, an `hf:` dataset's names or a names file)."""
    if name == FAMILY_TEMPLATES:
        return get_backend(spec.backend).get_default_templates(spec) or load_templates("openai")
    if name == DATASET_TEMPLATES:
        return (classes.templates if classes is not None else None) or load_templates("openai")
    return load_templates(name)


def get_run_templates(cfg: ClassSetSettings, classes: ClassSet) -> tuple[list[tuple[str, ...]], ClassLanguage | None]:
    """Each model's zero-shot templates as its classifier reads them (`--templates`; with `--class-language`
    the language's templates, or the bare name) and the run's class language (None: the class set's own
    names).

    Raises:
        ConfigError: The templates or the class language cannot be had for this class set.
    """
    templates = [get_templates(cfg.templates, spec, classes) for spec in cfg.models]
    language = get_class_language(cfg.class_language, classes)
    if language is not None:
        templates = [language.choose_templates(t, cfg.templates) for t in templates]
    return templates, language


def load_model(cfg: RunSettings, model_index: int, progress: ProgressReporter) -> tuple[ZeroShotModel, float]:
    """Load model `model_index` of the run on its device.

    Returns:
        (the model, seconds it took).
    """
    spec = cfg.models[model_index]
    device = resolve_device(cfg.device)
    progress.log(f"Loading {spec.label} on {device}")
    t0 = time.perf_counter()
    model = get_backend(spec.backend).load(spec, device, cfg.precision, compile=cfg.compile)
    return model, time.perf_counter() - t0


def create_encoder(model: ZeroShotModel, cfg: ImageSetSettings, classnames: Sequence[str],
                   templates: Sequence[str], progress: ProgressReporter, what: str,
                   prefix_prompt: str = PREFIX_PROMPT) -> tuple[BatchEncoder, dict[str, Any]]:
    """The batch encoder of a model over `classnames` with the run's defences: the zero-shot
    classifier of `templates` (cached on disk), the defences' classifiers and head sets, checked
    against the model first.

    Args:
        model: The loaded model.
        cfg: The run's config (defences, cache folder, batch size).
        classnames: The classes, in index order.
        templates: The zero-shot templates.
        progress: Progress display.
        what: What the classes are, for the progress bar ("classes", "labels").
        prefix_prompt: The class prompt of prefix defences.

    Returns:
        (the encoder, the model's run.json entries: weights id, cache hits, defences, batch size, seconds).

    Raises:
        ConfigError: A defence does not fit the model.
    """
    for note in check_defences(model, cfg.defences):
        progress.log(note.replace("[", r"\["))  # a note is text, not rich markup
    t0 = time.perf_counter()
    classifier, cached = get_classifier(
        model, classnames, templates, cfg.cache_dir,
        progress=progress.start(f"Classifier, {len(templates)} templates", len(classnames), what))

    def build_templates(name: str) -> tuple[torch.Tensor, bool]:
        return get_classifier(model, classnames, get_templates(name, model.spec), cfg.cache_dir)

    # Each defence changes only its side: text-side ones add classifiers, image-side ones encoder passes.
    defences = build_defence_set(model, cfg.defences, classifier, cached, build_templates, classnames, cfg.cache_dir,
                                 prefix_prompt)
    batch_size = resolve_batch_size(cfg.batch_size, model.device)
    info = {"weights_id": model.weights_id, "input_size": list(model.canvas_size),
            "transform": model.geometry.key, "classifier_from_cache": cached, "defences": list(defences.labels),
            "batch_size": batch_size, "seconds": {"classifier": round(time.perf_counter() - t0, 3)}}
    return BatchEncoder(model, defences, batch_size, progress), info
