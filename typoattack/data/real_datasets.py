"""Loaders of the real typographic-attack datasets: photographs whose text is already on them.

Formats, as published:

- SCAM (Hugging Face `BLISS-e-V/SCAM`): columns `image`, `type` (SCAM, NoSCAM, SynthSCAM),
  `object_label`, `attack_word`, `postit_area_pct`, `id`; read through `datasets` (`hf:NAME` for
  the Hub or its cache, `hf:/folder` for a `save_to_disk` output or a local dataset folder).
- RTA-100 and PAINT, and any `folder`: image files named `label=<object>_text=<word>.<ext>`
  (searched recursively, so the unpacked zip files can be given as they are).
- Disentangling: images plus `annotations.json` (or `annotation.json`) mapping each file name to
  `{"true object": ..., "typographic attack label": ...}`, the images beside it or in `images/`.
- `folder` also accepts a CSV (`labels.csv`, or the only CSV in the folder) with columns `file`,
  `object_label`, `attack_word`.

The Defense-Prefix authors keep the three real sets under one `datasets/` folder (`DATASET_FOLDERS`:
`ours/data`, `typographic_real_data_from_PAINT/typographic_attacks`, `typographic_attack_dataset`
with `classes.json` beside the annotations); given such a folder, each dataset reads only its own
sub-folder, and the source's `notes` say what else the folder holds.

Every format problem is a DataError naming the file or column.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from typoattack.config.types import RealDataset
from typoattack.data.sources import IMAGE_EXTENSIONS, load_rgb
from typoattack.errors import DataError
from typoattack.files import expand_path
from typoattack.hub import hub_offline_if_unreachable

ATTACKED = "attacked"
"""The variant of datasets without a text-free twin."""
SCAM_VARIANTS = ("SCAM", "NoSCAM", "SynthSCAM")
SCAM_COLUMNS = ("image", "type", "object_label", "attack_word", "id")
CSV_COLUMNS = ("file", "object_label", "attack_word")
ANNOTATION_FILES = ("annotations.json", "annotation.json")
CLASSES_FILE = "classes.json"
"""Disentangling's class list (its keys), beside the annotations in the Defense-Prefix layout."""
DATASET_FOLDERS = {
    RealDataset.RTA100: "ours/data",
    RealDataset.PAINT: "typographic_real_data_from_PAINT/typographic_attacks",
    RealDataset.DISENTANGLE: "typographic_attack_dataset",
}
"""Each dataset's folder under the Defense-Prefix authors' shared `datasets/` root (their loaders)."""
_DATASET_NAMES = {RealDataset.RTA100: "RTA-100", RealDataset.PAINT: "PAINT", RealDataset.DISENTANGLE: "Disentangling"}
_OBJECT_KEY, _ATTACK_KEY = "true object", "typographic attack label"
# label=<object>_text=<word>, optionally followed by _<n> for several photos of one pair.
_NAME_PATTERN = re.compile(r"^label=(?P<label>[^_]+)_text=(?P<text>.+?)(?:_(?P<n>\d+))?$")


@dataclass(frozen=True)
class RealItem:
    """One photograph of a real typographic-attack dataset.

    Attributes:
        image_id: Stable identifier (path relative to the data folder, or `split/row` for SCAM).
        object_label: What the photo shows.
        attack_word: The text written on it (for NoSCAM: the text removed from its SCAM twin).
        variant: SCAM, NoSCAM or SynthSCAM for SCAM; `attacked` otherwise.
        photo_id: The photo's identity across variants (SCAM's `id` without a variant prefix;
            the image_id otherwise); pairs NoSCAM with SCAM rows.
        postit_area_pct: Share of the image covered by the note in percent (SCAM), else NaN.
    """

    image_id: str
    object_label: str
    attack_word: str
    variant: str = ATTACKED
    photo_id: str = ""
    postit_area_pct: float = float("nan")


class RealSource:
    """The items of one dataset and a way to open each image.

    Attributes:
        description: Identifies the source in run.json and the fingerprint.
        items: The photos in a stable order.
        classes: The dataset's own class list where it ships one (Disentangling's `classes.json`
            keys), else empty.
        notes: Lines for the run to show (e.g. a shared data folder that holds other datasets too).
    """

    def __init__(self, description: str, items: list[RealItem], opener: Any, classes: tuple[str, ...] = (),
                 notes: list[str] | None = None) -> None:
        self.description = description
        self.items = items
        self._open = opener
        self.classes = classes
        self.notes = list(notes or [])

    def open_image(self, index: int) -> Image.Image:
        """Image `index` decoded as RGB (EXIF orientation applied)."""
        return self._open(index)

    def list_vocabulary(self, with_classes: bool = True) -> list[str]:
        """The classes of `union`, sorted: every object label and attack word, and (with
        `with_classes`) the dataset's own class list."""
        labels = {i.object_label for i in self.items} | {i.attack_word for i in self.items}
        return sorted(labels | set(self.classes) if with_classes else labels)


