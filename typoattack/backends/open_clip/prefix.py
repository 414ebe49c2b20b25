"""Defense-Prefix (Azuma & Matsui 2023) for open_clip text towers: the learned vector replaces the
token embedding at the `*` of each class prompt, and the rest of the tower runs as open_clip's
`CLIP.encode_text` does.

Supported: open_clip `CLIP` models with the standard CLIP text tower (`token_embedding`,
`positional_embedding`, `transformer`, `ln_final`, `text_projection`) and a tokenizer that keeps
`*` as one token (open_clip's SimpleTokenizer). Others (`CustomTextCLIP`, Hugging Face text
towers) raise ConfigError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from typoattack.errors import ConfigError


class TextTowerModel(Protocol):
    """What Defense-Prefix uses of a loaded model (a `model.OpenClipModel`)."""

    model: torch.nn.Module
    tokenizer: Callable[..., torch.Tensor]
    device: torch.device

_TEXT_PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
_CLASSES_PER_CALL = 100


def get_text_width(model: torch.nn.Module) -> int:
    """D, the width of the text tower's token embeddings.

    Raises:
        ConfigError: The model has no standard CLIP text tower.
    """
    if not all(hasattr(model, part) for part in _TEXT_PARTS):
        raise ConfigError(f"Defense-Prefix needs open_clip's standard CLIP text tower; {type(model).__name__} has "
                          "a custom text tower (e.g. a Hugging Face one), which is not supported")
    return int(model.token_embedding.weight.shape[1])


def get_star_token(tokenizer: Callable[..., torch.Tensor]) -> int:
    """The token id of `*` (the marked position of a Defense-Prefix prompt).

    Raises:
        ConfigError: The tokenizer does not encode `*` as exactly one token.
    """
    tokens = tokenizer(["*"])[0]
    body = [int(t) for t in tokens[1:] if int(t) != 0]
    if len(body) != 2:  # `*` and the end token
        raise ConfigError("Defense-Prefix needs a tokenizer that keeps `*` as one token (open_clip's CLIP tokenizer)")
    return body[0]


def embed_prompts(loaded: TextTowerModel, texts: Sequence[str], prefix: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens and token embeddings of prompts, with the `*` position replaced by `prefix`.

    Args:
        loaded: The model.
        texts: Prompts holding one `*` each.
        prefix: float32 [D], or None to keep the `*` token's own embedding.

    Returns:
        (tokens int64 [N, context], embeddings [N, context, D] in the text tower's dtype).

    Raises:
        ConfigError: A prompt has no single `*` token.
    """
    model = loaded.model
    tokens = loaded.tokenizer(list(texts)).to(loaded.device)
    embeds = model.token_embedding(tokens).to(model.transformer.get_cast_dtype())
    marked = tokens == get_star_token(loaded.tokenizer)
    if not bool((marked.sum(1) == 1).all()):
        raise ConfigError("every Defense-Prefix prompt must hold exactly one `*` token")
    if prefix is not None:
        embeds = embeds.clone()
        embeds[marked] = prefix.to(embeds.device, embeds.dtype)
    return tokens, embeds


def encode_text_embeddings(model: torch.nn.Module, tokens: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
    """open_clip's `CLIP.encode_text` from token embeddings instead of token ids.

    Args:
        model: An open_clip CLIP model (standard text tower).
        tokens: int64 [N, context], used to find the pooled position (end token).
        embeds: [N, context, D] token embeddings.

    Returns:
        float [N, embed_dim] L2-normalised text features.
    """
    cast = model.transformer.get_cast_dtype()
    x = embeds.to(cast) + model.positional_embedding.to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is not None:
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)


def build_prefix_classifier(loaded: TextTowerModel, classnames: Sequence[str], vector: torch.Tensor, prompt: str,
                            progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """The zero-shot classifier of Defense-Prefix prompts `prompt.format(name)` (one `*` each).

    Returns:
        float32 [embed_dim, n_classes] on the model's device.

    Raises:
        ConfigError: Unsupported text tower, or a prompt without a single `*` token.
    """
    get_text_width(loaded.model)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(classnames), _CLASSES_PER_CALL):
            chunk = [prompt.format(c) for c in classnames[start:start + _CLASSES_PER_CALL]]
            tokens, embeds = embed_prompts(loaded, chunk, vector)
            parts.append(encode_text_embeddings(loaded.model, tokens, embeds).float())
            if progress:
                progress(len(chunk))
    return torch.cat(parts).T.contiguous()
