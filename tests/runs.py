"""Test helpers: run a task through the one driver, as the CLI does."""

from __future__ import annotations

from typing import Any

from typoattack.engine.run import RunResult, run_task
from typoattack.tasks.registry import get_task


def run_eval(cfg: Any, **kwargs: Any) -> RunResult:
    """`typoattack eval` on a config."""
    return run_task(get_task("eval"), cfg, **kwargs)


def run_real(cfg: Any, **kwargs: Any) -> RunResult:
    """`typoattack real` on a config."""
    return run_task(get_task("real"), cfg, **kwargs)


def run_stroop(cfg: Any, **kwargs: Any) -> RunResult:
    """`typoattack stroop` on a config."""
    return run_task(get_task("stroop"), cfg, **kwargs)


def run_report(run_dirs: Any, out: Any = None, progress: Any = None) -> tuple[Any, Any]:
    """`typoattack report`: (the first task's summary table, the report folder)."""
    from pathlib import Path

    from typoattack.engine.report import run_report as run
    from typoattack.tasks.registry import get_tasks

    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    folder, parts = run(dirs, None if out is None else Path(out), get_tasks(), progress)
    return parts[0][1].table, folder


def encode_canvases(model: Any, classifier: Any, canvases: Any) -> Any:
    """float32 [B, n_classes] logits on the CPU of uint8 [B, H, W, 3] canvases held on the host."""
    import numpy as np
    import torch

    from typoattack.backends.base import build_logits

    x = torch.from_numpy(np.array(canvases, dtype=np.uint8, copy=True)).to(model.device)
    return build_logits(model, classifier, x).cpu()
