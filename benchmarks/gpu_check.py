"""`make gpu-check`: every figure that needs a CUDA GPU, in one script of at most about 8 minutes.

On a CUDA machine it
  1. runs the tests marked `cuda` (compositing, encoding and autocast on the GPU against the CPU);
  2. runs the CI config (`--config ci`) on the CPU, then on CUDA in fp32 and in bf16, and reports
     how many of the 18,500 predictions each GPU run shares with the CPU run;
  3. runs the ViT-B-32 and ViT-L-14 bf16 pipeline benchmarks (10,000 synthetic canvases x 5 words,
     random weights) and reports images/s and MFU;
  4. starts a run with a batch size far too large for the card and checks that out-of-memory
     halving brings it down and the run completes;
and prints one summary table (also written to --out as gpu-check.md). Without CUDA it says so in
one line and exits 0.

    python benchmarks/gpu_check.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The tests force the CPU unless told otherwise; these commands must see the GPU.
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("GPU_CHECK_DEVICES", "0"), "PYTHONUNBUFFERED": "1"}


def run(cmd: list[str], timeout: int) -> tuple[int, str, float]:
    """Run a command, echo its output, return (exit code, output, seconds)."""
    print(f"$ {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
        code, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, f"{e.stdout or ''}{e.stderr or ''}\n[timed out after {timeout} s]"
    seconds = time.perf_counter() - t0
    print(out[-3000:], flush=True)
    return code, out, seconds


def typoattack(*args: str, timeout: int = 240) -> tuple[int, str, float]:
    return run([str(BIN / "typoattack"), "eval", *args], timeout)


def agreement(a: Path, b: Path) -> str:
    """Share of identical predictions between two runs' records (joined on image and condition)."""
    import pandas as pd

    key = ["image_id", "word", "fraction", "placement", "font", "fill", "outline"]
    left, right = pd.read_parquet(a / "records.parquet"), pd.read_parquet(b / "records.parquet")
    joined = left.merge(right, on=key, suffixes=("_a", "_b"))
    same = int((joined["pred_index_a"] == joined["pred_index_b"]).sum())
    return f"{same:,} / {len(joined):,} ({100 * same / max(len(joined), 1):.2f}%)"


def parse_bench(out: str) -> str:
    enc = re.search(r"1\. encoder only:\s+([\d.]+)", out)
    e2e = re.search(r"2\. typoattack eval:\s+([\d.]+)", out)
    mfu = re.search(r"MFU encoder only: ([\d.]+)%\s+MFU end to end: ([\d.]+)%", out)
    peak = re.search(r"measured bf16 matmul: (\d+) TFLOP/s", out)
    if not (enc and e2e):
        return "failed (see log)"
    text = f"encoder {float(enc[1]):,.0f} img/s, eval {float(e2e[1]):,.0f} img/s"
    if mfu and peak:
        text += f", MFU {mfu[1]}% / {mfu[2]}% of {peak[1]} TFLOP/s"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where gpu-check.md and the runs go")
    parser.add_argument("--quick", action="store_true", help="fewer synthetic images (a smoke test of this script)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA GPU is visible on this machine; nothing to check (run it where `nvidia-smi` lists one).")
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="typoattack-gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    cache = str(out / "cache")
    name = torch.cuda.get_device_name(0)
    n_synth = 1000 if args.quick else 10_000
    rows: list[tuple[str, str, str]] = []

    code, text, secs = run([str(BIN / "python"), "-m", "pytest", "-q", "-m", "cuda", "tests"], 240)
    summary = (re.findall(r"(\d+ passed[^\n]*)", text) or ["no summary"])[-1]
    rows.append(("tests marked cuda", summary, f"{secs:.0f} s"))

    runs = {}
    for label, flags in (("cpu", ["--device", "cpu"]), ("cuda fp32", ["--device", "cuda", "--precision", "fp32"]),
                         ("cuda bf16", ["--device", "cuda", "--precision", "bf16"])):
        folder = out / label.replace(" ", "-")
        code, text, secs = typoattack("--config", "ci", "--out", str(folder), "--cache-dir", cache, "--overwrite",
                                      "--workers", "8", *flags)
        runs[label] = folder if code == 0 else None
        ips = json.loads((folder / "run.json").read_text()).get("images_per_second") if code == 0 else None
        vs_cpu = agreement(runs["cpu"], folder) if code == 0 and runs["cpu"] and label != "cpu" else "-"
        rows.append((f"CI config, {label}", f"exit {code}; {ips} img/s; predictions equal to CPU: {vs_cpu}",
                     f"{secs:.0f} s"))

    for label, model_args, batch in (("ViT-B-32", ["--model", "ViT-B-32", "--pretrained", "seed:0"], "1024"),
                                     ("ViT-B-32 via transformers (CLIPModel, SDPA)", ["--random-hf", "clip-vit-b-32"],
                                      "1024"),
                                     ("ViT-L-14", ["--model", "ViT-L-14", "--pretrained", "seed:0"], "512")):
        code, text, secs = run([str(BIN / "python"), "benchmarks/pipeline.py", *model_args,
                                "--synthetic", str(n_synth), "--words", "5", "--device", "cuda", "--precision", "bf16",
                                "--batch-size", batch, "--skip-naive"], 300)
        rows.append((f"pipeline {label} bf16, {n_synth:,} x 5 words", parse_bench(text), f"{secs:.0f} s"))
    code, text, secs = run([str(BIN / "python"), "benchmarks/vlm.py", "--device", "cuda", "--precision", "bf16"], 300)
    rows.append(("VLM likelihood scoring (tiny LLaVA, bf16)", (re.findall(r"items/s[^\n]*", text) or
                                                               re.findall(r"speed-up[^\n]*", text) or ["-"])[-1],
                 f"{secs:.0f} s"))

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pipeline import write_synthetic

    synthetic = out / "synthetic"
    write_synthetic(synthetic, n_synth // 2, 256, seed=0)
    code, text, secs = typoattack("--data", str(synthetic), "--model", "ViT-L-14", "--pretrained", "seed:0",
                                  "--vocab", "goh2021", "--fraction", "0.07", "--templates", "simple",
                                  "--batch-size", "1000000", "--chunk-size", "100000", "--device", "cuda",
                                  "--precision", "bf16", "--workers", "8", "--out", str(out / "oom"),
                                  "--cache-dir", cache, "--overwrite", timeout=300)
    lowered = re.findall(r"encoder batch size lowered to (\d+)", text)
    verdict = "completed" if code == 0 else f"exit {code}"
    rows.append((f"OOM halving (ViT-L-14 bf16, {n_synth // 2:,} images x 10, batch 1,000,000)",
                 f"{verdict}; halved {len(lowered)} times to {lowered[-1] if lowered else '-'}", f"{secs:.0f} s"))

    table = [f"GPU check on {name} (torch {torch.__version__}), {time.strftime('%Y-%m-%d')}", "",
             "| check | result | wall |", "|---|---|---|"]
    table += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    text = "\n".join(table) + "\n"
    (out / "gpu-check.md").write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
