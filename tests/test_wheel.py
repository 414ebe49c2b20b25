"""The wheel carries what a run needs: built here, installed without dependencies into a
temporary folder, and run from an empty directory (no repository files in reach)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The site folder the wheel was installed into (`pip install --no-deps --target`)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(work / "dist")],
                   check=True, capture_output=True, timeout=300)
    wheel, = (work / "dist").glob("typoattack-*.whl")
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return site


def _typoattack(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    code = "import sys; from typoattack.cli import app; sys.argv[0] = 'typoattack'; app()"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_wheel_holds_fonts_configs_vocabularies_images_and_weights(installed) -> None:
    assets = installed / "typoattack" / "assets"
    for path in ("fonts/DejaVuSans-Bold.ttf", "fonts/LICENSE-DejaVu.txt", "configs/ci.yaml", "configs/paper.yaml",
                 "configs/sweep-fraction.yaml", "configs/vocab/goh2021.yaml", "configs/vocab/imagenet-classes.yaml",
                 "imagenet-sample/labels.csv", "imagenet-sample/README.md", "imagenet_synsets.txt",
                 "imagenet_lemmas.txt", "model_configs/typoattack-reader-tiny.json",
                 "weights/typoattack-reader-tiny.safetensors"):
        assert (assets / path).is_file(), path
    assert len(list((assets / "imagenet-sample").glob("*.JPEG"))) == 500


def test_wheel_renders_and_evaluates_from_an_empty_directory(installed, tmp_path, cache_dir) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    image = installed / "typoattack" / "assets" / "imagenet-sample" / "n01440764_tench.JPEG"
    r = _typoattack(installed, empty, "render", "pizza", str(image), "--fraction", "0.07", "-o", "p.png")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (empty / "p.png").is_file() and "measured pixel cover" in r.stdout

    r = _typoattack(installed, empty, "eval", "--config", "ci", "--limit", "20", "--out", "run",
                    "--cache-dir", str(cache_dir))
    assert r.returncode == 0, r.stdout + r.stderr
    info = json.loads((empty / "run" / "run.json").read_text())
    assert info["complete"] is True
    # Data and vocabulary came from the installed wheel, not from this repository; the weights are
    # the shipped demo weights (identified by their content).
    site = str(installed.resolve())
    assert info["config"]["data"]["source"].startswith(site)
    assert info["vocab"]["path"].startswith(site)
    assert info["models"][0]["weights_id"].startswith("typoattack-reader-tiny|shipped:ci500|")
    records = pd.read_parquet(empty / "run" / "records.parquet")
    assert len(records) == 20 * (1 + 9 * 2 * 2) and records["image_id"].nunique() == 20
