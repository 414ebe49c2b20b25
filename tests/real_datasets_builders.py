"""Small real-typographic-attack datasets in each published format, built with PIL (and
`datasets` for SCAM) for the tests of `typoattack real`."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

OBJECTS = {"dog": (200, 120, 40), "cup": (40, 90, 200), "apple": (30, 170, 60)}
WORDS = ["cat", "ipod", "good"]


def draw_photo(obj: str, word: str | None, size: tuple[int, int] = (96, 80)) -> Image.Image:
    """A coloured 'photo' of `obj` with `word` written on a white note (no note when None)."""
    img = Image.new("RGB", size, OBJECTS[obj])
    draw = ImageDraw.Draw(img)
    draw.ellipse([8, 8, 30, 30], fill=(255 - OBJECTS[obj][0], 80, 80))
    if word is not None:
        draw.rectangle([20, 30, 78, 52], fill="white")
        draw.text((24, 34), word, fill="black")
    return img


def make_named_folder(root: Path, sub: str = "", numbered: bool = False) -> Path:
    """RTA-100 / PAINT layout: `label=<object>_text=<word>.png` files (9 images), in `root/sub`.

    With `numbered`, a second photo of one pair is named `label=dog_text=cat_2.png`.
    """
    folder = root / sub if sub else root
    folder.mkdir(parents=True, exist_ok=True)
    for obj in OBJECTS:
        for word in WORDS:
            draw_photo(obj, word).save(folder / f"label={obj}_text={word}.png")
    if numbered:
        draw_photo("dog", "cat", (80, 96)).save(folder / "label=dog_text=cat_2.png")
    return root


def make_disentangle(root: Path, file_name: str = "annotations.json") -> Path:
    """Disentangling layout: `annotations.json` beside an `images/` folder of .JPG files."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    annotations = {}
    for k, (obj, word) in enumerate([(o, w) for o in OBJECTS for w in WORDS[:2]]):
        name = f"IMG_{2930 + k}.JPG"
        draw_photo(obj, word).save(images / name, format="JPEG", quality=95)
        annotations[name] = {"true object": obj, "typographic attack label": word}
    (root / file_name).write_text(json.dumps(annotations), encoding="utf-8")
    return root


def make_csv_folder(root: Path) -> Path:
    """A folder of arbitrarily named images and labels.csv (`file`, `object_label`, `attack_word`)."""
    (root / "pics").mkdir(parents=True, exist_ok=True)
    lines = ["file,object_label,attack_word"]
    for k, (obj, word) in enumerate([(o, w) for o in OBJECTS for w in WORDS[1:]]):
        draw_photo(obj, word).save(root / "pics" / f"photo{k}.png")
        lines.append(f"pics/photo{k}.png,{obj},{word}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


SCAM_PHOTOS = [("dog", "cat"), ("cup", "ipod"), ("apple", "good"), ("dog", "ipod"), ("cup", "good")]


def make_scam(root: Path, seed: int = 3, drop_column: str | None = None) -> Path:
    """SCAM layout through `datasets`: every photo in the SCAM, NoSCAM and SynthSCAM variants,
    sharing `id`, rows shuffled (pairing by position would be wrong); one NoSCAM photo has no
    SCAM twin and one SCAM photo no NoSCAM twin. Saved with `save_to_disk` to `root`."""
    import datasets

    rows = []
    for k, (obj, word) in enumerate(SCAM_PHOTOS):
        photo_id = f"img_{k:04d}"
        variants = {"SCAM": word, "NoSCAM": None, "SynthSCAM": word}
        if k == 3:
            variants.pop("SCAM")
        if k == 4:
            variants.pop("NoSCAM")
        for variant, text in variants.items():
            png = io.BytesIO()
            draw_photo(obj, text).save(png, format="PNG")
            rows.append({"image": {"bytes": png.getvalue(), "path": None}, "type": variant, "object_label": obj, "attack_word": word,
                         "postit_area_pct": 0.0 if text is None else 14.5, "id": photo_id})
    random.Random(seed).shuffle(rows)
    columns = {key: [r[key] for r in rows] for key in rows[0] if key != drop_column}
    ds = datasets.Dataset.from_dict(columns)
    if "image" in columns:
        ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(root))
    return root
