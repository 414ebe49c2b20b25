"""Small data in a class set of ten names, built from the shipped sample images relabelled: an `hf:` dataset
saved to disk (`save_to_disk`) with a `ClassLabel` label column, and a folder of images with a labels CSV and a
class-names file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from typoattack.constants import SAMPLE_DIR

TEN_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10's classes, in its label order (the built-in `cifar10` class set names them so too)."""


def _sample_files(n: int) -> list[str]:
    return pd.read_csv(SAMPLE_DIR / "labels.csv")["file"].head(n).astype(str).tolist()


def build_hf_class_dataset(root: Path, n: int = 40) -> Path:
    """`n` shipped images as an `hf:` dataset saved with `save_to_disk` (a `train` split of a DatasetDict),
    labelled 0-9 in turn by a `ClassLabel` of TEN_NAMES in column `fine_label`; returns the folder."""
    import datasets

    files = _sample_files(n)
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=list(TEN_NAMES))})
    train = datasets.Dataset.from_dict({"img": [str(SAMPLE_DIR / f) for f in files],
                                        "fine_label": [i % len(TEN_NAMES) for i in range(n)]}, features=features)
    folder = root / "hf-ten"
    datasets.DatasetDict({"train": train}).save_to_disk(str(folder))
    return folder


def build_names_folder(root: Path, n: int = 40, yaml_names: bool = False) -> tuple[Path, Path, Path]:
    """A labels CSV over `n` shipped images (labels 0-9 in turn) and a class-names file (one a line, or a YAML
    list); returns (images folder, labels CSV, names file)."""
    root.mkdir(parents=True, exist_ok=True)
    files = _sample_files(n)
    labels = root / "labels.csv"
    pd.DataFrame({"file": files, "class_index": [i % len(TEN_NAMES) for i in range(n)]}).to_csv(labels, index=False)
    if yaml_names:
        names = root / "names.yaml"
        names.write_text("".join(f"- {name}\n" for name in TEN_NAMES))
    else:
        names = root / "names.txt"
        names.write_text("# CIFAR-10's classes\n" + "".join(f"{name}\n" for name in TEN_NAMES))
    return SAMPLE_DIR, labels, names
