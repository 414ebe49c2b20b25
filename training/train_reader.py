"""Train `typoattack-reader-tiny`: a toy open_clip model that classifies the shipped images and reads.

A 4.5 M-parameter CLIP (ViT: patch 32, width 128, 4 layers; text: width 64, 2 layers, context 32)
trained from scratch on this 2-core CPU, with a cross-entropy loss of the image embedding against
the class-prompt embeddings of the text tower (one OpenAI ImageNet template per class and step,
the batch's classes plus random negatives). Each batch mixes:

- photos: the 500 shipped ImageNet images (typoattack/assets/imagenet-sample), random resized crops
  and flips, labelled with their class;
- text: an ImageNet class name drawn uniformly from all 1000 (never the evaluation vocabulary's
  words as a special case), rendered with typoattack's own renderer at a random pixel fraction
  (0.03-0.16), placement (paper8, center, random) and colours, on a plain colour, a noise field or
  one of the photos, labelled with the written class.

The first steps show text only (learn to read), then text and photos. The script is seeded and
writes the weights as fp16 safetensors plus a CSV log of the training curve.

    python training/train_reader.py                 # about 35 minutes on 2 cores (32 of training)
    python training/train_reader.py --minutes 3     # a smoke run

It is a toy trained on the very images it is evaluated on, to show and check the pipeline: its
numbers say nothing about CLIP.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# typoattack's own pieces: the shipped images, the renderer and the model-config registry.
import open_clip  # noqa: E402
from open_clip import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES  # noqa: E402

import typoattack.backends.open_clip.model  # noqa: E402,F401  (registers typoattack's model configs with open_clip)
from typoattack.config.types import Placement, RenderStyle  # noqa: E402
from typoattack.constants import SAMPLE_DIR, WEIGHTS_DIR  # noqa: E402
from typoattack.errors import RenderError  # noqa: E402
from typoattack.attack.render import AttackMask, apply_attack  # noqa: E402
from typoattack.attack.solver import create_attack_mask  # noqa: E402

MODEL = "typoattack-reader-tiny"
SIZE = 224
MEAN = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
PLACEMENTS = (Placement.PAPER8, Placement.CENTER, Placement.RANDOM)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_photos() -> tuple[np.ndarray, np.ndarray]:
    """The shipped images as uint8 [N, 256, 256, 3] centre crops and their class indices [N]."""
    from PIL import Image

    import pandas as pd

    labels = pd.read_csv(SAMPLE_DIR / "labels.csv")
    photos = []
    for name in labels["file"]:
        img = Image.open(SAMPLE_DIR / name).convert("RGB")
        scale = 256 / min(img.size)
        img = img.resize((max(256, round(img.width * scale)), max(256, round(img.height * scale))), Image.BICUBIC)
        left, top = (img.width - 256) // 2, (img.height - 256) // 2
        photos.append(np.asarray(img.crop((left, top, left + 256, top + 256)), dtype=np.uint8))
    return np.stack(photos), labels["class_index"].to_numpy()


def build_mask_bank(per_class: int, rng: np.random.Generator) -> list[tuple[int, AttackMask]]:
    """`per_class` text masks per ImageNet class at random fractions and placements."""
    bank = []
    style = RenderStyle()
    for cls, name in enumerate(IMAGENET_CLASSNAMES):
        for _ in range(per_class):
            for _attempt in range(4):
                fraction = float(np.round(rng.uniform(0.03, 0.16), 3))
                placement = PLACEMENTS[int(rng.integers(len(PLACEMENTS)))]
                try:
                    bank.append((cls, create_attack_mask(name, fraction, placement, style, (SIZE, SIZE))))
                    break
                except RenderError:
                    continue
    return bank


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def text_image(mask: AttackMask, background: np.ndarray, rng: np.random.Generator, key: str) -> np.ndarray:
    """The mask drawn on a background in random colours (white on dark outline half the time)."""
    if rng.random() < 0.5:
        fill, outline = (255, 255, 255), (0, 0, 0)
    else:
        fill = random_colour(rng)
        outline = tuple(255 - c for c in fill)
    style = dataclasses.replace(mask.style, fill=fill, outline=outline)
    attacked, _ = apply_attack(background, dataclasses.replace(mask, style=style), key, int(rng.integers(1 << 30)))
    return attacked


def background(photos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 [224, 224, 3]: a plain colour, smooth noise, or a photo crop."""
    kind = rng.random()
    if kind < 0.3:
        return np.broadcast_to(np.asarray(random_colour(rng), np.uint8), (SIZE, SIZE, 3)).copy()
    if kind < 0.5:
        small = rng.integers(0, 256, (7, 7, 3)).astype(np.float32)
        t = torch.from_numpy(small).permute(2, 0, 1)[None]
        return F.interpolate(t, size=(SIZE, SIZE), mode="bilinear").clamp(0, 255)[0].permute(1, 2, 0).byte().numpy()
    i = int(rng.integers(len(photos)))
    y, x = rng.integers(0, 256 - SIZE + 1, 2)
    return photos[i, y:y + SIZE, x:x + SIZE].copy()


