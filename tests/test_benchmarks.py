"""Tests of the benchmark scripts' behaviour that does not need their hardware."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(tmp_path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path / "g")],
                          capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0]
    assert not (tmp_path / "g").exists()  # nothing was run


def test_masks_benchmark_reports_accuracy_columns() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "masks.py"), "--words", "12", "--workers", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith(("paper8", "random"))]
    assert [r[0] for r in rows] == ["paper8", "random"]
    for r in rows:
        assert int(r[1]) == 12 and float(r[2]) > 0 and r[5] == "100.0%" and int(r[6]) == 0


def test_threshold_benchmark_prints_its_line() -> None:
    """benchmarks/threshold.py on 4 images: the line benchmarks/README.md quotes, with numbers in range."""
    import re

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "threshold.py"), "--limit", "4", "--workers", "1"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(r"passes per pair: ([\d.]+)  time vs 13-point sweep: ([\d.]+)x  thresholds within one step of "
                      r"the sweep: ([\d.]+)%", proc.stdout)
    assert match, proc.stdout
    passes, ratio, within = map(float, match.groups())
    assert 1 <= passes <= 1 + 5 + 2 * 8 and ratio > 0 and 0 <= within <= 100