def get_photo_id(raw_id: str, variant: str) -> str:
    """SCAM's `id` with a leading variant name (`SCAM_`, `NoSCAM_`, `SynthSCAM_`) removed, so the
    variants of one photo share it whichever way the ids are spelled."""
    for name in sorted(SCAM_VARIANTS, key=len, reverse=True):
        for sep in ("_", "-"):
            if raw_id.lower().startswith((name + sep).lower()):
                return raw_id[len(name) + 1:]
    return raw_id


def open_real_dataset(dataset: RealDataset, data: str, hf_split: str = "train") -> RealSource:
    """Open a real typographic-attack dataset.

    Args:
        dataset: Its format.
        data: A folder, or `hf:NAME` (SCAM).
        hf_split: Split of a Hugging Face dataset.

    Raises:
        DataError: The data is missing or does not match the format (the message names the file
            or column).
    """
    if dataset is RealDataset.SCAM:
        return _open_scam(data, hf_split)
    root = expand_path(data)
    if not root.exists():
        raise DataError(f"data path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"data path {root} is not a folder")
    folder, notes = find_dataset_folder(dataset, root)
    if dataset is RealDataset.DISENTANGLE:
        source = _open_annotations(folder)
    elif dataset is RealDataset.FOLDER and (csv := _find_csv(folder)) is not None:
        source = _open_csv(folder, csv)
    else:
        source = _open_named_files(root, dataset.value, folder)
    source.notes = notes + source.notes
    return source


def list_dataset_folders(root: Path) -> dict[RealDataset, Path]:
    """The datasets whose Defense-Prefix sub-folder (`DATASET_FOLDERS`) `root` holds, by dataset."""
    return {d: root / sub for d, sub in DATASET_FOLDERS.items() if (root / sub).is_dir()}


def find_dataset_folder(dataset: RealDataset, root: Path) -> tuple[Path, list[str]]:
    """The folder to read `dataset` from, and a note when `root` is a shared data folder.

    A folder holding the dataset's own sub-folder (Defense-Prefix's layout) is read there only;
    one holding other datasets' sub-folders but not this one's is refused; any other folder is
    read as given.

    Returns:
        (the folder, notes: one line naming the datasets found when `root` holds several, or
        holds others beside the one read).

    Raises:
        DataError: `root` holds other datasets' sub-folders but not this dataset's.
    """
    found = list_dataset_folders(root)
    if not found:
        return root, []
    listing = ", ".join(f"{_DATASET_NAMES[d]} ({DATASET_FOLDERS[d]})" for d in found)
    own = found.get(dataset)
    if own is not None:
        if len(found) == 1:
            return own, []
        return own, [f"{root} holds several datasets: {listing}; reading {_DATASET_NAMES[dataset]} from "
                     f"{DATASET_FOLDERS[dataset]} only"]
    if dataset is RealDataset.FOLDER:
        return root, [f"{root} holds {listing}; --dataset folder reads every image below it as one dataset"]
    names = " or ".join(d.value for d in found)
    raise DataError(f"{root} holds {listing} but no {_DATASET_NAMES[dataset]} folder ({DATASET_FOLDERS[dataset]}); "
                    f"pass --dataset {names}, or the folder of the {_DATASET_NAMES[dataset]} images as --data")


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") or part == "__MACOSX" for part in p.relative_to(root).parts))


def _file_opener(root: Path, files: list[str]) -> Any:
    return lambda index: load_rgb(root / files[index])


def _check_labels(items: list[RealItem], where: str) -> None:
    for item in items:
        for what, value in (("object label", item.object_label), ("attack word", item.attack_word)):
            if not value.strip():
                raise DataError(f"{where}: {item.image_id!r} has an empty {what}")


def parse_file_name(name: str) -> tuple[str, str]:
    """(object label, attack word) of a `label=<object>_text=<word>[_<n>].<ext>` file name.

    Raises:
        DataError: The name does not follow the pattern.
    """
    match = _NAME_PATTERN.match(Path(name).stem)
    if not match:
        raise DataError(f"file name {name!r} is not of the form label=<object>_text=<word>.<ext>")
    return match["label"].strip(), match["text"].strip()


def _open_named_files(root: Path, kind: str, folder: Path | None = None) -> RealSource:
    """The label=<object>_text=<word> files below `folder` (default `root`), with image ids relative
    to `root` (the `--data` folder), as they were before shared roots were read by sub-folder."""
    folder = folder or root
    paths = _list_images(folder)
    if not paths:
        raise DataError(f"{folder} holds no image files ({kind} expects label=<object>_text=<word>.png files)")
    files, items = [], []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            label, text = parse_file_name(path.name)
        except DataError as e:
            raise DataError(f"{root / rel}: {e}") from None
        files.append(rel)
        items.append(RealItem(rel, label, text, ATTACKED, rel))
    return RealSource(f"{kind}:{folder.resolve()}", items, _file_opener(root, files))


def _find_csv(root: Path) -> Path | None:
    if (root / "labels.csv").is_file():
        return root / "labels.csv"
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) > 1:
        raise DataError(f"{root} holds several CSV files ({', '.join(p.name for p in csvs)}); name the one with "
                        "`file`, `object_label`, `attack_word` labels.csv")
    return csvs[0] if csvs else None


