"""Defense-Prefix (Azuma & Matsui 2023): a learned token embedding in the class prompts.

Each class prompt is the dataset's template with `* ` before the class name ("a photo of a * {c}."
by default; Disentangling: "a photo of * {c}.", as the authors' code builds them); the token
embedding at the `*` position is replaced by the learned vector and the rest of the text tower runs
as open_clip's `CLIP.encode_text` does.

Supported: open_clip `CLIP` models with the standard CLIP text tower (`token_embedding`,
`positional_embedding`, `transformer`, `ln_final`, `text_projection`) and a tokenizer that keeps
`*` as one token (open_clip's SimpleTokenizer). Others (`CustomTextCLIP`, Hugging Face text
towers) raise ConfigError.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from typoattack.errors import ConfigError
from typoattack.files import expand_path, get_label_slug, write_atomic
from typoattack.models.loading import LoadedModel

PREFIX_PROMPT = "a photo of a * {}."
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


_OPTIMIZER_KEYS = ("optim", "sched", "scaler")
"""Checkpoint entries whose tensors are training state, not the prefix (keys starting with these)."""
_MAX_DEPTH = 4


def _list_vectors(value: Any, key: str = "", depth: int = 0) -> list[tuple[str, torch.Tensor]]:
    """(dotted key, tensor) of every floating tensor of shape (D,) or (1, D) in a loaded file,
    searching dicts, lists and tuples (not the optimizer or scheduler state of a checkpoint)."""
    if isinstance(value, torch.Tensor):
        vector = value.is_floating_point() and (value.dim() == 1 or (value.dim() == 2 and value.shape[0] == 1))
        return [(key, value)] if vector else []
    if depth >= _MAX_DEPTH:
        return []
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            if isinstance(k, str) and k.lower().startswith(_OPTIMIZER_KEYS):
                continue
            found += _list_vectors(v, f"{key}.{k}" if key else str(k), depth + 1)
        return found
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in _list_vectors(v, f"{key}.{i}" if key else str(i), depth + 1)]
    return []


def load_prefix_entry(path: str | Path, width: int) -> tuple[torch.Tensor, str]:
    """The learned vector of a prefix file and where in the file it was found.

    Accepts what Defense-Prefix and user code save: a tensor or `nn.Parameter` (requires_grad,
    any device) in fp16, bf16 or fp32 of shape (D,) or (1, D), or a state dict or checkpoint dict
    holding one such tensor (the optimizer and scheduler state of a checkpoint are ignored; among
    several vectors, the one of width D is taken when it is the only one).

    Args:
        path: A file written by torch.save.
        width: D of the model's text tower.

    Returns:
        (float32 [D] on the CPU, detached; the dotted key of the vector in the file, "" when the
        file holds the tensor itself).

    Raises:
        ConfigError: Missing or unreadable file, no vector or several, another shape, D != width,
            or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prefix file {path} does not exist")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a tensor file
        raise ConfigError(f"prefix file {path} is not a torch.save'd tensor ({type(e).__name__})") from None
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or value.dim() not in (1, 2) or (value.dim() == 2 and value.shape[0] != 1):
            raise ConfigError(f"prefix file {path} must hold a tensor of shape (D,) or (1, D), got "
                              f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}")
        key, tensor = "", value
    else:
        found = _list_vectors(value)
        if len(found) > 1:
            fitting = [(k, t) for k, t in found if t.numel() == width]
            found = fitting if len(fitting) == 1 else found
        if not found:
            raise ConfigError(f"prefix file {path} must hold a tensor of shape (D,) or (1, D) (or a dict with one), "
                              f"got {type(value).__name__} without one")
        if len(found) > 1:
            keys = ", ".join(repr(k) for k, _ in found[:6])
            raise ConfigError(f"prefix file {path} holds {len(found)} vectors ({keys}); save the prefix tensor alone, "
                              "e.g. torch.save(prefix, 'prefix.pt')")
        key, tensor = found[0]
    vector = tensor.detach().reshape(-1).float().contiguous()
    if vector.numel() != width:
        where = f" (key {key!r})" if key else ""
        raise ConfigError(f"prefix file {path}{where} holds a vector of D={vector.numel()}, but this model's text "
                          f"tower has width {width}: the prefix was learned for another model")
    if not bool(torch.isfinite(vector).all()):
        raise ConfigError(f"prefix file {path} holds non-finite values (NaN or inf)")
    return vector, key


def load_prefix(path: str | Path, width: int) -> torch.Tensor:
    """The learned vector of a prefix file: float32 [D] on the CPU (see `load_prefix_entry`).

    Raises:
        ConfigError: Missing or unreadable file, no single vector, or D != width.
    """
    return load_prefix_entry(path, width)[0]


def get_star_token(tokenizer: Callable[..., torch.Tensor]) -> int:
    """The token id of `*` (the marked position of PREFIX_PROMPT).

    Raises:
        ConfigError: The tokenizer does not encode `*` as exactly one token.
    """
    tokens = tokenizer(["*"])[0]
    body = [int(t) for t in tokens[1:] if int(t) != 0]
    if len(body) != 2:  # `*` and the end token
        raise ConfigError("Defense-Prefix needs a tokenizer that keeps `*` as one token (open_clip's CLIP tokenizer)")
    return body[0]


def embed_prompts(loaded: LoadedModel, texts: Sequence[str], prefix: torch.Tensor | None
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


def build_prefix_classifier(loaded: LoadedModel, classnames: Sequence[str], path: str | Path,
                            cache_dir: str | Path, progress: Callable[[int], None] | None = None,
                            prompt: str = PREFIX_PROMPT) -> tuple[torch.Tensor, bool]:
    """The zero-shot classifier of Defense-Prefix prompts (cached on disk, keyed by the vector and the prompt).

    Args:
        loaded: The model.
        classnames: Class names, in class-index order.
        path: The prefix file (see `load_prefix_entry`).
        cache_dir: Cache folder.
        progress: Called with the number of classes done.
        prompt: The class prompt, with one `*` (the learned token) and one `{}` (the class name).

    Returns:
        (weights float32 [embed_dim, n_classes] on the model's device, loaded_from_cache).

    Raises:
        ConfigError: Unsupported text tower, bad prefix file or D mismatch, or a prompt without one `*` and one `{}`.
    """
    if prompt.count("{}") != 1 or prompt.count("*") != 1:
        raise ConfigError(f"the Defense-Prefix prompt {prompt!r} must hold one `*` and one `{{}}`")
    prefix = load_prefix(path, get_text_width(loaded.model))
    key = json.dumps({"weights": loaded.weights_id, "classnames": list(classnames), "prompt": prompt,
                      "prefix": hashlib.sha256(prefix.numpy().tobytes()).hexdigest(),
                      "open_clip": open_clip.__version__})
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    cache = expand_path(cache_dir) / "classifiers" / f"{get_label_slug(loaded.spec.label)}-prefix-{digest}.pt"
    if cache.is_file():
        if progress:
            progress(len(classnames))
        return torch.load(cache, map_location=loaded.device, weights_only=True), True
    parts = []
    with torch.inference_mode():
        for start in range(0, len(classnames), _CLASSES_PER_CALL):
            chunk = [prompt.format(c) for c in classnames[start:start + _CLASSES_PER_CALL]]
            tokens, embeds = embed_prompts(loaded, chunk, prefix)
            parts.append(encode_text_embeddings(loaded.model, tokens, embeds).float())
            if progress:
                progress(len(chunk))
    weights = torch.cat(parts).T.contiguous()
    write_atomic(cache, lambda tmp: torch.save(weights.cpu(), tmp))
    return weights, False
