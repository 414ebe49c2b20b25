"""The on-disk cache of model-input canvases: each selected image decoded, converted to RGB and
resized once per (source, image list, canvas transform), then memory-mapped by every run."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from typoattack.data.sources import ImageItem, ImageSource
from typoattack.errors import OutputError
from typoattack.files import describe_write_error, expand_path, write_atomic, write_text_atomic
from typoattack.workers import die_with_parent

CanvasTransform = Callable[[Image.Image], Image.Image]
ProgressFn = Callable[[int], None]


@dataclass
class CanvasSet:
    """Model-input canvases of the selected images.

    Attributes:
        canvases: uint8 [N, H, W, 3] RGB, memory-mapped from the cache; rows of skipped images
            are zeros.
        items: The N images, in order.
        valid: bool [N]; False where the image could not be decoded.
        skipped: (image_id, reason) of each image that could not be decoded.
        path: The cache file.
    """

    canvases: np.ndarray
    items: list[ImageItem]
    valid: np.ndarray
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: str = ""

    def list_skipped(self, rows: Sequence[int] | np.ndarray) -> dict[str, str]:
        """image_id -> why, for each of `rows` (indices into `items`) that could not be decoded."""
        reasons = dict(self.skipped)
        return {self.items[int(r)].image_id: reasons.get(self.items[int(r)].image_id, "could not be decoded")
                for r in rows if not self.valid[int(r)]}


class _DecodeDataset:
    def __init__(self, source: ImageSource, indices: Sequence[int], transform: CanvasTransform) -> None:
        self.source, self.indices, self.transform = source, list(indices), transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[int, np.ndarray | None, str]:
        try:
            img = self.transform(self.source.open_image(self.indices[k]))
            return k, np.asarray(img, dtype=np.uint8), ""
        except Exception as e:  # one bad file must not stop a 50,000-image run
            return k, None, f"{type(e).__name__}: {e}".splitlines()[0][:200]


def _collate(batch: list[Any]) -> list[Any]:
    return batch


def get_canvas_cache_key(source: ImageSource, indices: Sequence[int], transform_key: str,
                         canvas_size: tuple[int, int] = (0, 0)) -> str:
    """Hash of (data source, image list, canvas transform) that names a canvas cache file."""
    h = hashlib.sha256()
    # surrogateescape: a file name that is not UTF-8 (read from disk as surrogates) hashes too.
    h.update(source.description.encode("utf-8", "surrogateescape"))
    h.update(transform_key.encode())
    h.update(repr(canvas_size).encode())
    for i in indices:
        item = source.items[i]
        h.update(f"{item.image_id}\t{item.true_index}\t{source.stamp(i)}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def prepare_canvases(source: ImageSource, indices: Sequence[int], transform: CanvasTransform,
                     transform_key: str, canvas_size: tuple[int, int], cache_dir: str | Path,
                     workers: int = 0, progress: ProgressFn | None = None) -> CanvasSet:
    """Decode, convert to RGB and resize each selected image once into a memory-mapped cache.

    A cache made earlier for the same source, image list and transform is reused as it is.

    Args:
        source: The image source.
        indices: Which items of the source to prepare.
        transform: PIL -> PIL canvas transform (resize + centre crop), output `canvas_size`.
        transform_key: A string that identifies the transform (part of the cache key).
        canvas_size: (height, width) of the canvases.
        cache_dir: Folder of the cache (a `canvases/` sub-folder is used).
        workers: Decoding processes (0 = in this process).
        progress: Called with the number of images decoded since the last call.

    Returns:
        The canvases, memory-mapped read-only.
    """
    key = get_canvas_cache_key(source, indices, transform_key, canvas_size)
    folder = expand_path(cache_dir) / "canvases"
    npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
    items = [source.items[i] for i in indices]
    if npy.is_file() and meta_path.is_file():
        if progress:
            progress(len(indices))
        return _load_canvas_cache(npy, meta_path, items)

    needed = len(items) * canvas_size[0] * canvas_size[1] * 3
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_temporaries(folder, key)
        valid = np.ones(len(items), bool)
        skipped: list[tuple[str, str]] = []
        dataset = _DecodeDataset(source, indices, transform)
        # An interrupted fill leaves no multi-GB file behind (write_atomic removes the temporary).
        write_atomic(npy, lambda tmp: _fill_canvases(tmp, dataset, items, canvas_size, workers, valid, skipped,
                                                     progress))
        meta = {"source": source.description, "transform": transform_key, "n": len(items),
                "image_ids": [it.image_id for it in items], "labels": [it.true_index for it in items],
                "skipped": skipped, "skipped_rows": [int(k) for k in np.flatnonzero(~valid)]}
        write_text_atomic(meta_path, json.dumps(meta))
    except OSError as e:
        raise OutputError(describe_write_error(e, folder, f"the canvas cache ({needed / 2**30:.2f} GiB)", needed)
                          ) from None
    return CanvasSet(np.load(npy, mmap_mode="r"), items, valid, skipped, str(npy))


def _load_canvas_cache(npy: Path, meta_path: Path, items: list[ImageItem]) -> CanvasSet:
    """Memory-map a finished cache file and its skipped-image list."""
    meta = json.loads(meta_path.read_text())
    valid = np.ones(len(items), bool)
    for k in meta["skipped_rows"]:
        valid[k] = False
    return CanvasSet(np.load(npy, mmap_mode="r"), items, valid, [tuple(s) for s in meta["skipped"]], str(npy))


def _fill_canvases(path: Path, dataset: _DecodeDataset, items: list[ImageItem], canvas_size: tuple[int, int],
                   workers: int, valid: np.ndarray, skipped: list[tuple[str, str]],
                   progress: ProgressFn | None) -> None:
    """Decode every image into a new uint8 [N, H, W, 3] .npy file at `path`; mark failures in
    `valid` (set False) and `skipped` (appended (image_id, reason))."""
    H, W = canvas_size
    # The file is held locked while it fills (another run's cleanup sees a live writer, whatever
    # its PID namespace) and its blocks are reserved first: a full disk is an error here, not a
    # SIGBUS when a page of the memory map is first written.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _lock(fd, blocking=True)
    try:
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(items), H, W, 3))
    except BaseException:
        os.close(fd)
        raise
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        _fill_rows(arr, dataset, items, (H, W), workers, valid, skipped, progress)
        arr.flush()
    finally:
        del arr
        os.close(fd)


def _fill_rows(arr: np.ndarray, dataset: _DecodeDataset, items: list[ImageItem], canvas_size: tuple[int, int],
               workers: int, valid: np.ndarray, skipped: list[tuple[str, str]], progress: ProgressFn | None) -> None:
    """Decode every image into its row of `arr` (uint8 [N, H, W, 3]), on `workers` processes that
    die with this one."""
    H, W = canvas_size
    if workers > 0:
        import torch.utils.data

        loader: Any = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=_collate,
                                                  worker_init_fn=die_with_parent)
    else:
        loader = ([dataset[k] for k in range(s, min(s + 16, len(dataset)))] for s in range(0, len(dataset), 16))
    for batch in loader:
        for k, canvas, error in batch:
            if canvas is not None and canvas.shape != (H, W, 3):
                canvas, error = None, f"canvas has shape {canvas.shape}, expected {(H, W, 3)}"
            if canvas is None:
                valid[k] = False
                skipped.append((items[k].image_id, error))
            else:
                arr[k] = canvas
        if progress:
            progress(len(batch))


def _lock(fd: int, blocking: bool) -> bool:
    """flock the file; False when another process holds it (non-blocking). True where flock is missing."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def _remove_orphaned_temporaries(folder: Path, key: str) -> None:
    """Delete half-written cache files whose writer no longer runs (e.g. after kill -9).

    A writer holds its temporary file locked (`flock`) until it renames it; the lock dies with the
    process, so a file that can be locked here is an orphan. This holds across containers and
    nodes sharing a cache folder, where a writer's PID means nothing."""
    for path in folder.glob(f".{key}.*.tmp"):  # named by typoattack.files.get_temporary_path
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False):
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
