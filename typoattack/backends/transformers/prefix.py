"""Defense-Prefix (Azuma & Matsui 2023) for transformers text towers: in each class prompt the
token embedding of its one `*` token is replaced by the learned vector, by a forward hook on the
text tower's token embedding; the rest of `get_text_features` runs unchanged.

Supported: text towers with `text_model.embeddings.token_embedding` (CLIP, MetaCLIP 2, SigLIP,
SigLIP 2) whose tokenizer keeps `*` as one token (CLIP's BPE, SigLIP 2's Gemma tokenizer). SigLIP's
original sentencepiece tokenizer strips punctuation, `*` included, and is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from typoattack.backends.transformers.families import get_pooled
from typoattack.config.types import ModelSpec
from typoattack.errors import ConfigError


class TextTowerModel(Protocol):
    """What Defense-Prefix uses of a loaded model (a `model.TransformersModel`)."""

    spec: ModelSpec
    model: nn.Module
    device: torch.device

    @property
    def family(self) -> str:
        """A short description of the architecture for messages."""
        ...

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        ...

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text model's inputs for `texts` on `device`."""
        ...

_MARK = "*"
_CLASSES_PER_CALL = 100
# Word-boundary marks of BPE and sentencepiece vocabularies, stripped to compare a token with `*`.
_BOUNDARY_MARKS = ("</w>", "\u2581", "\u0120")


def get_token_embedding(zsm: TextTowerModel) -> nn.Embedding:
    """The text tower's token embedding.

    Raises:
        ConfigError: The family's text tower has no such embedding (BERT/XLM-R towers).
    """
    embedding = getattr(getattr(getattr(zsm.model, "text_model", None), "embeddings", None), "token_embedding", None)
    if not isinstance(embedding, nn.Embedding):
        raise ConfigError(f"Defense-Prefix is not supported for {zsm.family} ({zsm.spec.label}): it needs a CLIP or "
                          "SigLIP text tower")
    return embedding


def get_text_width(zsm: TextTowerModel) -> int:
    """D, the width of the text tower's token embeddings.

    Raises:
        ConfigError: Unsupported text tower.
    """
    return int(get_token_embedding(zsm).weight.shape[1])


def get_mark_token_ids(tokenizer: Any) -> list[int]:
    """Ids of the vocabulary entries that are `*` alone (with or without a word-boundary mark)."""
    ids = []
    for token, index in tokenizer.get_vocab().items():
        text = token
        for mark in _BOUNDARY_MARKS:
            text = text.replace(mark, "")
        if text == _MARK:
            ids.append(int(index))
    return sorted(ids)


def build_prefix_classifier(zsm: TextTowerModel, classnames: Sequence[str], vector: torch.Tensor, prompt: str,
                            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The zero-shot classifier of Defense-Prefix prompts, one prompt per class.

    Args:
        zsm: The model.
        classnames: Class names in class-index order.
        vector: float32 [D] learned token embedding.
        prompt: A format string with one `{}` and one `*` (e.g. "a photo of a * {}.").
        progress: Called with the number of classes done since the last call.

    Returns:
        float32 [D_embed, n_classes] on the model's device.

    Raises:
        ConfigError: Unsupported text tower, a vector of another width, or a tokenizer that does
            not give exactly one `*` token per prompt.
    """
    embedding = get_token_embedding(zsm)
    width = int(embedding.weight.shape[1])
    if vector.numel() != width:
        raise ConfigError(f"the prefix vector has D={vector.numel()}, but the text tower of {zsm.spec.label} has "
                          f"width {width}: the prefix was learned for another model")
    mark_ids = torch.tensor(get_mark_token_ids(zsm.tokenizer), dtype=torch.long)
    replacement = vector.reshape(-1).to(zsm.device, embedding.weight.dtype)
    marked: list[torch.Tensor] = []

    def replace(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[marked[0]] = replacement
        return output

    columns = []
    handle = embedding.register_forward_hook(replace)
    try:
        with torch.inference_mode():
            for start in range(0, len(classnames), _CLASSES_PER_CALL):
                texts = [prompt.format(c) for c in classnames[start:start + _CLASSES_PER_CALL]]
                inputs = zsm.tokenize(texts)
                mask = torch.isin(inputs["input_ids"], mark_ids.to(zsm.device))
                counts = mask.sum(dim=1)
                if not bool((counts == 1).all()):
                    bad = int((counts != 1).nonzero()[0, 0])
                    raise ConfigError(f"Defense-Prefix needs a tokenizer that keeps `*` as one token; the tokenizer of "
                                      f"{zsm.spec.label} gives {int(counts[bad])} for {texts[bad]!r}")
                marked[:] = [mask]
                features = get_pooled(zsm.model.get_text_features(**inputs)).float()
                columns.append(F.normalize(features, dim=-1))
                if progress:
                    progress(len(texts))
    finally:
        handle.remove()
    return torch.cat(columns).T.contiguous()