def _open_csv(root: Path, csv: Path) -> RealSource:
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as e:
        raise DataError(f"cannot read CSV {csv}: {e}") from None
    missing = [c for c in CSV_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"CSV {csv} has no column {missing[0]!r}; it needs {', '.join(CSV_COLUMNS)}")
    if table.empty:
        raise DataError(f"CSV {csv} has no rows")
    dup = table["file"][table["file"].duplicated()].tolist()
    if dup:
        raise DataError(f"CSV {csv} lists file {dup[0]!r} twice")
    absent = [f for f in table["file"] if not (root / f).is_file()]
    if absent:
        raise DataError(f"CSV {csv} lists {len(absent)} file(s) missing under {root}, e.g. {absent[0]!r}")
    files = table["file"].tolist()
    items = [RealItem(f, o.strip(), a.strip(), ATTACKED, f)
             for f, o, a in zip(files, table["object_label"], table["attack_word"])]
    _check_labels(items, f"CSV {csv}")
    return RealSource(f"csv:{csv.resolve()}", items, _file_opener(root, files))


def _find_annotations(root: Path) -> Path:
    for folder in (root, *sorted(p for p in root.iterdir() if p.is_dir())):
        for name in ANNOTATION_FILES:
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"{root} holds no {' or '.join(ANNOTATION_FILES)} (looked in it and its sub-folders)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


def _open_annotations(root: Path) -> RealSource:
    path = _find_annotations(root)
    doc = _read_json(path)
    if not isinstance(doc, dict) or not doc:
        raise DataError(f"{path} must map image file names to {{{_OBJECT_KEY!r}: ..., {_ATTACK_KEY!r}: ...}}")
    folder = path.parent
    image_dir = folder / "images" if (folder / "images").is_dir() else folder
    files, items = [], []
    for name, entry in sorted(doc.items()):
        for key in (_OBJECT_KEY, _ATTACK_KEY):
            if not isinstance(entry, dict) or not isinstance(entry.get(key), str):
                raise DataError(f"{path}: entry {name!r} has no {key!r}")
        if not (image_dir / name).is_file():
            raise DataError(f"{path} lists {name!r}, which is not in {image_dir}")
        files.append(name)
        items.append(RealItem(name, entry[_OBJECT_KEY].strip(), entry[_ATTACK_KEY].strip(), ATTACKED, name))
    on_disk = {p.name for p in _list_images(image_dir) if p.parent == image_dir}
    unlabelled = sorted(on_disk - set(doc))
    if unlabelled:
        raise DataError(f"image {unlabelled[0]!r} in {image_dir} is missing from the annotations {path} "
                        f"({len(unlabelled)} image(s) without a label)")
    _check_labels(items, str(path))
    classes = load_class_list(folder / CLASSES_FILE) if (folder / CLASSES_FILE).is_file() else ()
    return RealSource(f"disentangle:{path.resolve()}", items, _file_opener(image_dir, files), classes)


