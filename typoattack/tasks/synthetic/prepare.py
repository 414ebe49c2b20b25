"""`typoattack prepare`: fill the canvas cache of the images for each distinct model input
geometry, so later `eval` runs (any words, fractions, models of that geometry) only read it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from typoattack.backends.registry import get_backend
from typoattack.data.canvases import prepare_canvases
from typoattack.data.sources import open_image_source, select_subset
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.tasks.synthetic.config import SyntheticConfig


def run_prepare(cfg: SyntheticConfig, progress: ProgressReporter | None = None) -> list[dict[str, Any]]:
    """Fill the canvas cache for every distinct canvas transform of the config's models.

    Returns:
        One summary per canvas cache (path, size, images, skipped, seconds, GB).
    """
    progress = progress or NullProgress()
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    summaries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in cfg.models:
        g = get_backend(spec.backend).get_geometry(spec)
        if g.key in seen:
            continue
        seen.add(g.key)
        t0 = time.perf_counter()
        canvases = prepare_canvases(source, indices, g.transform, g.key, g.size, cfg.cache_dir, workers=cfg.workers,
                                    progress=progress.start(f"Canvases {g.size[0]}x{g.size[1]}", len(indices)))
        summaries.append({"cache": canvases.path, "canvas_size": list(g.size), "n_images": len(indices),
                          "n_skipped": len(canvases.skipped), "seconds": round(time.perf_counter() - t0, 2),
                          "gigabytes": round(Path(canvases.path).stat().st_size / 1e9, 3)})
    return summaries
