"""One pass of the threshold search on a model: the jobs' canvases attacked at their lattice fractions,
encoded once under every defence, reduced to the prediction per defence and the measured pixel cover.

A job's canvas is the one `typoattack eval` draws at that fraction: the same cached canvas, the mask
solved by `create_attack_mask` for the same (word, fraction, placement, style, canvas size), random
stamps placed by the same generator keyed on (seed, image id, word), the same float32 blend as
`attack.compose` (bit for bit: `tests/test_threshold.py` compares them) and the same `summarize_logits`
reduction; so eval at a recorded bracket fraction predicts what the search saw.

Unlike eval, whose batches hold many canvases of one mask, a bisection pass holds many masks with a
canvas or two each. `composite_jobs` therefore draws a whole batch in one gather, blend and scatter over
the drawn pixels of every job (their indices built with numpy), instead of a few tensor operations per
mask.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from typoattack.attack.compose import get_offsets
from typoattack.attack.masks import MaskPool
from typoattack.attack.render import AttackMask
from typoattack.backends.base import ZeroShotModel
from typoattack.config.types import Placement
from typoattack.data.canvases import CanvasSet
from typoattack.defences.apply import BatchEncoder
from typoattack.tasks.sweep import summarize_logits
from typoattack.tasks.threshold.masks import Series, get_mask_requests, iter_masks
from typoattack.tasks.threshold.search import CLEAN, SeriesRange

MASK_BLOCK = 2048
"""Masks a pass hands to the solver at once (the next block goes when the pass starts on one: at most two are
held, packed): a pass over many series and images works through its jobs block by block."""


@dataclass(frozen=True)
class MaskPixels:
    """The drawn pixels of a mask, as `attack.compose.DevicePixels` computes them, on the host.

    Attributes:
        index: int64 [m] pixel index row * W + col: on the canvas (fixed placements) or in the stamp (random).
        rows, cols: int64 [m] the same as row and column.
        keep_outline, add_outline, keep_fill, add_fill: float32 [m, 3] the blend's factors (the outline's are
            1 and 0 for a mask without outline: multiplying by 1 and adding 0 change no float).
        random: Placement random (stamps moved per image).
    """

    index: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    keep_outline: np.ndarray
    add_outline: np.ndarray
    keep_fill: np.ndarray
    add_fill: np.ndarray
    random: bool

    @classmethod
    def of(cls, mask: AttackMask) -> MaskPixels:
        style, layers = mask.style, mask.layers
        W = mask.canvas_size[1]
        rows, cols = np.nonzero(layers.outline_alpha)
        # The same float32 products as render.composite and DevicePixels: alpha[..., None] * opacity.
        outline = layers.outline_alpha[rows, cols][:, None] * np.float32(style.opacity)
        fill = layers.fill_alpha[rows, cols][:, None] * np.float32(style.opacity)
        random = mask.placement is Placement.RANDOM
        if not random:
            rows, cols = rows + layers.y0, cols + layers.x0
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        m = len(rows)
        if style.outline_width > 0:
            keep_outline = np.broadcast_to(np.float32(1) - outline, (m, 3))
            add_outline = np.asarray(style.outline, np.float32)[None, :] * outline
        else:
            keep_outline, add_outline = np.ones((m, 3), np.float32), np.zeros((m, 3), np.float32)
        return cls(rows * W + cols, rows, cols, np.ascontiguousarray(keep_outline, np.float32),
                   add_outline.astype(np.float32), np.ascontiguousarray(np.broadcast_to(np.float32(1) - fill, (m, 3))),
                   (np.asarray(style.fill, np.float32)[None, :] * fill).astype(np.float32), random)


def composite_jobs(x: torch.Tensor, pixels: Sequence[MaskPixels | None],
                   offsets: Sequence[np.ndarray | None]) -> np.ndarray:
    """Draw each canvas's own mask on a batch, in place, in one blend over every drawn pixel.

    Args:
        x: contiguous uint8 or float32 [B, H, W, 3] canvases (integer values 0-255), on any device.
        pixels: Per canvas, its mask's pixels (None: left clean).
        offsets: Per canvas, int [copies, 2] top-left (y0, x0) of each random stamp; None for fixed placements.

    Returns:
        int64 [B] pixels changed on each canvas (in any channel), as `compose.composite_batch` counts them.
    """
    B, H, W, _ = x.shape
    parts, sizes = [], []
    for b, (px, off) in enumerate(zip(pixels, offsets)):
        base = b * H * W
        if px is None:
            sizes.append(0)
            continue
        if not px.random:
            parts.append((base + px.index, px))
            sizes.append(len(px.index))
            continue
        assert off is not None, "random placement needs per-canvas offsets"
        for y0, x0 in off:
            parts.append((base + (px.rows + y0) * W + px.cols + x0, px))
        sizes.append(len(px.index) * len(off))
    if not parts:
        return np.zeros(B, dtype=np.int64)
    device = x.device

    def cat(name: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([getattr(px, name) for _, px in parts])).to(device)

    index = torch.from_numpy(np.concatenate([i for i, _ in parts])).to(device)
    flat = x.view(B * H * W, 3)
    region = flat.index_select(0, index)
    # The blend of compose._blend, in float32: outline, then fill, round half to even, clamp.
    new = region.float() if region.dtype != torch.float32 else region.clone()
    new.mul_(cat("keep_outline")).add_(cat("add_outline"))
    new.mul_(cat("keep_fill")).add_(cat("add_fill"))
    new = new.round_().clamp_(0, 255).to(region.dtype)
    flat.index_copy_(0, index, new)
    changed = (new != region).any(dim=-1).cpu().numpy()
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    out = np.zeros(B, dtype=np.int64)
    nonempty = np.asarray(sizes) > 0
    out[nonempty] = np.add.reduceat(changed.astype(np.int64), starts[nonempty])
    return out


@dataclass
class PassEvaluator:
    """`search.Evaluate` on a loaded model: (image, series, lattice index) jobs -> predictions, cover.

    Attributes:
        model: The loaded model.
        encoder: Its batch encoder with the run's defences.
        canvases: The canvas cache.
        rows: int [I] canvas rows of the cell's images (the search's image index is a position here).
        series: The run's series; `ranges` their clipped ranges on this model's canvas.
        n_intervals: Lattice intervals of every series.
        seed: The run's seed (keys the random placement).
        batch_size: Canvases per encoder batch.
        cache_dir: The mask cache; workers: the processes that solve missing masks, started once for every pass.
        n_encoded: Canvases encoded so far.
    """

    model: ZeroShotModel
    encoder: BatchEncoder
    canvases: CanvasSet
    rows: np.ndarray
    series: Sequence[Series]
    ranges: Sequence[SeriesRange]
    n_intervals: int
    seed: int
    batch_size: int
    cache_dir: str | None
    workers: MaskPool
    n_encoded: int = 0
    image_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.image_ids = [self.canvases.items[int(r)].image_id for r in self.rows]
        self._trues = np.array([self.canvases.items[int(r)].true_index for r in self.rows], dtype=np.int64)
        self._targets = np.array([s.target_index for s in self.series], dtype=np.int64)
        with warnings.catch_warnings():  # the memory-mapped cache is read-only; it is only ever copied from
            warnings.simplefilter("ignore", UserWarning)
            self._cache = torch.from_numpy(self.canvases.canvases)

    def __call__(self, image: np.ndarray, series: np.ndarray, lattice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_def = len(self.encoder.defences.labels)
        pred = np.full((len(image), n_def), -1, dtype=np.int64)
        cover = np.zeros(len(image), dtype=np.float64)
        # Jobs mask by mask (clean ones first, mask -1), a mask's canvases in image order; batches run across
        # masks, while the workers solve the masks the next batches need (read from the cache where there).
        attacked = series != CLEAN
        keys, inverse = np.unique(np.stack([series[attacked], lattice[attacked]], axis=1).reshape(-1, 2), axis=0,
                                  return_inverse=True)
        mask_of = np.full(len(image), -1, dtype=np.int64)
        mask_of[attacked] = inverse.reshape(-1)
        order = np.lexsort((image, mask_of))
        size = self.model.canvas_size
        masks = iter_masks(get_mask_requests(self.series, self.ranges, self.n_intervals,
                                             [(int(s), int(j)) for s, j in keys], size),
                           self.cache_dir, self.workers, MASK_BLOCK)
        unpacked: dict[int, tuple[AttackMask, MaskPixels]] = {}
        n_read = 0
        starts = list(range(0, len(order), self.batch_size))
        # A worker thread reads the next batch's canvases while this one is drawn and encoded (as eval's loop;
        # on the 2-core CPU the encoder also ran 1.7x faster with it than without).
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._load, image[order[:self.batch_size]])
            for n, b in enumerate(starts):
                x = pending.result()
                if n + 1 < len(starts):
                    pending = pool.submit(self._load, image[order[starts[n + 1]:starts[n + 1] + self.batch_size]])
                batch = order[b:b + self.batch_size]
                batch_mask = mask_of[batch]
                first = int(batch_mask[0])
                for k in [k for k in unpacked if k < first]:  # jobs are mask by mask: done with these
                    del unpacked[k]
                drawn: list[MaskPixels | None] = []
                offsets: list[np.ndarray | None] = []
                for i, k in zip(image[batch].tolist(), batch_mask.tolist()):
                    if k < 0:
                        drawn.append(None)
                        offsets.append(None)
                        continue
                    while n_read <= k:  # masks come in key order, as the jobs use them
                        mask = next(masks)
                        unpacked[n_read] = (mask, MaskPixels.of(mask))
                        n_read += 1
                    mask, px = unpacked[k]
                    drawn.append(px)
                    offsets.append(get_offsets(mask, [self.image_ids[i]], self.seed)[0] if px.random else None)
                if any(px is not None for px in drawn):
                    cover[batch] = composite_jobs(x, drawn, offsets) / (size[0] * size[1])
                pred[batch] = self._predict(x, image[batch], series[batch])
        return pred, cover

    def _load(self, image: np.ndarray) -> torch.Tensor:
        """[B, H, W, 3] canvases of the images on the device: uint8 on CUDA, float32 on the CPU (as eval). Torch
        gathers the rows and converts them without holding the GIL."""
        x = self._cache.index_select(0, torch.from_numpy(self.rows[image].astype(np.int64)))
        return x.to(self.model.device) if self.model.device.type == "cuda" else x.float()

    def _predict(self, x: torch.Tensor, image: np.ndarray, series: np.ndarray) -> np.ndarray:
        """int64 [B, n_defences] predictions of the canvases `x` (eval's `summarize_logits` argmax)."""
        logits = self.encoder.encode(x)
        self.n_encoded += len(x)
        targets = np.where(series >= 0, self._targets[np.maximum(series, 0)], -1)
        trues = self._trues[image]
        return np.stack([summarize_logits(logits[d], targets, trues)["pred_index"] for d in range(len(logits))],
                        axis=1)
