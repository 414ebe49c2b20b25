"""The evaluation loop of synthetic attacks: attacked canvases in batches on the model's device ->
logits -> records (shared by `eval`, whose cells it evaluates, and `find-heads`, whose search measures
accuracy with it).

Jobs run condition by condition (clean first), so a batch holds few conditions and each mask is
blended onto many canvases at once; the next batch is read from the canvas cache while this one
runs. The encoder halves its sub-batch after a CUDA out-of-memory error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from typoattack.attack.compose import DeviceMask, composite_batch, get_offsets
from typoattack.backends.base import ZeroShotModel
from typoattack.constants import TOP_K
from typoattack.data.canvases import CanvasSet
from typoattack.defences.apply import BatchEncoder
from typoattack.records import Condition, build_records, select_condition_images


def evaluate_shard(loaded: ZeroShotModel, encoder: BatchEncoder, canvases: CanvasSet, rows: np.ndarray,
                   conditions: Sequence[Condition], device_masks: Sequence[DeviceMask], seed: int, batch_size: int,
                   advance: Callable[[int], None]) -> pd.DataFrame:
    """Classify the clean canvas and every attacked canvas of the given rows under every defence
    of `encoder` (the attacked canvases are drawn once; each defence changes only its side).

    Args:
        loaded: The model.
        encoder: Logits of a batch on the model's device.
        canvases: The canvas cache.
        rows: int [n] rows of `canvases` to evaluate.
        conditions: The attack conditions, with `device_masks` their masks on the device.
        device_masks: One uploaded mask per condition.
        seed: Run seed (keys the random placement).
        batch_size: Jobs (image x condition) per batch.
        advance: Called with the number of jobs done.

    Returns:
        The records of the rows (RECORD_COLUMNS), image by image, then defence by defence (in
        config order), clean first. An image is shown under the conditions `select_condition_images`
        picks for it (every one, but a pseudo-word's: one per image).
    """
    n_rows = len(rows)
    ids = [canvases.items[int(r)].image_id for r in rows]
    trues = np.array([canvases.items[int(r)].true_index for r in rows], dtype=np.int64)
    shown = np.vstack([np.ones((1, n_rows), dtype=bool), select_condition_images(conditions, ids, trues, seed)])
    job_cond, job_pos = np.nonzero(shown)  # condition-major: 0 = clean, k = conditions[k - 1]; image position
    targets = np.array([-1] + [c.target_index for c in conditions], dtype=np.int64)
    # Random stamp positions of the images each condition is shown to (the others' rows are never read).
    offsets = [None] + [_get_shown_offsets(device_masks, k, ids, shown[k + 1], seed) for k in range(len(conditions))]
    covers = np.zeros(len(job_cond), np.float64)
    labels = encoder.defences.labels
    outcomes: list[list[dict[str, np.ndarray]]] = [[] for _ in labels]
    for start, x in _iter_batches(canvases, rows, job_pos, batch_size, loaded.device):
        stop = start + len(x)
        cond = job_cond[start:stop]
        covers[start:stop] = _draw_attacks(x, cond, job_pos[start:stop], device_masks, offsets)
        logits = encoder.encode(x)
        for d in range(len(labels)):
            outcomes[d].append(summarize_logits(logits[d], targets[cond], trues[job_pos[start:stop]]))
        advance(stop - start)
    frames = [build_records(loaded.spec, ids, trues, conditions, job_cond, job_pos, covers, outcomes[d], labels[d])
              for d in range(len(labels))]
    if len(frames) == 1:
        return frames[0]
    # Each frame is image-major with the same rows per image: interleave them image by image.
    n = len(frames[0])
    image = np.sort(job_pos)  # each frame's image position, row by row
    defence = np.repeat(np.arange(len(frames)), n)
    row = np.tile(np.arange(n), len(frames))
    order = np.lexsort((row, defence, np.tile(image, len(frames))))
    return pd.concat(frames, ignore_index=True).iloc[order].reset_index(drop=True)


def _get_shown_offsets(device_masks: Sequence[DeviceMask], k: int, ids: Sequence[str], shown: np.ndarray,
                       seed: int) -> np.ndarray | None:
    """int [n, copies, 2] random-placement stamp offsets of condition k for the images it is shown to (zeros
    for the others); None for a fixed placement. A condition shown to no image is not bound to the device."""
    if not shown.any():
        return None
    mask = device_masks[k].mask
    picked = np.flatnonzero(shown)
    if len(picked) == len(ids):
        return get_offsets(mask, list(ids), seed)
    some = get_offsets(mask, [ids[int(i)] for i in picked], seed)
    if some is None:
        return None
    out = np.zeros((len(ids), *some.shape[1:]), dtype=some.dtype)
    out[picked] = some
    return out


def _iter_batches(canvases: CanvasSet, rows: np.ndarray, job_pos: np.ndarray, batch_size: int,
                  device: torch.device) -> Iterator[tuple[int, torch.Tensor]]:
    """(first job, [B, H, W, 3] clean canvases of jobs first..first+B on `device`, values 0-255).

    A worker thread reads the next batch while the caller works on this one. On CUDA the batch
    is uint8: each distinct image is copied from the cache once into pinned memory, sent to the
    device and repeated there per job. On the CPU it is float32, converted straight from the
    cache in runs of consecutive rows: that conversion is the one the encoder would make anyway,
    so reading a batch costs no extra pass over it.
    """
    with warnings.catch_warnings():
        # The memory-mapped cache is read-only; it is only ever copied from.
        warnings.simplefilter("ignore", UserWarning)
        cache = torch.from_numpy(canvases.canvases)
    load = _load_for_cuda if device.type == "cuda" else _load_for_cpu
    starts = list(range(0, len(job_pos), batch_size))
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, cache, rows[job_pos[:batch_size]])
        for i, start in enumerate(starts):
            x = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(load, cache, rows[job_pos[starts[i + 1]:starts[i + 1] + batch_size]])
            yield start, x if device.type != "cuda" else x[0].to(device, non_blocking=True)[x[1].to(device)]


def _load_for_cpu(cache: torch.Tensor, job_rows: np.ndarray) -> torch.Tensor:
    """float32 [B, H, W, 3] copies of cache rows `job_rows` (int [B]); torch copies without the GIL."""
    x = torch.empty((len(job_rows), *cache.shape[1:]), dtype=torch.float32)
    breaks = np.flatnonzero(np.diff(job_rows) != 1) + 1
    for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(job_rows)]):
        x[a:b].copy_(cache[int(job_rows[a]):int(job_rows[a]) + (b - a)])
    return x


def _load_for_cuda(cache: torch.Tensor, job_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(pinned uint8 [U, H, W, 3] distinct cache rows of the jobs, int64 [B] index of each job's row)."""
    unique, inverse = np.unique(job_rows, return_inverse=True)
    host = cache.index_select(0, torch.from_numpy(unique.astype(np.int64))).pin_memory()
    return host, torch.from_numpy(inverse.astype(np.int64))


def _draw_attacks(x: torch.Tensor, cond: np.ndarray, pos: np.ndarray, device_masks: Sequence[DeviceMask],
                  offsets: Sequence[np.ndarray | None]) -> np.ndarray:
    """Composite each job's mask onto its canvas in `x` (in place).

    Args:
        x: uint8 or float32 [B, H, W, 3] canvases of the batch's jobs.
        cond: int [B] job conditions (0 = clean, drawn on nothing).
        pos: int [B] job image positions (index the random-placement offsets).
        device_masks: The conditions' masks.
        offsets: Per condition, int [n, copies, 2] stamp offsets (None for fixed placements).

    Returns:
        float64 [B] measured pixel cover of each job (0 for clean jobs).
    """
    covers = np.zeros(len(x), np.float64)
    for k in np.unique(cond[cond > 0]):
        sel = np.flatnonzero(cond == k)  # contiguous: jobs are condition-major
        a, b = int(sel[0]), int(sel[-1]) + 1
        off = offsets[k]
        off_rows = None if off is None else off[pos[a:b]]
        changed = composite_batch(x[a:b], device_masks[k - 1], off_rows).cpu().numpy()
        covers[a:b] = changed / (x.shape[1] * x.shape[2])
    return covers


def summarize_logits(logits: torch.Tensor, target_index: np.ndarray, true_index: np.ndarray) -> dict[str, np.ndarray]:
    """Reduce logits to what a record keeps.

    Args:
        logits: float32 [B, C], on any device (the reduction runs there; small results come back).
        target_index: int [B], the attack's class (-1 for the clean condition).
        true_index: int [B], the ground-truth class.

    Returns:
        pred_index int64 [B]; pred_top5 int64 [B, 5]; p_target float32 [B] (softmax probability
        of the target, NaN where there is none); p_true float32 [B].
    """
    device = logits.device
    probs = torch.softmax(logits.float(), dim=1)
    top = torch.topk(logits, k=min(TOP_K, logits.shape[1]), dim=1).indices
    rows = torch.arange(len(logits), device=device)
    target = torch.as_tensor(np.asarray(target_index, dtype=np.int64), device=device)
    true = torch.as_tensor(np.asarray(true_index, dtype=np.int64), device=device)
    p_target = probs[rows, target.clamp(min=0)].float().cpu().numpy()
    p_target[np.asarray(target_index) < 0] = np.nan
    p_true = probs[rows, true].float().cpu().numpy()
    top = top.cpu().numpy().astype(np.int64)
    return {"pred_index": top[:, 0].copy(), "pred_top5": top, "p_target": p_target, "p_true": p_true}
