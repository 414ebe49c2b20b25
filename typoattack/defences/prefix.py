"""Defense-Prefix vectors: reading a learned token embedding from the file a user has.

The text-tower surgery that uses the vector is the backend's (`ZeroShotModel.build_prefix_classifier`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from typoattack.errors import ConfigError

PREFIX_PROMPT = "a photo of a * {}."
"""The class prompt of a Defense-Prefix classifier: the learned vector replaces `*`."""


def load_prefix(path: str | Path, width: int) -> torch.Tensor:
    """The learned vector of a prefix file: float32 [D] on the CPU.

    Args:
        path: A file written by torch.save holding a tensor of shape (D,) or (1, D) (or a dict
            with one such tensor).
        width: D of the model's text tower.

    Raises:
        ConfigError: Missing or unreadable file, another shape, or D != width.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"prefix file {path} does not exist")
    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a tensor file
        raise ConfigError(f"prefix file {path} is not a torch.save'd tensor ({type(e).__name__})") from None
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not isinstance(value, torch.Tensor) or value.dim() not in (1, 2) or (value.dim() == 2 and value.shape[0] != 1):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(f"prefix file {path} must hold a tensor of shape (D,) or (1, D), got {shape}")
    vector = value.reshape(-1).float()
    if vector.numel() != width:
        raise ConfigError(f"prefix file {path} holds a vector of D={vector.numel()}, but this model's text tower "
                          f"has width {width}: the prefix was learned for another model")
    return vector
