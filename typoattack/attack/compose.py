"""Composite rendered text masks onto batches of canvases on the model's device.

The arithmetic is the same as `render.composite` (float32 blend, round half to even, clamp), so
the attacked canvases are bit-identical to the CPU reference renderer's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from typoattack.config.types import Placement
from typoattack.attack.render import AttackMask


@dataclass(frozen=True, eq=False)
class DeviceMask:
    """An attack mask reduced to its drawn pixels and uploaded to a device.

    Only pixels under the mask (alpha > 0) are stored: compositing touches nothing else, which is
    exact because a pixel with alpha 0 keeps its value.

    Attributes:
        mask: The mask (placement, canvas size, style).
        rows: int64 [m] row of each drawn pixel: on the canvas for fixed placements, in the
            stamp for random placement.
        cols: int64 [m] column of each drawn pixel, likewise.
        outline_alpha: float32 [m, 1] in [0, 1], already multiplied by the opacity.
        fill_alpha: float32 [m, 1] in [0, 1], already multiplied by the opacity.
        outline_color: float32 [3], RGB 0-255.
        fill_color: float32 [3], RGB 0-255.
        outline_keep: float32 [m, 3], 1 - outline_alpha (the blend's factors, precomputed and
            contiguous: broadcasting the [m, 1] alphas at every batch is several times slower).
        outline_add: float32 [m, 3], outline_color * outline_alpha.
        fill_keep: float32 [m, 3], 1 - fill_alpha.
        fill_add: float32 [m, 3], fill_color * fill_alpha.
    """

    mask: AttackMask
    rows: torch.Tensor
    cols: torch.Tensor
    outline_alpha: torch.Tensor
    fill_alpha: torch.Tensor
    outline_color: torch.Tensor
    fill_color: torch.Tensor
    outline_keep: torch.Tensor
    outline_add: torch.Tensor
    fill_keep: torch.Tensor
    fill_add: torch.Tensor


def upload_mask(mask: AttackMask, device: torch.device) -> DeviceMask:
    """Copy a mask's drawn pixels to `device`, premultiplied by the opacity."""
    style, layers = mask.style, mask.layers
    rows, cols = np.nonzero(layers.outline_alpha)
    # Same float32 products as render.composite: alpha[..., None] * opacity.
    outline = layers.outline_alpha[rows, cols][:, None] * np.float32(style.opacity)
    fill = layers.fill_alpha[rows, cols][:, None] * np.float32(style.opacity)
    if mask.placement is not Placement.RANDOM:
        rows, cols = rows + layers.y0, cols + layers.x0
    outline_alpha, fill_alpha = torch.from_numpy(outline).to(device), torch.from_numpy(fill).to(device)
    outline_color = torch.tensor(style.outline, dtype=torch.float32, device=device)
    fill_color = torch.tensor(style.fill, dtype=torch.float32, device=device)
    return DeviceMask(
        mask,
        torch.from_numpy(rows.astype(np.int64)).to(device), torch.from_numpy(cols.astype(np.int64)).to(device),
        outline_alpha, fill_alpha, outline_color, fill_color,
        (1 - outline_alpha).expand(-1, 3).contiguous(), (outline_color * outline_alpha).contiguous(),
        (1 - fill_alpha).expand(-1, 3).contiguous(), (fill_color * fill_alpha).contiguous(),
    )


def _blend(region: torch.Tensor, dm: DeviceMask) -> torch.Tensor:
    """The blended pixels in `region`'s dtype (integer values 0-255), computed in float32."""
    dtype = region.dtype
    region = region.float() if dtype != torch.float32 else region.clone()
    # In-place steps, each the same float32 operation as the reference renderer's.
    if dm.mask.style.outline_width > 0:
        region.mul_(dm.outline_keep).add_(dm.outline_add)
    region.mul_(dm.fill_keep).add_(dm.fill_add)
    return region.round_().clamp_(0, 255).to(dtype)


def composite_batch(x: torch.Tensor, dm: DeviceMask, offsets: np.ndarray | None = None) -> torch.Tensor:
    """Draw one mask on every canvas of a batch, in place, touching only the drawn pixels.

    Args:
        x: contiguous uint8 or float32 [n, H, W, 3] canvases with integer values 0-255, on the
            mask's device. The blend runs in float32 either way, so both give the same values;
            uint8 moves a quarter of the bytes.
        dm: The uploaded mask.
        offsets: int [n, copies, 2] top-left (y0, x0) of each stamp per canvas, for random
            placement (stamps never overlap); None for fixed placements.

    Returns:
        int64 [n] number of pixels changed in any channel (divide by H * W for the pixel cover).
    """
    n, H, W, _ = x.shape
    flat = x.view(n, H * W, 3)
    if dm.mask.placement is not Placement.RANDOM:
        index = dm.rows * W + dm.cols
        region = flat.index_select(1, index)  # [n, m, 3] (a copy)
        new = _blend(region, dm)
        flat.index_copy_(1, index, new)
        return (new != region).any(dim=-1).sum(dim=1)
    if offsets is None:
        raise ValueError("random placement needs per-canvas offsets")
    all_offsets = torch.as_tensor(offsets, dtype=torch.long, device=x.device)
    batch = torch.arange(n, device=x.device)[:, None]
    changed = torch.zeros(n, dtype=torch.long, device=x.device)
    for k in range(all_offsets.shape[1]):
        off = all_offsets[:, k]
        index = (off[:, :1] + dm.rows) * W + off[:, 1:] + dm.cols  # [n, m]
        region = flat[batch, index]
        new = _blend(region, dm)
        flat[batch, index] = new
        changed += (new != region).any(dim=-1).sum(dim=1)
    return changed


def get_offsets(mask: AttackMask, image_ids: list[str], seed: int) -> np.ndarray | None:
    """int [n, copies, 2] stamp positions per image for random placement (None for fixed ones)."""
    if mask.placement is not Placement.RANDOM:
        return None
    return np.array([mask.positions_for(i, seed) for i in image_ids], dtype=np.int64).reshape(len(image_ids), mask.copies, 2)
