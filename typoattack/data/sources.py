"""Image sources (ImageNet-val folder, folder + labels CSV, Hugging Face dataset) and seeded subsets."""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from typoattack.config.types import DataSpec
from typoattack.constants import NUM_CLASSES
from typoattack.data.classes import list_synsets
from typoattack.errors import DataError
from typoattack.files import expand_path
from typoattack.hub import hub_offline_if_unreachable

IMAGENET = "imagenet"
"""The default class set's name (`config.classes.IMAGENET_CLASSES`)."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageItem:
    """One labelled image of a source.

    Attributes:
        image_id: Stable identifier (relative path, or `split/row` for Hugging Face datasets).
        true_index: Index of its class in the run's class set (ImageNet: 0-999).
    """

    image_id: str
    true_index: int


def load_rgb(fp: str | Path | io.BytesIO) -> Image.Image:
    """Decode an image file to an RGB PIL image, applying its EXIF orientation.

    Grayscale, CMYK, RGBA (alpha dropped), palette and 16-bit images are converted to 8-bit RGB.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(fp)
        img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit samples (0-65535) to 8 bits; the scale is fixed, never taken from the content.
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")
    elif img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


class ImageSource:
    """A list of labelled images and a way to open each one.

    Attributes:
        description: Identifies the source in cache keys and run.json.
        items: The images in a stable order.
    """

    description: str
    items: list[ImageItem]

    def open_image(self, index: int) -> Image.Image:
        """Return image `index` decoded as RGB."""
        raise NotImplementedError

    def stamp(self, index: int) -> str:
        """A string that changes when image `index` changes on disk (keys the canvas cache)."""
        return ""


