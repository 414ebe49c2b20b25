"""The vlm benchmark script runs on a few items and prints its two machine-readable lines."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_vlm_benchmark_prints_speed_up_and_agreement() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "vlm.py"), "--items", "4", "--repeats", "1",
                           "--batch-size", "4", "--threads", "1"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    speed = re.search(r"^speed-up \(likelihood vs generate loop\): (\d+\.\d\d)$", proc.stdout, re.M)
    agree = re.search(r"^agreement on parsed answers: (\d+\.\d|nan)% of (\d+)$", proc.stdout, re.M)
    assert speed and agree, proc.stdout
    assert float(speed.group(1)) > 0 and int(agree.group(2)) <= 8
