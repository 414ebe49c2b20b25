"""Text masks for many conditions at once: read from a disk cache, the missing ones solved on all cores.

A mask depends on the font file's content, the word, fraction, placement, outline width and
canvas size (colours and opacity only matter when compositing), so that is the cache key. Files
are written under a temporary name and renamed, so a run killed mid-write leaves no half file;
an unreadable file is solved again and replaced.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from typoattack.config.types import Placement, RenderStyle
from typoattack.attack.render import AttackMask, TextLayers
from typoattack.attack.solver import create_attack_mask

# Bump when the solver or the drawing changes what a mask holds for the same inputs.
MASK_FORMAT = 1
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


def save_mask(mask: AttackMask, path: Path) -> None:
    """Write a mask as .npz atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    meta = {"word": mask.word, "fraction": mask.fraction, "placement": mask.placement.value,
            "canvas_size": list(mask.canvas_size), "font_size": mask.font_size, "coverage": mask.coverage,
            "copies": mask.copies, "phases": list(mask.phases), "y0": mask.layers.y0, "x0": mask.layers.x0}
    with open(tmp, "wb") as f:
        np.savez(f, outline_alpha=mask.layers.outline_alpha, fill_alpha=mask.layers.fill_alpha,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    os.replace(tmp, path)


def load_mask(path: Path, style: RenderStyle) -> AttackMask | None:
    """Read a mask written by `save_mask`, drawn in `style`; None when missing or unreadable."""
    try:
        with np.load(path) as data:
            meta = json.loads(data["meta"].tobytes().decode())
            layers = TextLayers(int(meta["y0"]), int(meta["x0"]), data["outline_alpha"].astype(np.float32),
                                data["fill_alpha"].astype(np.float32))
        return AttackMask(meta["word"], float(meta["fraction"]), Placement(meta["placement"]),
                          (int(meta["canvas_size"][0]), int(meta["canvas_size"][1])), float(meta["font_size"]),
                          float(meta["coverage"]), layers, style, int(meta["copies"]), tuple(meta["phases"]))
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        return None


def _solve(request: MaskRequest) -> AttackMask:
    return create_attack_mask(request.word, request.fraction, request.placement, request.style, request.canvas_size)


def create_attack_masks(requests: Sequence[MaskRequest], cache_dir: str | Path | None = None, workers: int = 0,
                        advance: Callable[[int], None] | None = None) -> list[AttackMask]:
    """Masks for `requests`, in order: from the cache where present, else solved and cached.

    Args:
        requests: The masks wanted.
        cache_dir: Cache root (masks go to `cache_dir/masks/`); None solves without caching.
        workers: Processes that solve missing masks (0 or 1: in this process).
        advance: Called with the number of masks done as they complete.

    Raises:
        RenderError: A mask cannot be drawn as asked (first such request in order).
    """
    advance = advance or (lambda n: None)
    folder = Path(cache_dir).expanduser() / MASKS_SUBDIR if cache_dir is not None else None
    masks: list[AttackMask | None] = []
    missing: list[int] = []
    for i, request in enumerate(requests):
        mask = load_mask(folder / f"{get_mask_key(request)}.npz", request.style) if folder else None
        masks.append(mask)
        if mask is None:
            missing.append(i)
        else:
            advance(1)
    if len(missing) >= _PARALLEL_MIN and workers > 1:
        # fork starts a worker in milliseconds (spawn re-imports the caller's modules, torch
        # included, for seconds); workers only draw text with PIL and numpy, never torch, so the
        # caller's thread pools that fork does not copy are never used there.
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        with ProcessPoolExecutor(max_workers=min(workers, len(missing)), mp_context=context) as pool:
            solved = pool.map(_solve, [requests[i] for i in missing], chunksize=8)
            for i, mask in zip(missing, solved):
                masks[i] = _store(mask, requests[i], folder)
                advance(1)
    else:
        for i in missing:
            masks[i] = _store(_solve(requests[i]), requests[i], folder)
            advance(1)
    return [m for m in masks if m is not None]


def _store(mask: AttackMask, request: MaskRequest, folder: Path | None) -> AttackMask:
    if folder is not None:
        save_mask(mask, folder / f"{get_mask_key(request)}.npz")
    return mask
