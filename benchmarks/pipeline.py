"""Throughput of typoattack's pipeline against its encoder and against a naive loader.

In one process, on the same images, model and batch size, it measures:
  1. encoder only: canvases already in memory on the device; normalise + encode_image + logits;
  2. `typoattack eval` end to end from a warm canvas cache (model creation, cached classifier,
     mask solving, compositing, encoding, records and tables included);
  3. a naive baseline: a DataLoader that, for every (image, word) pair, decodes the JPEG, resizes
     and crops it with open_clip's preprocess, draws the word with the CPU reference renderer
     (PIL-rendered mask, numpy blend), normalises, then runs the same model;
and prints the ratios 2/1 and 2/3, the top-1 agreement of 2 and 3, the peak resident memory and
the device. Throughputs count encoder passes (images/s); eval also encodes each clean image once.

    python benchmarks/pipeline.py                                   # tiny model, 500 images, 9 words
    python benchmarks/pipeline.py --model ViT-B-32 --limit 100 --words 3
    python benchmarks/pipeline.py --model ViT-L-14 --synthetic 10000 --words 5 --device cuda \\
        --precision bf16 --skip-naive                               # GPU figures with MFU
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typoattack.data.classes import IMAGENET_CLASSNAMES  # noqa: E402
from typoattack.backends.base import build_logits, get_classifier, resolve_device  # noqa: E402
from typoattack.backends.registry import get_backend  # noqa: E402
from typoattack.config.parsing import load_templates  # noqa: E402
from typoattack.config.types import ModelSpec, Placement, Precision  # noqa: E402
from typoattack.data.vocab import load_vocab  # noqa: E402
from typoattack.data.canvases import prepare_canvases  # noqa: E402
from typoattack.data.sources import open_image_source, select_subset  # noqa: E402
from typoattack.constants import SAMPLE_DIR  # noqa: E402
from typoattack.attack.render import apply_attack  # noqa: E402
from typoattack.attack.solver import create_attack_mask  # noqa: E402
from typoattack.defences.apply import resolve_batch_size  # noqa: E402
from typoattack.engine.run import run_task  # noqa: E402
from typoattack.tasks.registry import get_task  # noqa: E402
from typoattack.tasks.synthetic.config import load_synthetic_config  # noqa: E402

# Image-encoder GFLOP per image (open_clip docs/model_profile.csv, FlopCounterMode = 2 x MAC).
IMAGE_GFLOP = {"ViT-B-32": 8.82, "ViT-B-16": 35.13, "RN50x4": 42.56, "ViT-L-14": 162.03, "ViT-L-14-336": 381.92}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_encoder(loaded, classifier, canvases: np.ndarray, batch_size: int, passes: int) -> float:
    """Images/s of normalise + encode_image + logits on canvases already on the device, timed over
    `passes` passes over the canvases (as many encoder passes as the eval call makes)."""
    x = torch.from_numpy(np.array(canvases)).to(loaded.device)  # a writable copy of the memmap rows
    build_logits(loaded, classifier, x[:batch_size])  # warm-up
    _sync(loaded.device)
    t0 = time.perf_counter()
    for _ in range(passes):
        for start in range(0, len(x), batch_size):
            build_logits(loaded, classifier, x[start:start + batch_size]).argmax(1)
    _sync(loaded.device)
    return passes * len(x) / (time.perf_counter() - t0)


class NaivePairs(torch.utils.data.Dataset):
    """One item per (image, word): decode, resize, solve the mask and draw; nothing is reused."""

    def __init__(self, source, indices, conditions, loaded, style, seed: int) -> None:
        self.source, self.indices, self.conditions = source, indices, conditions
        self.transform, self.canvas_size = loaded.geometry.transform, loaded.canvas_size
        self.style, self.seed = style, seed

    def __len__(self) -> int:
        return len(self.indices) * len(self.conditions)

    def __getitem__(self, k: int) -> torch.Tensor:
        i, c = divmod(k, len(self.conditions))
        item = self.source.items[self.indices[i]]
        canvas = np.asarray(self.transform(self.source.open_image(self.indices[i])), dtype=np.uint8)
        word, fraction, placement = self.conditions[c]
        mask = create_attack_mask(word, fraction, placement, self.style, self.canvas_size)
        attacked, _ = apply_attack(canvas, mask, item.image_id, self.seed)
        return torch.from_numpy(attacked)


def measure_naive(loaded, classifier, source, indices, conditions, style, seed, batch_size, workers) -> tuple[float, np.ndarray]:
    """Pairs/s of the naive loader and its top-1 predictions, in (image, condition) order."""
    dataset = NaivePairs(source, indices, conditions, loaded, style, seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                         pin_memory=loaded.device.type == "cuda")
    preds = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in loader:
            x = x.to(loaded.device, non_blocking=True)
            preds.append(build_logits(loaded, classifier, x).argmax(1).cpu())
    _sync(loaded.device)
    return len(dataset) / (time.perf_counter() - t0), torch.cat(preds).numpy()


def measure_matmul_tflops(device: torch.device) -> float:
    """Measured dense bf16 matmul rate of the device (TFLOP/s)."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    reps = 20
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def write_synthetic(folder: Path, n: int, size: int, seed: int) -> None:
    """Write n smooth random JPEG images with a labels.csv (for GPU runs without a dataset)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size + 32, size), Image.BICUBIC).save(folder / f"{i:06d}.jpg", quality=90)
        rows.append((f"{i:06d}.jpg", i % 1000))
    pd.DataFrame(rows, columns=["file", "class_index"]).to_csv(folder / "labels.csv", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="typoattack-tiny")
    parser.add_argument("--pretrained", default="seed:0")
    parser.add_argument("--backend", default="open_clip", help="Model family: open_clip or transformers.")
    parser.add_argument("--random-hf", choices=["tiny-clip", "tiny-clip-224", "clip-vit-b-32"], default=None,
                        help="Build a CLIPModel with random weights in the temp folder and run it through the "
                             "transformers backend as --model: the tests' 64-px one, one of typoattack-tiny's "
                             "shape (224 px, compare with the default open_clip run), or ViT-B/32's shape.")
    parser.add_argument("--data", default=str(SAMPLE_DIR))
    parser.add_argument("--synthetic", type=int, default=0, help="Use N synthetic images instead of --data.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--words", type=int, default=9, help="First N words of goh2021.")
    parser.add_argument("--fraction", type=float, default=0.07)
    parser.add_argument("--placement", default="paper8", choices=[p.value for p in Placement])
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=[p.value for p in Precision])
    parser.add_argument("--templates", default="simple")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timed eval calls and encoder passes; the best of each is reported.")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="typoattack-bench-"))
    if args.random_hf:
        sys.path.insert(0, str(ROOT / "tests"))
        from hf_builders import build_clip_folder, build_clip_tiny224_folder, build_clip_vit_b32_folder

        build = {"tiny-clip": build_clip_folder, "tiny-clip-224": build_clip_tiny224_folder,
                 "clip-vit-b-32": build_clip_vit_b32_folder}[args.random_hf]
        args.backend, args.model, args.pretrained = "transformers", str(build(work / "hf-model")), None
    cache_dir = args.cache_dir or str(work / "cache")
    data = args.data
    if args.synthetic:
        data = str(work / "synthetic")
        write_synthetic(Path(data), args.synthetic, 256, seed=0)
    vocab_path = work / "vocab.yaml"
    words = load_vocab(ROOT / "configs" / "vocab" / "goh2021.yaml").words[:args.words]
    vocab_path.write_text("name: bench\nwords:\n" + "".join(
        f"  - {{text: {w.text!r}, target: {w.target_index}}}\n" for w in words))
    device = resolve_device(args.device)
    precision = Precision(args.precision)
    batch_size = resolve_batch_size(args.batch_size, device)
    settings = {"data": data, "model": args.model, "pretrained": args.pretrained, "backend": args.backend,
                "vocab": str(vocab_path),
                "limit": args.limit, "fractions": [args.fraction], "placement": [args.placement],
                "templates": args.templates, "batch_size": batch_size, "device": args.device,
                "precision": args.precision, "cache_dir": cache_dir, "workers": args.workers,
                "compile": args.compile, "chunk_size": 100_000, "out": str(work / "run")}
    cfg = load_synthetic_config(None, settings)

    # Warm the caches (canvases, classifier) with a first run, as a user's second run would find them.
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"model {args.model}{f'/{args.pretrained}' if args.pretrained else ''} ({args.backend}), {precision.value}, batch {batch_size}", flush=True)
    t0 = time.perf_counter()
    run_task(get_task("eval"), cfg)
    print(f"warm-up run (fills canvas and classifier caches): {time.perf_counter() - t0:.1f} s", flush=True)

    # 1. encoder only, same canvases, model and batch size
    loaded = get_backend(args.backend).load(ModelSpec(args.model, args.pretrained, args.backend), device, precision,
                                            compile=args.compile)
    classifier, _ = get_classifier(loaded, IMAGENET_CLASSNAMES, load_templates(args.templates), cache_dir)
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    g = loaded.geometry
    canvases = np.asarray(prepare_canvases(source, indices, g.transform, g.key, g.size, cache_dir).canvases)

    # 1 and 2 interleaved, the best of --repeats rounds each: load from elsewhere on the machine
    # only ever slows a measurement down, and interleaving exposes both to the same load.
    wall, enc = float("inf"), 0.0
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        result = run_task(get_task("eval"), cfg, overwrite=True)  # 2. end to end from a warm cache
        wall = min(wall, time.perf_counter() - t0)
        passes = max(1, round(len(result.records) / len(canvases)))
        enc = max(enc, measure_encoder(loaded, classifier, canvases, batch_size, passes))
    n_images = result.info.models[0]["n_images"]
    e2e_passes = len(result.records) / wall
    e2e_pairs = n_images * len(words) / wall

    print()
    print(f"images: {n_images}, words: {len(words)}, fraction {args.fraction}, placement {args.placement}")
    print(f"1. encoder only:          {enc:10.1f} images/s")
    print(f"2. typoattack eval:       {e2e_passes:10.1f} images/s ({e2e_pairs:.1f} (image, word) pairs/s, "
          f"{len(result.records)} encoder passes incl. clean, {wall:.2f} s wall)")
    print(f"   ratio 2/1:             {e2e_passes / enc:10.3f}  (target >= 0.8)")
    if not args.skip_naive:
        conditions = [(w.text, args.fraction, Placement(args.placement)) for w in words]
        naive, naive_preds = measure_naive(loaded, classifier, source, indices, conditions, cfg.style, cfg.seed,
                                           batch_size, args.workers)
        recs = result.records[result.records["word"] != ""]
        ours = recs["pred_index"].to_numpy()  # records are image-major, words in vocab order
        agree = float(np.mean(ours == naive_preds))
        print(f"3. naive per-pair loader: {naive:10.1f} (image, word) pairs/s")
        print(f"   ratio 2/3:             {e2e_pairs / naive:10.3f}  (pairs/s over pairs/s; target >= 3)")
        print(f"   top-1 agreement 2 vs 3: {100 * agree:.2f}% of {len(ours)} attacked images")
    if device.type == "cuda" and args.model in IMAGE_GFLOP:
        peak = measure_matmul_tflops(device)
        gflop = IMAGE_GFLOP[args.model]
        print(f"measured bf16 matmul: {peak:.0f} TFLOP/s; {args.model} {gflop} GFLOP/image")
        print(f"MFU encoder only: {100 * enc * gflop / 1e3 / peak:.1f}%   "
              f"MFU end to end: {100 * e2e_passes * gflop / 1e3 / peak:.1f}%")
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