def get_text_id(name: str) -> str:
    """A file name as text for records and tables: itself when it is valid UTF-8; else its bytes
    that are not UTF-8 spelled as `\\xNN` (a name read from disk in another encoding, kept by
    Python as surrogates, which no Parquet or CSV file can hold). The file is still opened by its
    real name."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


class FileSource(ImageSource):
    """Images stored as files under a root folder."""

    def __init__(self, root: Path, files: Sequence[str], labels: Sequence[int], description: str) -> None:
        self.root = root
        self.files = list(files)
        self.items = [ImageItem(get_text_id(f), int(y)) for f, y in zip(self.files, labels)]
        self.description = description

    def open_image(self, index: int) -> Image.Image:
        return load_rgb(self.root / self.files[index])

    def stamp(self, index: int) -> str:
        try:
            st = (self.root / self.files[index]).stat()
        except OSError:
            return "missing"
        return f"{st.st_size}:{st.st_mtime_ns}"


class HFSource(ImageSource):
    """A Hugging Face dataset with an image column and an integer label column."""

    def __init__(self, dataset: Any, image_column: str, label_column: str, description: str, split: str) -> None:
        import datasets

        feature = dataset.features[image_column]
        if not isinstance(feature, datasets.Image):
            raise DataError(f"column {image_column!r} holds {feature}, not images; set hf_image_column")
        self.dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
        self.image_column = image_column
        labels = self.dataset[label_column]
        self.items = [ImageItem(f"{split}/{i}", int(y)) for i, y in enumerate(labels)]
        self.description = description

    def open_image(self, index: int) -> Image.Image:
        cell = self.dataset[index][self.image_column]
        if cell.get("bytes"):
            return load_rgb(io.BytesIO(cell["bytes"]))
        if cell.get("path"):
            return load_rgb(cell["path"])
        raise DataError(f"row {index} has no image bytes or path")


def _list_image_files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _open_class_folders(root: Path) -> FileSource:
    synsets = {s: i for i, s in enumerate(list_synsets())}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [p.name for p in folders if p.name not in synsets]
    if unknown:
        raise DataError(
            f"{root}: sub-folder {unknown[0]!r} is not an ImageNet-1k WordNet id (like n01440764); "
            "use class sub-folders named by WordNet id, or a labels CSV with `file` and `class_index`"
        )
    files, labels = [], []
    for folder in folders:
        for name in _list_image_files(folder):
            files.append(f"{folder.name}/{name}")
            labels.append(synsets[folder.name])
    if not files:
        raise DataError(f"{root}: the class sub-folders hold no image files")
    return FileSource(root, files, labels, f"folder:{root}")


def _describe_range(n_classes: int, classes: str) -> str:
    """The class indices of a class set in words, for messages ("an integer 0-999")."""
    return "an integer 0-999" if classes == IMAGENET and n_classes == NUM_CLASSES else (
        f"a class index 0-{n_classes - 1} of class set {classes} ({n_classes} classes)")


def _open_labels_csv(root: Path, labels_path: Path, n_classes: int = NUM_CLASSES,
                     classes: str = IMAGENET) -> FileSource:
    try:
        table = pd.read_csv(labels_path)
    except Exception as e:
        raise DataError(f"cannot read labels CSV {labels_path}: {e}") from None
    missing_cols = [c for c in ("file", "class_index") if c not in table.columns]
    if missing_cols:
        raise DataError(f"labels CSV {labels_path} lacks column(s) {missing_cols}; it needs `file` and `class_index`")
    if table.empty:
        raise DataError(f"labels CSV {labels_path} has no rows")
    files = table["file"].astype(str).tolist()
    # `./a.jpg` and `a.jpg` (or `x/../a.jpg`) are one file: compare the normalised paths.
    normal = pd.Series([os.path.normpath(f) for f in files])
    dup = [files[k] for k in np.flatnonzero(normal.duplicated().to_numpy())]
    if dup:
        raise DataError(f"labels CSV {labels_path} lists {len(dup)} file(s) twice, e.g. {dup[0]!r}")
    labels = pd.to_numeric(table["class_index"], errors="coerce")
    bad = table["file"][labels.isna() | (labels % 1 != 0) | (labels < 0) | (labels >= n_classes)].astype(str).tolist()
    if bad:
        raise DataError(f"labels CSV {labels_path}: class_index of {bad[0]!r} (and {len(bad) - 1} more) is not "
                        f"{_describe_range(n_classes, classes)}")
    absent = [f for f in files if not (root / f).is_file()]
    if absent:
        raise DataError(
            f"labels CSV {labels_path} lists {len(absent)} file(s) missing under {root}, e.g. {absent[0]!r}"
        )
    return FileSource(root, files, labels.astype(int).tolist(), f"csv:{labels_path.resolve()}")


def _load_hf(spec: DataSpec) -> Any:
    """The split of the `hf:` dataset `spec` names, with its image and label columns checked.

    Raises:
        DataError: No such dataset, split or column.
    """
    import datasets

    name = spec.source[len("hf:"):]
    if not name:
        raise DataError("`hf:` needs a dataset name or folder, e.g. hf:imagenet-1k or hf:/data/my-dataset")
    path = expand_path(name)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if spec.hf_split not in ds:
                    raise DataError(f"dataset {name} has no split {spec.hf_split!r}; splits: {list(ds)}")
                ds = ds[spec.hf_split]
        else:
            with hub_offline_if_unreachable():
                ds = datasets.load_dataset(str(path) if path.is_dir() else name, split=spec.hf_split)
    except DataError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"cannot load Hugging Face dataset {name!r} split {spec.hf_split!r}: {first}. "
            "Offline, pass a local dataset folder (hf:/path) or a dataset already in the HF cache"
        ) from None
    for col, what in ((spec.hf_image_column, "image"), (spec.hf_label_column, "label")):
        if col not in ds.column_names:
            raise DataError(
                f"dataset {name!r} has no {what} column {col!r}; columns: {ds.column_names} "
                f"(set hf_{what}_column)"
            )
    return ds


def read_hf_class_names(spec: DataSpec) -> tuple[str, ...]:
    """The class names of an `hf:` dataset's label column (its `datasets.ClassLabel` feature), in label order.

    Raises:
        DataError: The source is not `hf:`, cannot be loaded, or its label column is not a ClassLabel.
    """
    import datasets

    if not spec.source.startswith("hf:"):
        raise DataError(f"--classes hf reads the class names of an hf: dataset's label column; --data {spec.source} "
                        "is not one (give --classes NAME or a file of names)")
    feature = _load_hf(spec).features[spec.hf_label_column]
    if not isinstance(feature, datasets.ClassLabel) or not feature.names:
        raise DataError(f"--classes hf: label column {spec.hf_label_column!r} of {spec.source} is {feature}, not a "
                        "ClassLabel with names; give --classes NAME or a file of names")
    return tuple(str(n) for n in feature.names)


def _open_hf(spec: DataSpec, n_classes: int = NUM_CLASSES, classes: str = IMAGENET) -> HFSource:
    name = spec.source[len("hf:"):]
    ds = _load_hf(spec)
    labels = ds[spec.hf_label_column]
    bad = [y for y in labels
           if isinstance(y, bool) or not isinstance(y, (int, np.integer)) or not 0 <= int(y) < n_classes]
    if bad:
        what = ("an ImageNet index 0-999" if classes == IMAGENET and n_classes == NUM_CLASSES
                else _describe_range(n_classes, classes))
        raise DataError(f"dataset {name!r}: label column {spec.hf_label_column!r} holds {bad[0]!r}, not {what}")
    fingerprint = getattr(ds, "_fingerprint", "")
    return HFSource(ds, spec.hf_image_column, spec.hf_label_column,
                    f"hf:{name}:{spec.hf_split}:{fingerprint}", spec.hf_split)


SAMPLE_PREFIX = "sample:"
"""`sample:NAME`: a shipped ImageNet image by (part of) its class name, e.g. sample:tench."""


def resolve_image_path(value: str) -> Path:
    """The file of an image given as a path or as `sample:NAME` (the shipped image whose file name
    holds NAME, e.g. `sample:tench` or `sample:n01440764`).

    Raises:
        DataError: No such file, or NAME matches no shipped image or several.
    """
    from typoattack.constants import SAMPLE_DIR
    from typoattack.errors import suggest

    if not value.startswith(SAMPLE_PREFIX):
        path = Path(value).expanduser()
        if not path.is_file():
            raise DataError(f"image {value} does not exist (or name a shipped one, e.g. sample:tench)")
        return path
    name = value[len(SAMPLE_PREFIX):].strip().lower().replace(" ", "_")
    files = sorted(p for p in SAMPLE_DIR.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    exact = [p for p in files if p.stem.lower().split("_", 1)[-1] == name or p.stem.lower() == name]
    found = exact or [p for p in files if name and name in p.stem.lower()]
    if len(found) != 1:
        stems = [p.stem.split("_", 1)[-1] for p in files]
        what = "no shipped image" if not found else f"{len(found)} shipped images ({', '.join(p.stem for p in found[:4])}...)"
        raise DataError(f"{value} names {what}; use a class name of typoattack/assets/imagenet-sample."
                        f"{suggest(name, stems)}")
    return found[0]


def open_image_source(spec: DataSpec, n_classes: int = NUM_CLASSES, classes: str = IMAGENET) -> ImageSource:
    """Open the data source a DataSpec names, its labels indices into a class set.

    Args:
        spec: The source.
        n_classes: Classes of the run's class set: labels are 0..n_classes-1.
        classes: The class set's name (messages; WordNet-id folders are ImageNet's alone).

    Raises:
        DataError: The path does not exist, the layout or labels are invalid, or a label is outside the set.
    """
    if spec.source.startswith("hf:"):
        return _open_hf(spec, n_classes, classes)
    root = Path(spec.source)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    labels = Path(spec.labels) if spec.labels else root / "labels.csv"
    if spec.labels and not labels.is_file():
        raise DataError(f"labels CSV {labels} does not exist")
    if labels.is_file():
        return _open_labels_csv(root, labels, n_classes, classes)
    if classes != IMAGENET:
        raise DataError(f"{root} has no labels CSV ({labels.name}): a folder of WordNet-id sub-folders is read only "
                        f"with --classes imagenet; for class set {classes}, give a labels CSV with `file` and "
                        "`class_index` (--labels)")
    return _open_class_folders(root)


def select_subset(items: Sequence[ImageItem], limit: int | None, seed: int) -> list[int]:
    """Pick a fixed, seeded, class-balanced subset of `limit` images (all when None).

    Classes take turns in a seeded order, each giving its next image (in a seeded order) until
    `limit` images are chosen, so per-class counts differ by at most one where classes allow.

    Returns:
        Indices into `items`, sorted ascending.
    """
    if limit is None or limit >= len(items):
        return list(range(len(items)))
    rng = np.random.default_rng([seed % 2**64, 0x5EED])
    by_class: dict[int, list[int]] = {}
    for i, item in enumerate(items):
        by_class.setdefault(item.true_index, []).append(i)
    queues = {c: list(rng.permutation(idx)) for c, idx in sorted(by_class.items())}
    order = list(rng.permutation(sorted(queues)))
    chosen: list[int] = []
    while len(chosen) < limit:
        for c in order:
            if queues[c] and len(chosen) < limit:
                chosen.append(int(queues[c].pop(0)))
        order = [c for c in order if queues[c]]
    return sorted(chosen)
