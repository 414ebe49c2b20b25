"""Processes and file systems: no worker outlives a killed run, a full or read-only cache is one
line, and a shared cache keeps another node's live temporary files."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from typoattack.data import canvases

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from typoattack.cli import app; app()", *args]


def _eval_args(sample_dir: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(sample_dir), "--model", "typoattack-tiny", "--pretrained", "seed:0",
            "--vocab", str(ROOT / "configs/vocab/goh2021.yaml"), "--fraction", "0.07", "--templates", "simple",
            "--device", "cpu", "--cache-dir", str(cache), "--out", str(out), *extra]


def _children(pid: int) -> set[int]:
    """PIDs whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux's")
def test_no_worker_survives_a_killed_run(sample_dir, tmp_path) -> None:
    proc = subprocess.Popen(_cli(*_eval_args(sample_dir, tmp_path / "out", tmp_path / "cache", "--workers", "2")),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 240, set()
    while time.monotonic() < deadline and proc.poll() is None and not workers:
        workers = {c for c in _children(proc.pid) if _alive(c)}
        time.sleep(0.02)
    assert workers, "the run never started worker processes"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(5)
    assert [pid for pid in workers if _alive(pid)] == []


def test_a_live_temporary_of_another_node_is_kept(tmp_path) -> None:
    key = "abc"
    live, orphan = tmp_path / f".{key}.npy.4242424.tmp", tmp_path / f".{key}.npy.1.tmp"
    live.write_bytes(b"x")
    orphan.write_bytes(b"y")
    fd = os.open(live, os.O_RDWR)  # a writer this process cannot see by PID (another container)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        canvases._remove_orphaned_temporaries(tmp_path, key)
        assert live.exists() and not orphan.exists()
    finally:
        os.close(fd)
    canvases._remove_orphaned_temporaries(tmp_path, key)
    assert not live.exists()


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 3 MB tmpfs (root only; skipped where mounting is not allowed)."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield where
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_cache_disk_is_one_line(sample_dir, tmp_path, small_tmpfs) -> None:
    result = subprocess.run(_cli(*_eval_args(sample_dir, tmp_path / "out", small_tmpfs, "--workers", "0")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "disk is full" in result.stderr
    assert f"in {small_tmpfs}" in " ".join(result.stderr.split())
    assert not [p for p in small_tmpfs.rglob("*") if p.name.endswith(".tmp")]


def test_a_cache_dir_that_is_a_file_is_one_line(sample_dir, tmp_path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    result = subprocess.run(_cli(*_eval_args(sample_dir, tmp_path / "out", cache, "--workers", "0", "--limit", "4")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "a file stands where a folder is needed" in " ".join(result.stderr.split())


def test_a_read_only_cache_is_one_line(sample_dir, tmp_path) -> None:
    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = subprocess.run(_cli(*_eval_args(sample_dir, tmp_path / "out", where, "--workers", "0",
                                                 "--limit", "4")), capture_output=True, text=True, timeout=600)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "the folder is read-only" in " ".join(result.stderr.split())


def test_odd_file_names_and_spellings(sample_dir, tmp_path) -> None:
    """A file name that is not UTF-8 is evaluated (its id spells the odd bytes); `./a.jpg` beside
    `a.jpg` is one file listed twice."""
    import pandas as pd

    data = tmp_path / "data"
    (data / "n01440764").mkdir(parents=True)
    source = sample_dir / "n01440764_tench.JPEG"
    (data / "n01440764" / os.fsdecode(b"caf\xe9.JPEG")).write_bytes(source.read_bytes())  # Latin-1: not UTF-8
    (data / "n01440764" / "b.JPEG").write_bytes(source.read_bytes())
    result = subprocess.run(_cli(*_eval_args(data, tmp_path / "out", tmp_path / "cache", "--workers", "0")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ids = set(pd.read_parquet(tmp_path / "out" / "records.parquet")["image_id"])
    assert ids == {"n01440764/b.JPEG", "n01440764/caf\\xe9.JPEG"}
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "b.jpg").write_bytes(source.read_bytes())
    (flat / "labels.csv").write_text("file,class_index\nb.jpg,0\n./b.jpg,0\n")
    result = subprocess.run(_cli(*_eval_args(flat, tmp_path / "out2", tmp_path / "cache", "--workers", "0")),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "lists 1 file(s) twice" in " ".join(result.stderr.split())


def test_render_into_a_folder_or_an_unknown_format_is_one_line(sample_dir, tmp_path) -> None:
    image = str(sample_dir / "n01440764_tench.JPEG")
    for output, expected in ((tmp_path, "is a folder"), (tmp_path / "x.xyz", "unknown image format")):
        result = subprocess.run(_cli("render", "pizza", image, "-o", str(output)), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 1 and expected in result.stderr and "Traceback" not in result.stderr


def test_a_yaml_alias_bomb_is_one_line(tmp_path) -> None:
    from typoattack.config.parsing import count_expanded_values
    from typoattack.errors import ConfigError
    from typoattack.tasks.synthetic.config import load_synthetic_config

    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    names = "abcdefghi"
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("vocab: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="alias bomb"):
        load_synthetic_config(bomb, {})
    shared = [1, 2]
    assert count_expanded_values({"a": shared, "b": [shared, shared]}) == 1 + 2 + 3 + (1 + 3 + 3) + 0
