"""Build typoattack/assets/class_sets/clip_prompts.json from the CLIP paper's `data/prompts.md`.

`data/prompts.md` of github.com/openai/CLIP (MIT licence, copyright (c) 2021 OpenAI) lists, per
dataset, the class names in the dataset's label order and the zero-shot templates the paper used.
Each dataset is a `## Name` section with a fenced block holding two Python lists, `classes = [...]`
and `templates = [...]`; they are read with `ast.literal_eval` (no code runs). A dataset whose
classes are not one name each (FacialEmotionRecognition2013 lists several names for some classes)
is left out. The datasets get short names (`DATASET_NAMES`: cifar100, pets, cars, ...) and a few
aliases (`ALIASES`, CLIP_benchmark's spellings). Run by the maintainers when the source changes:

    git -C CLIP show HEAD:data/prompts.md > /tmp/prompts.md
    python scripts/build_class_sets.py --prompts /tmp/prompts.md --commit "$(git -C CLIP rev-parse HEAD)"

The output is deterministic (sorted keys, two-space indent, UTF-8, one trailing newline).
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

DEST = Path(__file__).resolve().parents[1] / "typoattack" / "assets" / "class_sets" / "clip_prompts.json"
SOURCE_URL = "https://github.com/openai/CLIP/blob/{commit}/data/prompts.md"

DATASET_NAMES = {
    "Birdsnap": "birdsnap", "CIFAR10": "cifar10", "CIFAR100": "cifar100", "CLEVRCounts": "clevr-counts",
    "Caltech101": "caltech101", "Country211": "country211", "DescribableTextures": "dtd", "EuroSAT": "eurosat",
    "FGVCAircraft": "aircraft", "Flowers102": "flowers", "Food101": "food101", "GTSRB": "gtsrb",
    "HatefulMemes": "hateful-memes", "KITTI": "kitti-distance", "Kinetics700": "kinetics700", "MNIST": "mnist",
    "OxfordPets": "pets", "PascalVOC2007": "voc2007", "PatchCamelyon": "pcam", "RESISC45": "resisc45",
    "SST2": "sst2", "STL10": "stl10", "SUN397": "sun397", "StanfordCars": "cars", "UCF101": "ucf101",
}
"""The paper's section title -> the class set's name (`--classes NAME`)."""
ALIASES = {
    "fgvc_aircraft": "aircraft", "fgvc-aircraft": "aircraft", "flowers102": "flowers", "oxford_pets": "pets",
    "oxford-pets": "pets", "stanford_cars": "cars", "stanford-cars": "cars", "caltech-101": "caltech101",
    "food-101": "food101", "sun-397": "sun397",
}
"""Other spellings accepted for a class set (CLIP_benchmark's and the datasets' own)."""
_BLOCK = re.compile(r"^## (?P<title>.+?)\s*$\s*```[a-z]*\s*$(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
_LIST = re.compile(r"^(?P<name>classes|templates)\s*=\s*(?P<value>\[.*?^\])", re.MULTILINE | re.DOTALL)


def parse_prompts(text: str) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """({section title: {"classes": [...], "templates": [...]}}, titles left out and why)."""
    found, skipped = {}, []
    for block in _BLOCK.finditer(text):
        title = block["title"].strip()
        lists = {m["name"]: ast.literal_eval(m["value"]) for m in _LIST.finditer(block["body"])}
        if set(lists) != {"classes", "templates"}:
            skipped.append(f"{title}: no classes and templates lists")
            continue
        if not all(isinstance(c, str) for c in lists["classes"]):
            skipped.append(f"{title}: a class has several names")
            continue
        if not all(isinstance(t, str) and t.count("{}") == 1 for t in lists["templates"]):
            raise ValueError(f"{title}: a template does not hold exactly one {{}}")
        found[title] = lists
    return found, skipped


def build(text: str, commit: str) -> dict:
    sections, skipped = parse_prompts(text)
    unknown = sorted(set(sections) - set(DATASET_NAMES))
    if unknown:
        raise ValueError(f"sections without a class-set name: {unknown} (add them to DATASET_NAMES)")
    sets = {DATASET_NAMES[title]: {"title": title, "classes": lists["classes"], "templates": lists["templates"]}
            for title, lists in sections.items()}
    return {
        "source": SOURCE_URL.format(commit=commit),
        "commit": commit,
        "licence": "MIT, Copyright (c) 2021 OpenAI",
        "skipped": skipped,
        "aliases": {a: n for a, n in sorted(ALIASES.items()) if n in sets},
        "class_sets": dict(sorted(sets.items())),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=Path, required=True, help="data/prompts.md of the openai/CLIP repository")
    parser.add_argument("--commit", required=True, help="the commit it was read at")
    parser.add_argument("--dest", type=Path, default=DEST)
    args = parser.parse_args()
    doc = build(args.prompts.read_text(encoding="utf-8"), args.commit)
    args.dest.parent.mkdir(parents=True, exist_ok=True)
    args.dest.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, entry in doc["class_sets"].items():
        print(f"{name:15s} {len(entry['classes']):4d} classes {len(entry['templates']):3d} templates ({entry['title']})")
    for line in doc["skipped"]:
        print(f"skipped: {line}")


if __name__ == "__main__":
    main()
