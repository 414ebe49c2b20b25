"""The defences of one model, bundled for the evaluation loop (`DefenceSet`).

Defences that only change the text side (prefix, templates) share one image-encoder pass: their
classifiers are concatenated along the class axis. Each distinct image-side change (a head set)
is one more encoder pass with the plain classifier, so per image and condition the encoder runs
once per image-side variant, not once per defence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from typoattack.defences.spec import DefenceKind, DefenceSpec, parse_defence
from typoattack.models.loading import LoadedModel


@dataclass(frozen=True)
class ImageVariant:
    """One image-encoder pass and the classifiers applied to its features.

    Attributes:
        heads: (layer, head) pairs ablated during the pass; empty for the plain encoder.
        classifier: float32 [embed_dim, k * n_classes], k classifiers side by side.
        positions: k indices into `DefenceSet.labels`, in classifier order.
    """

    heads: tuple[tuple[int, int], ...]
    classifier: torch.Tensor
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
        return cls(("none",), (ImageVariant((), classifier, (0,)),), int(classifier.shape[1]), (False,))


def check_defences(loaded: LoadedModel, defences: Sequence[str]) -> list[str]:
    """Check, before any long work, that each defence fits the model: heads exist in a supported
    ViT tower, a prefix file holds a vector of the text tower's width.

    Returns:
        One line per prefix file whose vector was taken from a dict (which key), for the run to show.

    Raises:
        ConfigError: The first defence that does not fit.
    """
    from typoattack.defences.heads import check_heads
    from typoattack.defences.prefix import get_text_width, load_prefix_entry

    notes = []
    for spec in (parse_defence(d) for d in defences):
        if spec.kind is DefenceKind.HEADS:
            check_heads(loaded.model, spec.heads, spec.label)
        elif spec.kind is DefenceKind.PREFIX:
            _, key = load_prefix_entry(spec.path, get_text_width(loaded.model))
            if key:
                notes.append(f"{spec.label}: using the vector under key {key!r} of {spec.path}")
    return notes


def build_defence_set(loaded: LoadedModel, defences: Sequence[str], classifier: torch.Tensor, from_cache: bool,
                      build_templates: Callable[[str], tuple[torch.Tensor, bool]], classnames: Sequence[str],
                      cache_dir: str | Path, prefix_prompt: str | None = None) -> DefenceSet:
    """Build (or load from the cache) the classifiers the defences need and check them against the model.

    Args:
        loaded: The model.
        defences: Canonical defence texts (RunConfig.defences).
        classifier: float32 [embed_dim, n_classes] of the run's templates (used by none and heads).
        from_cache: Whether `classifier` came from the cache.
        build_templates: Classifier (and from-cache flag) of a templates value (`openai`, `simple`, a file).
        classnames: Class names, in class-index order.
        cache_dir: Cache folder.
        prefix_prompt: The class prompt of prefix defences (one `*`, one `{}`); None for
            `PREFIX_PROMPT`, "a photo of a * {}.".

    Raises:
        ConfigError: A defence does not fit the model (heads out of range or not a ViT, prefix D).
    """
    from typoattack.defences.heads import check_heads
    from typoattack.defences.prefix import PREFIX_PROMPT, build_prefix_classifier

    specs: list[DefenceSpec] = [parse_defence(d) for d in defences]
    groups: dict[tuple[tuple[int, int], ...], list[tuple[int, torch.Tensor]]] = {}
    cached: list[bool] = []
    for i, spec in enumerate(specs):
        heads: tuple[tuple[int, int], ...] = ()
        clf, hit = classifier, from_cache
        if spec.kind is DefenceKind.HEADS:
            check_heads(loaded.model, spec.heads, spec.label)
            heads = spec.heads
        elif spec.kind is DefenceKind.PREFIX:
            clf, hit = build_prefix_classifier(loaded, classnames, spec.path, cache_dir,
                                               prompt=prefix_prompt or PREFIX_PROMPT)
        elif spec.kind is DefenceKind.TEMPLATES:
            clf, hit = build_templates(spec.templates)
        groups.setdefault(heads, []).append((i, clf))
        cached.append(hit)
    variants = tuple(ImageVariant(heads, torch.cat([c for _, c in items], dim=1), tuple(i for i, _ in items))
                     for heads, items in groups.items())
    return DefenceSet(tuple(s.label for s in specs), variants, int(classifier.shape[1]), tuple(cached))