def augment_photos(photos: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random resized crops (one scale per batch, 0.35-1 of the area) and flips.

    uint8 [B, 256, 256, 3] -> float [B, 3, 224, 224] in [0, 1].
    """
    side = int(256 * np.sqrt(rng.uniform(0.35, 1.0)))
    crops = []
    for img in photos:
        y, x = rng.integers(0, 256 - side + 1, 2)
        crop = img[y:y + side, x:x + side]
        crops.append(crop.flip(1) if rng.random() < 0.5 else crop)
    batch = torch.stack(crops).permute(0, 3, 1, 2).float()
    return F.interpolate(batch, size=(SIZE, SIZE), mode="bilinear", antialias=side > SIZE) / 255.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=32.0, help="training wall time")
    parser.add_argument("--reading-minutes", type=float, default=4.0, help="text-only warm-up")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--photo-share", type=float, default=0.4, help="share of photos after the warm-up")
    parser.add_argument("--text-on-photo", type=float, default=0.5, help="share of text images drawn on photos")
    parser.add_argument("--negatives", type=int, default=128, help="random negative classes per step")
    parser.add_argument("--masks-per-class", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--init", type=Path, default=None, help="start from these weights (a second stage)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR / f"{MODEL}.safetensors")
    parser.add_argument("--log", type=Path, default=ROOT / "training" / "reader-tiny-log.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)

    t0 = time.perf_counter()
    photos_np, photo_labels = load_photos()
    bank = build_mask_bank(args.masks_per_class, rng)
    print(f"{len(photos_np)} photos, {len(bank)} text masks in {time.perf_counter() - t0:.0f} s", flush=True)
    photos = torch.from_numpy(photos_np)

    model, _, _ = open_clip.create_model_and_transforms(MODEL, pretrained=str(args.init) if args.init else None)
    model.float()
    tokenizer = open_clip.get_tokenizer(MODEL)
    n_params = sum(p.numel() for p in model.parameters())
    # Every (template, class) prompt tokenised once: [80, 1000, context].
    prompts = torch.stack([tokenizer([t(c) for c in IMAGENET_CLASSNAMES]) for t in OPENAI_IMAGENET_TEMPLATES])
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    total = args.minutes * 60
    model.train()
    log_rows = []
    step, start = 0, time.perf_counter()
    recent: list[tuple[float, float, float]] = []
    while (elapsed := time.perf_counter() - start) < total:
        # Cosine learning rate over the wall-time budget, after a short linear warm-up.
        progress = elapsed / total
        lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * progress))
        for group in optimizer.param_groups:
            group["lr"] = lr
        photo_share = 0.0 if elapsed < args.reading_minutes * 60 else args.photo_share
        n_photo = int(round(args.batch * photo_share))
        idx = rng.integers(0, len(photos), n_photo)
        images, labels = [], []
        if n_photo:
            images.append(augment_photos(photos[idx], rng))
            labels.append(torch.from_numpy(photo_labels[idx]))
        texts, text_labels = [], []
        for k in range(args.batch - n_photo):
            cls, mask = bank[int(rng.integers(len(bank)))]
            if rng.random() < args.text_on_photo:
                i = int(rng.integers(len(photos_np)))
                y, x = rng.integers(0, 256 - SIZE + 1, 2)
                bg = photos_np[i, y:y + SIZE, x:x + SIZE].copy()
            else:
                bg = background(photos_np, rng)
            texts.append(text_image(mask, bg, rng, f"{step}-{k}"))
            text_labels.append(cls)
        if texts:
            images.append(torch.from_numpy(np.stack(texts)).permute(0, 3, 1, 2).float() / 255.0)
            labels.append(torch.tensor(text_labels))
        x = (torch.cat(images) - MEAN) / STD
        y = torch.cat(labels)
        # Classes of this step: the batch's own plus random negatives, one random template each.
        classes = torch.unique(torch.cat([y, torch.from_numpy(rng.integers(0, 1000, args.negatives))]))
        templates = torch.from_numpy(rng.integers(0, len(OPENAI_IMAGENET_TEMPLATES), len(classes)))
        text_features = F.normalize(model.encode_text(prompts[templates, classes]), dim=-1)
        image_features = F.normalize(model.encode_image(x), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
        target = torch.searchsorted(classes, y)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            correct = (logits.argmax(1) == target).float()
            photo_acc = correct[:n_photo].mean().item() if n_photo else float("nan")
            text_acc = correct[n_photo:].mean().item()
        recent.append((loss.item(), photo_acc, text_acc))
        step += 1
        if step % 50 == 0:
            mean = np.nanmean(np.asarray(recent), axis=0)
            recent = []
            row = {"step": step, "seconds": round(time.perf_counter() - start, 1), "lr": round(lr, 6),
                   "loss": round(float(mean[0]), 4), "photo_acc": round(float(mean[1]), 4),
                   "text_acc": round(float(mean[2]), 4)}
            log_rows.append(row)
            print(row, flush=True)

    from safetensors.torch import save_file

    args.out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out))
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(log_rows[0]) if log_rows else ["step"])
        writer.writeheader()
        writer.writerows(log_rows)
    print(f"{MODEL}: {n_params / 1e6:.2f} M parameters, {step} steps in {time.perf_counter() - start:.0f} s, "
          f"weights {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()
