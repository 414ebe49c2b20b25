"""Text masks for many conditions at once: read from a disk cache, the missing ones solved on all cores.

A mask depends on the font file's content, the word, fraction, placement, outline width and
canvas size (colours and opacity only matter when compositing), so that is the cache key. Files
are written under a temporary name and renamed, so a run killed mid-write leaves no half file;
an unreadable file is solved again and replaced.

A mask is stored compactly, on disk and in memory alike: its layers cropped to the text's box,
alpha as uint8 (the renderer's alphas are 8-bit coverage / 255, so this is lossless: the
composited pixels are those of the solved mask), compressed (a few KB at 224 px). `MaskSet` holds
many masks that way and unpacks one when it is asked for; `MaskInfo` is a mask without its pixels.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np

from typoattack.config.types import Placement, RenderStyle
from typoattack.attack.render import AttackMask, TextLayers
from typoattack.attack.solver import create_attack_mask
from typoattack.errors import OutputError
from typoattack.files import describe_write_error
from typoattack.workers import die_with_parent

# Bump when the solver or the drawing changes what a mask holds for the same inputs, or the file layout.
# 2: alpha stored as uint8 in a compressed .npz (1: float32, uncompressed).
MASK_FORMAT = 2
MASKS_SUBDIR = "masks"
# Fewer missing masks than this are solved in this process (starting workers costs about a second).
_PARALLEL_MIN = 16


@dataclass(frozen=True)
class MaskRequest:
    """One mask to make: the arguments of `create_attack_mask`."""

    word: str
    fraction: float
    placement: Placement
    style: RenderStyle
    canvas_size: tuple[int, int]


@dataclass(frozen=True)
class MaskInfo:
    """A solved mask without its pixels (what run.json says of it).

    Attributes:
        word: The text.
        fraction: The requested share of canvas pixels, in (0, 1).
        placement: Where the text goes.
        canvas_size: (height, width) of the canvas.
        font_size: The solved font size in pixels.
        coverage: Share of canvas pixels under the mask, in [0, 1].
        copies: Number of random stamps (1 for fixed placements).
        phases: Sub-pixel phase (0-15) of each stamp.
    """

    word: str
    fraction: float
    placement: Placement
    canvas_size: tuple[int, int]
    font_size: float
    coverage: float
    copies: int
    phases: tuple[int, ...]

    @classmethod
    def of(cls, mask: AttackMask) -> MaskInfo:
        """The info of a solved mask."""
        return cls(mask.word, mask.fraction, mask.placement, mask.canvas_size, mask.font_size, mask.coverage,
                   mask.copies, mask.phases)


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def get_mask_key(request: MaskRequest) -> str:
    """Hex digest identifying the mask's pixels: font content, word, fraction, placement,
    outline width and canvas size."""
    font = Path(request.style.font)
    st = font.stat()
    fields = {
        "format": MASK_FORMAT,
        "font_sha256": _file_digest(str(font.resolve()), st.st_size, st.st_mtime_ns),
        "word": request.word,
        "fraction": repr(float(request.fraction)),
        "placement": Placement(request.placement).value,
        "outline_width": request.style.outline_width,
        "canvas_size": list(request.canvas_size),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def _pack_alpha(alpha: np.ndarray) -> np.ndarray:
    """uint8 [h, w] round(255 * alpha) of a float32 [h, w] alpha in [0, 1], or, should that lose
    anything, the float32 alpha itself (the renderer's alphas are k / 255, so it never does)."""
    packed = np.rint(alpha * 255).astype(np.uint8)
    return packed if np.array_equal(_unpack_alpha(packed), alpha) else alpha.astype(np.float32)


def _unpack_alpha(stored: np.ndarray) -> np.ndarray:
    """float32 [h, w] alpha in [0, 1] of a stored layer (uint8 0-255, or float32), computed as the
    renderer computes it from an 8-bit layer."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / np.float32(255)
    return stored.astype(np.float32)


def encode_mask(mask: AttackMask) -> bytes:
    """The bytes of a mask's file: a compressed .npz of its cropped layers (`_pack_alpha`) and its
    metadata (JSON); the style is not stored (colours are not part of the key)."""
    meta = {"word": mask.word, "fraction": mask.fraction, "placement": mask.placement.value,
            "canvas_size": list(mask.canvas_size), "font_size": mask.font_size, "coverage": mask.coverage,
            "copies": mask.copies, "phases": list(mask.phases), "y0": mask.layers.y0, "x0": mask.layers.x0}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, outline_alpha=_pack_alpha(mask.layers.outline_alpha),
                        fill_alpha=_pack_alpha(mask.layers.fill_alpha),
                        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return buffer.getvalue()


def _read(data: bytes) -> tuple[dict[str, Any], MaskInfo, np.ndarray, np.ndarray]:
    """(metadata, info, stored outline layer, stored fill layer) of `encode_mask` bytes; the zip's
    checksums are checked, so damaged data raises.

    Raises:
        OSError, ValueError, KeyError, TypeError, EOFError: The bytes are no readable mask.
    """
    with np.load(io.BytesIO(data)) as npz:
        meta = json.loads(npz["meta"].tobytes().decode())
        outline, fill = npz["outline_alpha"], npz["fill_alpha"]
    if outline.ndim != 2 or outline.shape != fill.shape:
        raise ValueError(f"mask layers of shapes {outline.shape} and {fill.shape}")
    info = MaskInfo(meta["word"], float(meta["fraction"]), Placement(meta["placement"]),
                    (int(meta["canvas_size"][0]), int(meta["canvas_size"][1])), float(meta["font_size"]),
                    float(meta["coverage"]), int(meta["copies"]), tuple(int(p) for p in meta["phases"]))
    return meta, info, outline, fill


def decode_mask(data: bytes, style: RenderStyle) -> AttackMask:
    """The mask of `encode_mask` bytes, drawn in `style` (layers float32, as solved).

    Raises:
        OSError, ValueError, KeyError, TypeError, EOFError: The bytes are no readable mask.
    """
    meta, info, outline, fill = _read(data)
    layers = TextLayers(int(meta["y0"]), int(meta["x0"]), _unpack_alpha(outline), _unpack_alpha(fill))
    return AttackMask(info.word, info.fraction, info.placement, info.canvas_size, info.font_size, info.coverage,
                      layers, style, info.copies, info.phases)


def _read_file(path: Path) -> tuple[bytes, MaskInfo] | None:
    """(the file's bytes, the mask's info), or None when the file is missing or unreadable."""
    try:
        data = path.read_bytes()
        return data, _read(data)[1]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _write_file(data: bytes, path: Path) -> None:
    """Write `data` to `path` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:  # a full disk leaves no temporary behind
        tmp.unlink(missing_ok=True)


def save_mask(mask: AttackMask, path: Path) -> None:
    """Write a mask as .npz (`encode_mask`) atomically."""
    _write_file(encode_mask(mask), path)


def load_mask(path: Path, style: RenderStyle) -> AttackMask | None:
    """Read a mask written by `save_mask`, drawn in `style`; None when missing or unreadable."""
    found = _read_file(path)
    return None if found is None else decode_mask(found[0], style)


class MaskSet(Sequence[AttackMask]):
    """Solved masks held compactly (as `encode_mask` bytes: a few KB each at 224 px), in request
    order; indexing unpacks one into a new `AttackMask` (float32 layers, about 8 bytes per pixel
    of its box), so keep it only while it is used."""

    def __init__(self, encoded: Sequence[bytes], infos: Sequence[MaskInfo], styles: Sequence[RenderStyle]) -> None:
        if not len(encoded) == len(infos) == len(styles):
            raise ValueError(f"{len(encoded)} masks, {len(infos)} infos and {len(styles)} styles")
        self._encoded = tuple(encoded)
        self._styles = tuple(styles)
        self.infos: tuple[MaskInfo, ...] = tuple(infos)
        """The masks without their pixels, in order."""

    @property
    def nbytes(self) -> int:
        """Bytes of the packed masks."""
        return sum(len(data) for data in self._encoded)

    def __len__(self) -> int:
        return len(self._encoded)

    @overload
    def __getitem__(self, index: int) -> AttackMask: ...

    @overload
    def __getitem__(self, index: slice) -> list[AttackMask]: ...

    def __getitem__(self, index: int | slice) -> AttackMask | list[AttackMask]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return decode_mask(self._encoded[index], self._styles[index])


def _solve(request: MaskRequest) -> tuple[bytes, MaskInfo]:
    """Solve one mask: (its `encode_mask` bytes, its info)."""
    # Not through create_attack_mask's in-memory cache: that would keep up to 1024 full masks alive
    # in this process, while the disk cache and MaskSet keep them packed.
    mask = create_attack_mask.__wrapped__(request.word, request.fraction, request.placement, request.style,
                                          request.canvas_size)
    return encode_mask(mask), MaskInfo.of(mask)


class MaskPool:
    """Processes that solve missing masks, started by the first call that needs them and kept for later
    calls until `close` (or the end of a `with` block): a caller that asks for masks many times (each pass
    of the threshold search) starts them once.

    Args:
        workers: Processes (0 or 1: every mask is solved in the caller's process).
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def map(self, requests: Sequence[MaskRequest]) -> Iterator[tuple[bytes, MaskInfo]]:
        """`_solve` of each request, in order; on the workers when there are enough requests."""
        if len(requests) < _PARALLEL_MIN or self.workers <= 1:
            return map(_solve, requests)
        if self._pool is None:
            # fork starts a worker in milliseconds (spawn re-imports the caller's modules, torch
            # included, for seconds); workers only draw text with PIL and numpy, never torch, so the
            # caller's thread pools that fork does not copy are never used there.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context(method),
                                             initializer=die_with_parent)
        return self._pool.map(_solve, requests, chunksize=max(1, min(8, len(requests) // (4 * self.workers))))

    def close(self) -> None:
        """Stop the workers (a later `map` starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> MaskPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _solve_all(requests: Sequence[MaskRequest], workers: int) -> Iterator[tuple[bytes, MaskInfo]]:
    """`_solve` of each request, in order, on `workers` processes started for them (and stopped after)."""
    with MaskPool(min(workers, len(requests))) as pool:
        yield from pool.map(requests)


def start_attack_masks(requests: Sequence[MaskRequest], cache_dir: str | Path | None = None,
                       workers: int | MaskPool = 0) -> Iterator[tuple[bytes, MaskInfo]]:
    """Start making the masks of `requests`: read the cache now, and on a `MaskPool` hand every missing mask
    to the workers now; the returned iterator gives each mask's (`encode_mask` bytes, info) in order, as
    it is solved, and caches it. So a caller can work on the first masks while the workers solve the
    rest.

    Args:
        requests: The masks wanted.
        cache_dir: Cache root (masks go to `cache_dir/masks/`); None solves without caching.
        workers: Processes that solve missing masks (0 or 1: in this process, as the iterator is read),
            or a running `MaskPool`.

    Raises (from the iterator):
        RenderError: A mask cannot be drawn as asked (at that mask).
        OutputError: The cache cannot be written.
    """
    folder = Path(cache_dir).expanduser() / MASKS_SUBDIR if cache_dir is not None else None
    paths = [folder / f"{get_mask_key(r)}.npz" if folder is not None else None for r in requests]
    found = [_read_file(path) if path is not None else None for path in paths]
    missing = [requests[i] for i, entry in enumerate(found) if entry is None]
    # On a pool every missing mask is submitted now, not when the iterator reaches it.
    solved = workers.map(missing) if isinstance(workers, MaskPool) else _solve_all(missing, workers)

    def entries() -> Iterator[tuple[bytes, MaskInfo]]:
        for entry, path in zip(found, paths, strict=True):
            if entry is None:
                entry = next(solved)
                if path is not None:
                    try:
                        _write_file(entry[0], path)
                    except OSError as e:
                        raise OutputError(describe_write_error(e, path.parent, "the mask cache")) from None
            yield entry

    return entries()


def create_attack_masks(requests: Sequence[MaskRequest], cache_dir: str | Path | None = None,
                        workers: int | MaskPool = 0,
                        advance: Callable[[int], None] | None = None) -> MaskSet:
    """Masks for `requests`, in order: from the cache where present, else solved and cached.

    Args:
        requests: The masks wanted.
        cache_dir: Cache root (masks go to `cache_dir/masks/`); None solves without caching.
        workers: Processes that solve missing masks (0 or 1: in this process), or a `MaskPool` to solve
            them on (kept running for the caller's next call).
        advance: Called with the number of masks done as they complete.

    Returns:
        The masks, packed (`MaskSet`): memory grows by a few KB per mask, whatever the vocabulary.

    Raises:
        RenderError: A mask cannot be drawn as asked (first such request in order).
    """
    advance = advance or (lambda n: None)
    entries = []
    for entry in start_attack_masks(requests, cache_dir, workers):
        entries.append(entry)
        advance(1)
    return MaskSet([data for data, _ in entries], [info for _, info in entries], [r.style for r in requests])
