"""The defences of one model, bundled for the evaluation loops (`DefenceSet`), and the batch encoder
that applies them (`BatchEncoder`).

Defences that only change the text side (prefix, templates) share one image-encoder pass: each of
their classifiers is applied to the same features. Each distinct image-side change (a head set)
is one more encoder pass with the plain classifier, so per image and condition the encoder runs
once per image-side variant, not once per defence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from typoattack.backends import base
from typoattack.backends.base import ZeroShotModel, get_classifier_cache_path, load_or_build_classifier
from typoattack.config.defences import NO_DEFENCE, DefenceKind, DefenceSpec, parse_defence
from typoattack.config.parsing import has_one_placeholder
from typoattack.errors import ConfigError
from typoattack.defences.prefix import PREFIX_PROMPT, load_prefix, load_prefix_entry
from typoattack.progress import ProgressReporter


@dataclass(frozen=True)
class ImageVariant:
    """One image-encoder pass and the classifiers applied to its features.

    Attributes:
        heads: (layer, head) pairs ablated during the pass; empty for the plain encoder.
        classifiers: k float32 [embed_dim, n_classes] classifiers, each applied on its own (so a
            defence's logits are bit-identical to those of a run with that defence alone).
        positions: k indices into `DefenceSet.labels`, in classifier order.
    """

    heads: tuple[tuple[int, int], ...]
    classifiers: tuple[torch.Tensor, ...]
    positions: tuple[int, ...]


@dataclass(frozen=True)
class DefenceSet:
    """The defences of a run, ready for one model.

    Attributes:
        labels: The `defence` column value of each defence, in config order.
        variants: The image-encoder passes that together give every defence's logits.
        n_classes: Classes per classifier.
        from_cache: Per defence, whether its classifier came from the disk cache.
    """

    labels: tuple[str, ...]
    variants: tuple[ImageVariant, ...]
    n_classes: int
    from_cache: tuple[bool, ...] = ()

    @classmethod
    def plain(cls, classifier: torch.Tensor) -> DefenceSet:
        """No defence: one pass with `classifier` (float32 [embed_dim, n_classes])."""
        return cls((NO_DEFENCE,), (ImageVariant((), (classifier,), (0,)),), int(classifier.shape[1]), (False,))


def check_defences(model: ZeroShotModel, defences: Sequence[str]) -> list[str]:
    """Check, before any long work, that each defence fits the model: heads exist in a supported
    tower, a prefix file holds a vector of the text tower's width.

    Returns:
        One line per prefix file whose vector was taken from a dict (which key), for the run to show.

    Raises:
        ConfigError: The first defence that does not fit.
    """
    notes = []
    for spec in (parse_defence(d) for d in defences):
        if spec.kind is DefenceKind.HEADS:
            check_heads(model, spec.heads, spec.label)
        elif spec.kind is DefenceKind.PREFIX:
            _, key = load_prefix_entry(spec.path, model.get_text_width())
            if key:
                notes.append(f"{spec.label}: using the vector under key {key!r} of {spec.path}")
    return notes


def check_heads(model: ZeroShotModel, heads: Sequence[tuple[int, int]], label: str) -> None:
    """Raise ConfigError unless every (layer, head) exists in the model's vision tower."""
    layers, per_layer = model.get_head_grid()
    for layer, head in heads:
        if layer >= layers or head >= per_layer:
            raise ConfigError(f"defence {label}: head {layer}.{head} does not exist in {model.family}, whose vision "
                              f"tower has layers 0-{layers - 1} with heads 0-{per_layer - 1}")


def get_prefix_classifier(model: ZeroShotModel, classnames: Sequence[str], path: str | Path, cache_dir: str | Path,
                          prompt: str = PREFIX_PROMPT, progress: Callable[[int], None] | None = None
                          ) -> tuple[torch.Tensor, bool]:
    """The Defense-Prefix classifier of the vector in `path`, from the disk cache (keyed by the
    vector's contents) or built and cached.

    Returns:
        (float32 [embed_dim, n_classes] on the model's device, loaded_from_cache).
    """
    if prompt.count("*") != 1 or not has_one_placeholder(prompt):
        raise ConfigError(f"the Defense-Prefix prompt {prompt!r} must hold one `*` and one `{{}}`")
    vector = load_prefix(path, model.get_text_width())
    digest = hashlib.sha256(vector.numpy().tobytes()).hexdigest()
    cache = get_classifier_cache_path(model, classnames, [prompt], cache_dir, kind="prefix", extra=digest)
    return load_or_build_classifier(cache, model.device, len(classnames),
                                    lambda: model.build_prefix_classifier(classnames, vector, prompt, progress),
                                    progress)


def build_defence_set(model: ZeroShotModel, defences: Sequence[str], classifier: torch.Tensor, from_cache: bool,
                      build_templates: Callable[[str], tuple[torch.Tensor, bool]], classnames: Sequence[str],
                      cache_dir: str | Path, prefix_prompt: str = PREFIX_PROMPT) -> DefenceSet:
    """Build (or load from the cache) the classifiers the defences need and check them against the model.

    Args:
        model: The model.
        defences: Canonical defence texts (the config's `defences`).
        classifier: float32 [embed_dim, n_classes] of the run's templates (used by none and heads).
        from_cache: Whether `classifier` came from the cache.
        build_templates: Classifier (and from-cache flag) of a templates value (`openai`, `simple`, a file).
        classnames: Class names, in class-index order.
        cache_dir: Cache folder.
        prefix_prompt: The class prompt of prefix defences (one `*` and one `{}`).

    Raises:
        ConfigError: A defence does not fit the model (heads out of range or not a ViT, prefix D).
    """
    specs: list[DefenceSpec] = [parse_defence(d) for d in defences]
    groups: dict[tuple[tuple[int, int], ...], list[tuple[int, torch.Tensor]]] = {}
    cached: list[bool] = []
    for i, spec in enumerate(specs):
        heads: tuple[tuple[int, int], ...] = ()
        clf, hit = classifier, from_cache
        if spec.kind is DefenceKind.HEADS:
            check_heads(model, spec.heads, spec.label)
            heads = spec.heads
        elif spec.kind is DefenceKind.PREFIX:
            clf, hit = get_prefix_classifier(model, classnames, spec.path, cache_dir, prefix_prompt)
        elif spec.kind is DefenceKind.TEMPLATES:
            clf, hit = build_templates(spec.templates)
        groups.setdefault(heads, []).append((i, clf))
        cached.append(hit)
    variants = tuple(ImageVariant(heads, tuple(c for _, c in items), tuple(i for i, _ in items))
                     for heads, items in groups.items())
    return DefenceSet(tuple(s.label for s in specs), variants, int(classifier.shape[1]), tuple(cached))


class BatchEncoder:
    """Zero-shot logits of batches under every defence, halving the sub-batch size after a CUDA
    out-of-memory error.

    Attributes:
        defences: The defences (a plain classifier is wrapped as the single defence `none`).
        max_batch: The sub-batch size now in use (run.json records the final one).
    """

    def __init__(self, model: ZeroShotModel, classifier: torch.Tensor | DefenceSet, batch_size: int,
                 progress: ProgressReporter) -> None:
        self.model, self.max_batch, self.progress = model, batch_size, progress
        self.defences = classifier if isinstance(classifier, DefenceSet) else DefenceSet.plain(classifier)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """float32 [B, n_classes] logits under the first defence of uint8 or float [B, H, W, 3] canvases (0-255)."""
        return self.encode(x)[0]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """float32 [n_defences, B, n_classes] logits of uint8 or float [B, H, W, 3] canvases (values 0-255) on
        the device: one encoder pass per image-side variant of the defences."""
        parts, start = [], 0
        while start < len(x):
            try:
                parts.append(self._encode_all(x[start:start + self.max_batch]))
                start += self.max_batch
            except torch.cuda.OutOfMemoryError:
                if self.max_batch == 1:
                    raise
                self.max_batch //= 2
                torch.cuda.empty_cache()
                self.progress.log(f"[yellow]Out of GPU memory: encoder batch size lowered to {self.max_batch}[/]")
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _encode_all(self, x: torch.Tensor) -> torch.Tensor:
        # `base.encode_features` is looked up at call time so tests can wrap the encoder.
        d = self.defences
        out = torch.empty(len(d.labels), len(x), d.n_classes, device=x.device)
        for variant in d.variants:
            if variant.heads:
                with self.model.ablate_heads(variant.heads):
                    features = base.encode_features(self.model, x)
            else:
                features = base.encode_features(self.model, x)
            for classifier, position in zip(variant.classifiers, variant.positions):
                out[position] = base.get_logits(self.model, features, classifier)
        return out


def resolve_batch_size(batch_size: int | None, device: torch.device) -> int:
    """The batch size to start with: the configured one, or for `auto` 1024 on CUDA, 256 on CPU."""
    if batch_size:
        return batch_size
    return 1024 if device.type == "cuda" else 256
