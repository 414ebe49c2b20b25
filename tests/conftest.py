"""Shared fixtures: the shipped sample images, a tiny open_clip model and its checkpoint file."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # tests run on the CPU, as in CI

import pytest
import torch
from typer import rich_utils

from typoattack.config.types import ModelSpec, Precision
from typoattack.constants import SAMPLE_DIR
from typoattack.backends.open_clip.model import TINY_MODEL, create_model



@pytest.fixture(autouse=True, scope="session")
def _wide_rich_output() -> None:
    # Rich would wrap long lines and break string assertions on CLI output.
    rich_utils.MAX_WIDTH = 3000
    rich_utils.FORCE_TERMINAL = False


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 500 ImageNet images shipped in the package (read-only)."""
    if not (SAMPLE_DIR / "labels.csv").is_file():
        pytest.fail(f"the shipped sample images are missing at {SAMPLE_DIR}")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def tiny_model():
    """The typoattack-tiny model with random weights from seed 0, on the CPU."""
    return create_model(ModelSpec(TINY_MODEL, "seed:0"), torch.device("cpu"), Precision.FP32)


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    """A checkpoint file of the tiny model, saved the way users save open_clip weights."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(tiny_model.model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """A cache folder shared by the tests of one session (canvases, classifiers)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: tiny models' operations are far too small to share between threads,
    and on a busy machine two threads make each of them many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs for one test module (skipped where Ray is not installed)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
