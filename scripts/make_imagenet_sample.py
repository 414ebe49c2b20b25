"""Make the small ImageNet sample the package ships (typoattack/assets/imagenet-sample/).

Reads a folder of images with a labels CSV (`file, synset, class_index, folder_label`), applies the
EXIF orientation, keeps grayscale images grayscale (everything else becomes RGB), shrinks the
shortest side to 256 px (never enlarges) and writes JPEG quality 90. Run once by the maintainers:

    python scripts/make_imagenet_sample.py --source /path/to/imagenet-sample
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from PIL import Image, ImageOps

DEST = Path(__file__).resolve().parents[1] / "typoattack" / "assets" / "imagenet-sample"
SHORTEST_SIDE = 256
QUALITY = 90


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="folder with the images and labels.csv")
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args()
    args.dest.mkdir(parents=True, exist_ok=True)
    with open(args.source / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        image = ImageOps.exif_transpose(Image.open(args.source / row["file"]))
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        scale = SHORTEST_SIDE / min(image.size)
        if scale < 1:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.LANCZOS)
        image.save(args.dest / row["file"], "JPEG", quality=QUALITY, optimize=True)
    with open(args.dest / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "synset", "class_index", "folder_label"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} images to {args.dest}")


if __name__ == "__main__":
    main()
