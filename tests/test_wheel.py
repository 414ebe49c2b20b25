"""The wheel carries what a run needs: built here, installed without dependencies into a
temporary folder, and run from an empty directory (no repository files in reach). Installing it
into an environment that already holds in-range dependencies (a researcher's own torch build)
installs nothing else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The typoattack wheel built from a copy of this checkout (`pip wheel --no-deps`)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    subprocess.run([*PIP, "-q", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(work / "dist")],
                   check=True, capture_output=True, timeout=300)
    built, = (work / "dist").glob("typoattack-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The site folder the wheel was installed into (`pip install --no-deps --target`)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run([*PIP, "-q", "install", "--no-deps", "--target", str(site), str(wheel)],
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
                 "weights/typoattack-reader-tiny.safetensors", "class_sets/clip_prompts.json",
                 "class_sets/README.md", "babel/babel_imagenet.json.gz", "babel/zeroshot_templates.json",
                 "babel/README.md", "babel/LICENSE-clip_benchmark.txt"):
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


def _get_lower_bounds() -> dict[str, str]:
    """Each dependency in pyproject.toml at the lowest version its range allows (its `>=` bound)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lows = {}
    for req in map(Requirement, deps):
        low, = (s.version for s in req.specifier if s.operator == ">=")
        lows[canonicalize_name(req.name)] = low
    return lows


def _create_fake_environment(path: Path, versions: dict[str, str]) -> Path:
    """A bare virtual environment in which pip sees `versions` as installed: each package is only a
    `*.dist-info` folder (METADATA and INSTALLER, no code, no dependencies of its own).

    Returns:
        The environment's Python interpreter.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    site, = path.glob("lib/python3*/site-packages")
    for name, version in versions.items():
        info = site / f"{canonicalize_name(name).replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "INSTALLER").write_text("pip\n")
    return path / "bin" / "python"


def _create_fake_wheel(folder: Path, name: str, version: str) -> Path:
    """A wheel that holds only its metadata (what pip reads to resolve)."""
    stem = f"{name}-{version}"
    wheel = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{stem}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{stem}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{stem}.dist-info/RECORD", "")
    return wheel


def _plan_install(python: Path, links: Path, report: Path) -> list[str]:
    """What `pip install typoattack` would install into the environment of `python`, from `links`
    only (no index, no pip configuration): the names in pip's `--dry-run --report`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no machine-wide index, find-links or constraint
    r = subprocess.run([*PIP, "--python", str(python), "install", "--dry-run", "--report", str(report),
                        "--no-index", "--find-links", str(links), "typoattack"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return sorted(item["metadata"]["name"] for item in json.loads(report.read_text())["install"])


@pytest.fixture(scope="module")
def links(wheel, tmp_path_factory) -> Path:
    """A find-links folder with the typoattack wheel and a (metadata-only) torch 2.14.1 wheel, so
    that pip could replace an installed torch if the ranges asked it to."""
    folder = tmp_path_factory.mktemp("links")
    shutil.copy(wheel, folder)
    _create_fake_wheel(folder, "torch", "2.14.1")
    return folder


@pytest.mark.parametrize("torch_version", ["2.14.0", "2.14.1+cu128"])
def test_wheel_install_keeps_an_installed_torch_in_range(links, tmp_path, torch_version) -> None:
    versions = {**_get_lower_bounds(), "torch": torch_version}
    python = _create_fake_environment(tmp_path / "env", versions)
    assert _plan_install(python, links, tmp_path / "report.json") == ["typoattack"]


def test_wheel_install_replaces_a_torch_out_of_range(links, tmp_path) -> None:
    # The control: the fake environment is really what pip resolves against.
    versions = {**_get_lower_bounds(), "torch": "2.13.0+cpu"}
    python = _create_fake_environment(tmp_path / "env", versions)
    assert _plan_install(python, links, tmp_path / "report.json") == ["torch", "typoattack"]
