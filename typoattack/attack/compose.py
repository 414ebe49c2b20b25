"""Composite rendered text masks onto batches of canvases on the model's device.

The arithmetic is the same as `render.composite` (float32 blend, round half to even, clamp), so
the attacked canvases are bit-identical to the CPU reference renderer's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import overload

import numpy as np
import torch

from typoattack.config.types import Placement
from typoattack.attack.render import AttackMask


@dataclass(frozen=True, eq=False)
class DevicePixels:
    """The drawn pixels of a mask on a device, premultiplied by the opacity.

    Only pixels under the mask (alpha > 0) are stored: compositing touches nothing else, which is
    exact because a pixel with alpha 0 keeps its value.

    Attributes:
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


@dataclass(frozen=True, eq=False)
class DeviceMask:
    """An attack mask bound to a device; its drawn pixels go there on first use (`pixels`), so
    reading `mask` (placement, stamp positions) uploads nothing.

    Attributes:
        mask: The mask (placement, canvas size, style).
        device: Where its pixels are composited.
    """

    mask: AttackMask
    device: torch.device

    @cached_property
    def pixels(self) -> DevicePixels:
        """The mask's drawn pixels on `device` (uploaded once, about 72 bytes per drawn pixel)."""
        style, layers = self.mask.style, self.mask.layers
        rows, cols = np.nonzero(layers.outline_alpha)
        # Same float32 products as render.composite: alpha[..., None] * opacity.
        outline = layers.outline_alpha[rows, cols][:, None] * np.float32(style.opacity)
        fill = layers.fill_alpha[rows, cols][:, None] * np.float32(style.opacity)
        if self.mask.placement is not Placement.RANDOM:
            rows, cols = rows + layers.y0, cols + layers.x0
        device = self.device
        outline_alpha, fill_alpha = torch.from_numpy(outline).to(device), torch.from_numpy(fill).to(device)
        outline_color = torch.tensor(style.outline, dtype=torch.float32, device=device)
        fill_color = torch.tensor(style.fill, dtype=torch.float32, device=device)
        return DevicePixels(
            torch.from_numpy(rows.astype(np.int64)).to(device), torch.from_numpy(cols.astype(np.int64)).to(device),
            outline_alpha, fill_alpha, outline_color, fill_color,
            (1 - outline_alpha).expand(-1, 3).contiguous(), (outline_color * outline_alpha).contiguous(),
            (1 - fill_alpha).expand(-1, 3).contiguous(), (fill_color * fill_alpha).contiguous(),
        )


def upload_mask(mask: AttackMask, device: torch.device) -> DeviceMask:
    """Copy a mask's drawn pixels to `device` now, premultiplied by the opacity."""
    bound = DeviceMask(mask, device)
    _ = bound.pixels
    return bound


# Masks a `DeviceMasks` keeps bound: every condition of a usual sweep (goh2021 x 7 fractions x 2
# placements is 126), whose masks then go up once per model. A larger vocabulary keeps at most
# about 100 MB of host layers and as much of device pixels at 224 px, and binds its masks again
# in each cell (a few ms each, against the cell's thousands of encoded images per mask).
DEVICE_MASKS_KEPT = 256


class DeviceMasks(Sequence[DeviceMask]):
    """The masks of many conditions bound to a device on demand: item k is `masks[k]` unpacked and
    bound when first asked for (its pixels uploaded on first use); the `keep` most recently used
    stay, the others are dropped (host layers and device pixels alike) and bound again when asked
    for again. Memory then does not grow with the number of conditions."""

    def __init__(self, masks: Sequence[AttackMask], device: torch.device, keep: int = DEVICE_MASKS_KEPT) -> None:
        """Bind nothing yet.

        Args:
            masks: The masks, one per condition (a `MaskSet` unpacks each when asked for).
            device: Where their pixels go.
            keep: How many bound masks to keep (>= 1).
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.masks, self.device, self.keep = masks, device, keep
        self._bound: OrderedDict[int, DeviceMask] = OrderedDict()

    def __len__(self) -> int:
        return len(self.masks)

    @overload
    def __getitem__(self, index: int) -> DeviceMask: ...

    @overload
    def __getitem__(self, index: slice) -> list[DeviceMask]: ...

    def __getitem__(self, index: int | slice) -> DeviceMask | list[DeviceMask]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        index = range(len(self))[index]  # negative indices; IndexError past the end
        bound = self._bound.get(index)
        if bound is None:
            bound = self._bound[index] = DeviceMask(self.masks[index], self.device)
            if len(self._bound) > self.keep:
                self._bound.popitem(last=False)
        self._bound.move_to_end(index)
        return bound


def _blend(region: torch.Tensor, dm: DeviceMask) -> torch.Tensor:
    """The blended pixels in `region`'s dtype (integer values 0-255), computed in float32."""
    dtype, px = region.dtype, dm.pixels
    region = region.float() if dtype != torch.float32 else region.clone()
    # In-place steps, each the same float32 operation as the reference renderer's.
    if dm.mask.style.outline_width > 0:
        region.mul_(px.outline_keep).add_(px.outline_add)
    region.mul_(px.fill_keep).add_(px.fill_add)
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
    px = dm.pixels
    if dm.mask.placement is not Placement.RANDOM:
        index = px.rows * W + px.cols
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
        index = (off[:, :1] + px.rows) * W + off[:, 1:] + px.cols  # [n, m]
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
