"""Defense-Prefix vectors (Azuma & Matsui 2023): reading the learned token embedding from the file a
user has (the authors' released tokens, a checkpoint, a bare tensor).

Each class prompt is the dataset's template with `* ` before the class name ("a photo of a * {}."
by default; Disentangling: "a photo of * {}.", as the authors' code builds them); the text-tower
surgery that replaces the `*` embedding is the backend's (`ZeroShotModel.build_prefix_classifier`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from typoattack.errors import ConfigError

PREFIX_PROMPT = "a photo of a * {}."
"""The class prompt of a Defense-Prefix classifier: the learned vector replaces `*`."""


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
