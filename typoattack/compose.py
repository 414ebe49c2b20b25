"""Composite rendered text masks onto batches of canvases on the model's device.

The arithmetic is the same as `render.composite` (float32 blend, round half to even, clamp), so
the attacked canvases are bit-identical to the CPU reference renderer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from typoattack.config import Placement
from typoattack.render import AttackMask


@dataclass(frozen=True, eq=False)
class DeviceMask:
    """An attack mask with its layers uploaded to a device.

    Attributes:
        mask: The mask (placement, canvas size, style, stamp position for fixed placements).
        outline_alpha: float32 [h, w, 1] in [0, 1], already multiplied by the opacity.
        fill_alpha: float32 [h, w, 1] in [0, 1], already multiplied by the opacity.
        outline_color: float32 [3], RGB 0-255.
        fill_color: float32 [3], RGB 0-255.
    """

    mask: AttackMask
    outline_alpha: torch.Tensor
    fill_alpha: torch.Tensor
    outline_color: torch.Tensor
    fill_color: torch.Tensor


def upload_mask(mask: AttackMask, device: torch.device) -> DeviceMask:
    """Copy a mask's layers to `device`, premultiplied by the opacity."""
    style = mask.style
    # Same float32 products as render.composite: alpha[..., None] * opacity.
    outline = torch.from_numpy(mask.layers.outline_alpha[..., None] * np.float32(style.opacity)).to(device)
    fill = torch.from_numpy(mask.layers.fill_alpha[..., None] * np.float32(style.opacity)).to(device)
    return DeviceMask(mask, outline, fill,
                      torch.tensor(style.outline, dtype=torch.float32, device=device),
                      torch.tensor(style.fill, dtype=torch.float32, device=device))


def _blend(region: torch.Tensor, dm: DeviceMask) -> torch.Tensor:
    if dm.mask.style.outline_width > 0:
        region = region * (1 - dm.outline_alpha) + dm.outline_color * dm.outline_alpha
    region = region * (1 - dm.fill_alpha) + dm.fill_color * dm.fill_alpha
    return torch.round(region).clamp_(0, 255)


def composite_batch(x: torch.Tensor, dm: DeviceMask, offsets: np.ndarray | None = None) -> torch.Tensor:
    """Draw one mask on every canvas of a batch, in place, touching only the mask's box.

    Args:
        x: float32 [n, H, W, 3] canvases with integer values 0-255, on the mask's device.
        dm: The uploaded mask.
        offsets: int [n, copies, 2] top-left (y0, x0) of each stamp per canvas, for random
            placement (stamps never overlap); None for fixed placements.

    Returns:
        int64 [n] number of pixels changed in any channel (divide by H * W for the pixel cover).
    """
    n = x.shape[0]
    h, w = dm.mask.layers.shape
    if dm.mask.placement is not Placement.RANDOM:
        y0, x0 = dm.mask.layers.y0, dm.mask.layers.x0
        region = x[:, y0:y0 + h, x0:x0 + w, :]
        new = _blend(region, dm)
        changed = (new != region).any(dim=-1).sum(dim=(1, 2))
        region.copy_(new)
        return changed
    if offsets is None:
        raise ValueError("random placement needs per-canvas offsets")
    all_offsets = torch.as_tensor(offsets, dtype=torch.long, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None, None]
    changed = torch.zeros(n, dtype=torch.long, device=x.device)
    for k in range(all_offsets.shape[1]):
        off = all_offsets[:, k]
        rows = (off[:, :1] + torch.arange(h, device=x.device))[:, :, None]  # [n, h, 1]
        cols = (off[:, 1:] + torch.arange(w, device=x.device))[:, None, :]  # [n, 1, w]
        region = x[batch, rows, cols]  # [n, h, w, 3] (a copy)
        new = _blend(region, dm)
        changed += (new != region).any(dim=-1).sum(dim=(1, 2))
        x[batch, rows, cols] = new
    return changed


def get_offsets(mask: AttackMask, image_ids: list[str], seed: int) -> np.ndarray | None:
    """int [n, copies, 2] stamp positions per image for random placement (None for fixed ones)."""
    if mask.placement is not Placement.RANDOM:
        return None
    return np.array([mask.positions_for(i, seed) for i in image_ids], dtype=np.int64).reshape(len(image_ids), mask.copies, 2)