def load_class_list(path: Path) -> tuple[str, ...]:
    """The class names of a `classes.json` (its keys, stripped, in file order; Disentangling's
    class list as the Defense-Prefix code reads it).

    Raises:
        DataError: Not valid JSON, not an object, or an empty class name.
    """
    doc = _read_json(path)
    if not isinstance(doc, dict) or not doc:
        raise DataError(f"{path} must be a JSON object whose keys are the class names")
    names = tuple(str(k).strip() for k in doc)
    if not all(names):
        raise DataError(f"{path} has an empty class name")
    return tuple(dict.fromkeys(names))


def _load_hf(name: str, split: str) -> Any:
    import datasets

    if not name:
        raise DataError("`hf:` needs a dataset name or folder, e.g. hf:BLISS-e-V/SCAM or hf:/data/scam")
    path = expand_path(name)
    try:
        if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DataError(f"dataset {name} has no split {split!r}; splits: {list(ds)} (pass --hf-split)")
                ds = ds[split]
            return ds
        with hub_offline_if_unreachable():
            return datasets.load_dataset(str(path) if path.is_dir() else name, split=split)
    except DataError:
        raise
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot load Hugging Face dataset {name!r} split {split!r}: {first}. Offline, pass a "
                        "local dataset folder (hf:/path) or a dataset already in the HF cache") from None


def _open_scam(data: str, split: str) -> RealSource:
    import datasets

    if data.startswith("hf:"):
        name = data[len("hf:"):]
    else:
        name = data
        if not expand_path(name).is_dir():
            raise DataError(f"SCAM data {data} does not exist; pass hf:BLISS-e-V/SCAM or a dataset folder")
    ds = _load_hf(name, split)
    missing = [c for c in SCAM_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"SCAM dataset {name!r} has no column {missing[0]!r}; columns: {ds.column_names} "
                        f"(SCAM needs {', '.join(SCAM_COLUMNS)})")
    if not isinstance(ds.features["image"], datasets.Image):
        raise DataError(f"SCAM dataset {name!r}: column 'image' holds {ds.features['image']}, not images")
    if len(ds) == 0:
        raise DataError(f"SCAM dataset {name!r} split {split!r} has no rows")
    ds = ds.cast_column("image", datasets.Image(decode=False))
    columns = {c: ds[c] for c in ("type", "object_label", "attack_word", "id")}
    areas = ds["postit_area_pct"] if "postit_area_pct" in ds.column_names else [None] * len(ds)
    items = []
    for row, (kind, obj, word, raw_id, area) in enumerate(zip(columns["type"], columns["object_label"],
                                                              columns["attack_word"], columns["id"], areas)):
        if kind not in SCAM_VARIANTS:
            raise DataError(f"SCAM dataset {name!r}: column 'type' holds {kind!r} in row {row}; "
                            f"expected one of {', '.join(SCAM_VARIANTS)}")
        for col, value in (("object_label", obj), ("attack_word", word), ("id", raw_id)):
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"SCAM dataset {name!r}: column {col!r} is empty in row {row}")
        area_value = float(area) if area is not None and np.isfinite(float(area)) else float("nan")
        items.append(RealItem(f"{split}/{row}", obj.strip(), word.strip(), kind,
                              get_photo_id(raw_id.strip(), kind), area_value))
    keys = [(i.photo_id, i.variant) for i in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise DataError(f"SCAM dataset {name!r}: column 'id' names photo {dup[0]!r} twice in variant {dup[1]}")

    def opener(index: int) -> Image.Image:
        cell = ds[index]["image"]
        if cell.get("bytes"):
            return load_rgb(io.BytesIO(cell["bytes"]))
        if cell.get("path"):
            return load_rgb(cell["path"])
        raise DataError(f"SCAM row {index} has no image bytes or path")

    return RealSource(f"scam:{name}:{split}:{getattr(ds, '_fingerprint', '')}", items, opener)


def select_photos(items: list[RealItem], limit: int | None, seed: int) -> list[int]:
    """A fixed, seeded subset of `limit` photos (every variant of a chosen photo comes along).

    Returns:
        Indices into `items`, ascending (all when `limit` is None or not smaller than the photos).
    """
    photos = list(dict.fromkeys(i.photo_id for i in items))
    if limit is None or limit >= len(photos):
        return list(range(len(items)))
    rng = np.random.default_rng([seed % 2**64, 0x5EA1])
    chosen = {photos[int(k)] for k in rng.permutation(len(photos))[:limit]}
    return [i for i, item in enumerate(items) if item.photo_id in chosen]
