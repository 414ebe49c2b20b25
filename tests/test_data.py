"""Tests of typoattack.data.sources: image sources, load_rgb, subsets and the canvas cache."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError

from typoattack.data.classes import list_synsets
from typoattack.config.types import DataSpec
from typoattack.errors import DataError
from typoattack.data.canvases import get_canvas_cache_key, prepare_canvases
from typoattack.data.sources import (
    FileSource,
    HFSource,
    ImageItem,
    load_rgb,
    open_image_source,
    select_subset,
)

from typoattack.constants import SAMPLE_DIR

PROJECT_DIR = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def sample_dir() -> Path:
    assert (SAMPLE_DIR / "labels.csv").is_file(), f"the shipped ImageNet sample is missing at {SAMPLE_DIR}"
    return SAMPLE_DIR


@pytest.fixture(scope="module")
def sample_rows(sample_dir: Path) -> list[dict[str, str]]:
    with open(sample_dir / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sample_source(sample_dir: Path):
    return open_image_source(DataSpec(source=str(sample_dir)))


def _write_csv(path: Path, rows: list[tuple], header: tuple = ("file", "class_index")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _make_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (12, 9)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _canvas_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(64)])


# --------------------------------------------------------------------------------------------
# CSV source (the shipped sample)


def test_csv_source_matches_labels_csv(sample_source, sample_rows):
    src = sample_source
    assert isinstance(src, FileSource)
    assert len(src.items) == 500
    assert [it.image_id for it in src.items] == [r["file"] for r in sample_rows]
    assert [it.true_index for it in src.items] == [int(r["class_index"]) for r in sample_rows]
    assert sorted(it.true_index for it in src.items) == list(range(0, 1000, 2))
    assert all(isinstance(it.true_index, int) for it in src.items)
    assert src.description.startswith("csv:")


def test_csv_source_opens_rgb_images(sample_source, sample_dir):
    # item 201 is a grayscale JPEG in the sample; it must come back as RGB like the rest
    for i in (0, 201, 499):
        img = sample_source.open_image(i)
        assert img.mode == "RGB"
        ref = Image.open(sample_dir / sample_source.items[i].image_id)
        assert img.size == ref.size
        assert np.array_equal(np.asarray(img), np.asarray(ref.convert("RGB")))


def test_csv_source_explicit_labels_path(tmp_path, sample_dir):
    labels = _write_csv(tmp_path / "mine.csv", [("n01440764_tench.JPEG", 7)])
    src = open_image_source(DataSpec(source=str(sample_dir), labels=str(labels)))
    assert [(it.image_id, it.true_index) for it in src.items] == [("n01440764_tench.JPEG", 7)]


# --------------------------------------------------------------------------------------------
# Class-folder (ImageNet-val) source


@pytest.fixture
def class_tree(tmp_path: Path) -> tuple[Path, list[tuple[str, int, tuple[int, int, int]]]]:
    syn = list_synsets()
    root = tmp_path / "val"
    spec = [
        (f"{syn[0]}/b.JPEG", 0, (200, 10, 10)),
        (f"{syn[0]}/a.png", 0, (10, 200, 10)),
        (f"{syn[1]}/x.jpg", 1, (10, 10, 200)),
        (f"{syn[999]}/img2.PNG", 999, (90, 90, 90)),
        (f"{syn[999]}/img1.JPEG", 999, (250, 250, 0)),
    ]
    for rel, _, color in spec:
        _make_image(root / rel, color)
    (root / syn[1] / "notes.txt").write_text("not an image")
    expected = sorted(spec, key=lambda t: (t[0].split("/")[0], t[0].split("/")[1]))
    return root, expected


def test_class_folders_labels_ids_and_order(class_tree):
    root, expected = class_tree
    src = open_image_source(DataSpec(source=str(root)))
    assert isinstance(src, FileSource)
    assert [it.image_id for it in src.items] == [e[0] for e in expected]
    assert [it.true_index for it in src.items] == [e[1] for e in expected]
    # each id is "wnid/file" and the label is the index of its WordNet id
    syn = list_synsets()
    for it in src.items:
        wnid, name = it.image_id.split("/")
        assert syn.index(wnid) == it.true_index
        assert (root / wnid / name).is_file()
    # stable order: opening again gives the same list
    again = open_image_source(DataSpec(source=str(root)))
    assert again.items == src.items
    # open_image(i) opens the i-th listed file
    for i, (_, _, color) in enumerate(expected):
        img = src.open_image(i)
        assert img.mode == "RGB"
        px = np.asarray(img).reshape(-1, 3).mean(axis=0)
        assert np.allclose(px, color, atol=6), (i, px, color)


def test_class_folders_unknown_folder_named(class_tree):
    root, _ = class_tree
    (root / "not_a_wnid").mkdir()
    _make_image(root / "not_a_wnid" / "z.png", (0, 0, 0))
    with pytest.raises(DataError, match="not_a_wnid"):
        open_image_source(DataSpec(source=str(root)))


def test_class_folders_unknown_wnid_like_folder_named(tmp_path):
    root = tmp_path / "val"
    _make_image(root / list_synsets()[3] / "a.png", (1, 2, 3))
    _make_image(root / "n99999999" / "a.png", (1, 2, 3))
    with pytest.raises(DataError, match="n99999999"):
        open_image_source(DataSpec(source=str(root)))


def test_empty_tree_raises(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DataError):
        open_image_source(DataSpec(source=str(root)))


def test_class_folders_without_images_raise(tmp_path):
    root = tmp_path / "val"
    (root / list_synsets()[5]).mkdir(parents=True)
    (root / list_synsets()[5] / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image"):
        open_image_source(DataSpec(source=str(root)))


def test_missing_data_path_raises(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="does not exist") as e:
        open_image_source(DataSpec(source=str(missing)))
    assert str(missing) in str(e.value)


def test_data_path_that_is_a_file_raises(tmp_path):
    f = tmp_path / "file.jpg"
    _make_image(f, (1, 1, 1))
    with pytest.raises(DataError, match="not a folder"):
        open_image_source(DataSpec(source=str(f)))


# --------------------------------------------------------------------------------------------
# Hugging Face source


def _hf_images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (10 + i, 7 + i), (30 * i, 255 - 30 * i, 5)) for i in range(n)]


def _save_hf(path: Path, columns: dict, image_col: str = "image", label_col: str = "label",
             label_type: str = "int64") -> Path:
    import datasets
    from datasets import Features, Value

    feats = {image_col: datasets.Image(), label_col: Value(label_type)}
    for k in columns:
        if k not in feats:
            feats[k] = Value("string")
    ds = datasets.Dataset.from_dict(columns, features=Features(feats))
    ds.save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hf") / "ds"
    return _save_hf(path, {"image": _hf_images(4), "label": [0, 412, 999, 3]})


def test_hf_dataset_from_disk(hf_dir):
    src = open_image_source(DataSpec(source=f"hf:{hf_dir}"))
    assert isinstance(src, HFSource)
    assert [it.true_index for it in src.items] == [0, 412, 999, 3]
    assert [it.image_id for it in src.items] == [f"validation/{i}" for i in range(4)]
    for i, ref in enumerate(_hf_images(4)):
        img = src.open_image(i)
        assert img.mode == "RGB"
        assert img.size == ref.size
        assert np.array_equal(np.asarray(img), np.asarray(ref))
    assert src.description.startswith(f"hf:{hf_dir}:validation")


def test_hf_dataset_dict_split(tmp_path):
    import datasets
    from datasets import Features, Value

    feats = Features({"image": datasets.Image(), "label": Value("int64")})
    imgs = _hf_images(3)
    val = datasets.Dataset.from_dict({"image": imgs, "label": [5, 6, 7]}, features=feats)
    train = datasets.Dataset.from_dict({"image": imgs[:1], "label": [8]}, features=feats)
    datasets.DatasetDict({"validation": val, "train": train}).save_to_disk(str(tmp_path / "dd"))

    src = open_image_source(DataSpec(source=f"hf:{tmp_path / 'dd'}"))
    assert [it.true_index for it in src.items] == [5, 6, 7]
    assert [it.image_id for it in src.items] == ["validation/0", "validation/1", "validation/2"]
    assert src.open_image(2).size == imgs[2].size

    src_train = open_image_source(DataSpec(source=f"hf:{tmp_path / 'dd'}", hf_split="train"))
    assert [(it.image_id, it.true_index) for it in src_train.items] == [("train/0", 8)]

    with pytest.raises(DataError, match="test") as e:
        open_image_source(DataSpec(source=f"hf:{tmp_path / 'dd'}", hf_split="test"))
    assert "validation" in str(e.value) and "train" in str(e.value)


def test_hf_custom_columns(tmp_path):
    path = _save_hf(tmp_path / "c", {"img": _hf_images(2), "cls": [17, 18], "caption": ["a", "b"]},
                    image_col="img", label_col="cls")
    src = open_image_source(DataSpec(source=f"hf:{path}", hf_image_column="img", hf_label_column="cls"))
    assert [it.true_index for it in src.items] == [17, 18]
    img = src.open_image(1)
    assert img.mode == "RGB" and img.size == _hf_images(2)[1].size


@pytest.mark.parametrize("which", ["image", "label"])
def test_hf_missing_column_names_available_columns(tmp_path, which):
    path = _save_hf(tmp_path / "c", {"img": _hf_images(2), "cls": [1, 2]}, image_col="img", label_col="cls")
    spec = DataSpec(source=f"hf:{path}", hf_image_column="img" if which == "label" else "picture",
                    hf_label_column="cls" if which == "image" else "target")
    with pytest.raises(DataError) as e:
        open_image_source(spec)
    msg = str(e.value)
    assert ("picture" if which == "image" else "target") in msg
    assert "img" in msg and "cls" in msg  # the available columns


@pytest.mark.parametrize("bad", [1000, -1, 5000])
def test_hf_labels_out_of_range(tmp_path, bad):
    path = _save_hf(tmp_path / "c", {"image": _hf_images(3), "label": [1, bad, 2]})
    with pytest.raises(DataError, match=str(bad)):
        open_image_source(DataSpec(source=f"hf:{path}"))


def test_hf_null_label_raises(tmp_path):
    path = _save_hf(tmp_path / "c", {"image": _hf_images(2), "label": [1, None]})
    with pytest.raises(DataError):
        open_image_source(DataSpec(source=f"hf:{path}"))


def test_hf_float_labels_raise(tmp_path):
    path = _save_hf(tmp_path / "c", {"image": _hf_images(2), "label": [1.0, 2.5]}, label_type="float64")
    with pytest.raises(DataError):
        open_image_source(DataSpec(source=f"hf:{path}"))


def test_hf_image_column_that_holds_no_images_raises_data_error(tmp_path):
    # A user who swaps the columns (hf_image_column pointing at the integer labels) must get a
    # DataError, not a pyarrow exception.
    path = _save_hf(tmp_path / "c", {"image": _hf_images(2), "label": [1, 2]})
    with pytest.raises(DataError):
        open_image_source(DataSpec(source=f"hf:{path}", hf_image_column="label"))


def test_hf_empty_name_raises():
    with pytest.raises(DataError, match="hf:"):
        open_image_source(DataSpec(source="hf:"))


def test_hf_unknown_user_home_raises_data_error():
    # `hf:~someone/ds` where the user does not exist: Path.expanduser raises RuntimeError
    with pytest.raises(DataError):
        open_image_source(DataSpec(source="hf:~typoattack_no_such_user/ds"))


def test_hf_nonexistent_local_folder_raises_quickly(tmp_path):
    t0 = time.monotonic()
    with pytest.raises(DataError, match="cannot load"):
        open_image_source(DataSpec(source=f"hf:{tmp_path / 'no-such-dataset'}"))
    assert time.monotonic() - t0 < 20


def test_hf_nonexistent_hub_name_raises_quickly_offline(monkeypatch):
    # With the Hub switched to offline mode the failure must be a DataError, at once.
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="typoattack-no-such-org/no-such-dataset"):
        open_image_source(DataSpec(source="hf:typoattack-no-such-org/no-such-dataset"))
    assert time.monotonic() - t0 < 20


_HUB_SCRIPT = """
import sys, time
from typoattack.config.types import DataSpec
from typoattack.data.sources import open_image_source
from typoattack.errors import DataError
t0 = time.monotonic()
try:
    open_image_source(DataSpec(source="hf:typoattack-no-such-org/no-such-dataset"))
except DataError:
    print("DataError", round(time.monotonic() - t0, 1))
    sys.exit(0)
sys.exit(3)
"""


def test_hf_nonexistent_hub_name_without_network_fails_fast():
    """In the default (online) mode with no network, `hf:NAME` must fail with a DataError within
    10 s. Run in a subprocess so that a hang cannot stall the suite."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    t0 = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-c", _HUB_SCRIPT], capture_output=True, text=True,
                              timeout=12, env=env, cwd=PROJECT_DIR)
    except subprocess.TimeoutExpired:
        pytest.fail("open_image_source('hf:<unknown name>') took over 12 s without network (Hub retries)")
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert elapsed < 10, f"took {elapsed:.1f} s"


# --------------------------------------------------------------------------------------------
# load_rgb


def test_load_rgb_grayscale(tmp_path):
    p = tmp_path / "g.png"
    Image.new("L", (7, 5), 77).save(p)
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (7, 5)
    assert np.all(np.asarray(img) == 77)


def test_load_rgb_grayscale_jpeg(tmp_path):
    p = tmp_path / "g.jpg"
    Image.new("L", (16, 16), 130).save(p, quality=100)
    img = load_rgb(p)
    assert img.mode == "RGB"
    arr = np.asarray(img).astype(int)
    assert np.all(np.abs(arr - 130) <= 1)
    assert np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2])


def test_load_rgb_cmyk_jpeg(tmp_path):
    p = tmp_path / "c.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=100)  # pure red
    assert Image.open(p).mode == "CMYK"
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (16, 16)
    assert np.allclose(np.asarray(img).reshape(-1, 3).mean(0), (255, 0, 0), atol=4)


def test_load_rgb_rgba_drops_alpha(tmp_path):
    p = tmp_path / "a.png"
    Image.new("RGBA", (4, 3), (10, 20, 30, 0)).save(p)
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert np.all(np.asarray(img) == (10, 20, 30))


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
    im.putpixel((1, 1), 1)
    im.putpixel((2, 2), 2)
    return im


def test_load_rgb_palette(tmp_path):
    p = tmp_path / "p.png"
    _palette_image().save(p)
    assert Image.open(p).mode == "P"
    arr = np.asarray(load_rgb(p))
    assert load_rgb(p).mode == "RGB"
    assert tuple(arr[0, 0]) == (255, 0, 0)
    assert tuple(arr[1, 1]) == (0, 255, 0)
    assert tuple(arr[2, 2]) == (0, 0, 255)


@pytest.mark.parametrize("ext", ["png", "gif"])
def test_load_rgb_palette_with_transparency(tmp_path, ext):
    p = tmp_path / f"pt.{ext}"
    _palette_image().save(p, transparency=0)
    opened = Image.open(p)
    assert opened.mode == "P" and "transparency" in opened.info
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (4, 4)
    arr = np.asarray(img)
    assert tuple(arr[1, 1]) == (0, 255, 0)
    assert tuple(arr[2, 2]) == (0, 0, 255)


@pytest.mark.parametrize("value,expected", [(65535, 255), (32768, 128), (0, 0), (13107, 51)])
def test_load_rgb_16bit_png(tmp_path, value, expected):
    p = tmp_path / "i16.png"
    Image.fromarray(np.full((5, 6), value, np.uint16)).save(p)
    assert Image.open(p).mode == "I;16"
    img = load_rgb(p)
    assert img.mode == "RGB" and img.size == (6, 5)
    assert np.all(np.asarray(img) == expected)


def test_load_rgb_16bit_png_gradient(tmp_path):
    p = tmp_path / "i16.png"
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], np.uint16)
    Image.fromarray(values).save(p)
    arr = np.asarray(load_rgb(p))
    assert np.array_equal(arr[..., 0], [[0, 100], [200, 255]])


def test_load_rgb_dark_16bit_png_is_not_rescaled_as_8bit(tmp_path):
    """A 16-bit PNG uses the 0-65535 range whatever its content: a dark image whose
    values stay <= 255 (of 65535) must stay dark, not be read as 8-bit."""
    p = tmp_path / "dark.png"
    Image.fromarray(np.full((4, 4), 200, np.uint16)).save(p)
    assert Image.open(p).mode == "I;16"
    arr = np.asarray(load_rgb(p))
    assert np.all(arr == round(200 / 65535 * 255)), arr[0, 0]


def test_load_rgb_exif_rotation(tmp_path):
    p = tmp_path / "r.jpg"
    im = Image.new("RGB", (40, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 10, 10))  # blue square at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(p, exif=exif, quality=95)
    assert Image.open(p).size == (40, 20)
    img = load_rgb(p)
    assert img.mode == "RGB"
    assert img.size == (20, 40)  # width and height swap
    arr = np.asarray(img).astype(int)
    # after a clockwise turn the stored top-left corner is at the top-right
    assert np.allclose(arr[2:8, 12:18].reshape(-1, 3).mean(0), (0, 0, 255), atol=12)
    assert np.allclose(arr[2:8, 2:8].reshape(-1, 3).mean(0), (255, 0, 0), atol=12)
    assert np.allclose(arr[32:38, 12:18].reshape(-1, 3).mean(0), (255, 0, 0), atol=12)


def test_load_rgb_from_bytes_io(tmp_path):
    import io

    buf = io.BytesIO()
    Image.new("L", (3, 3), 5).save(buf, format="PNG")
    buf.seek(0)
    img = load_rgb(buf)
    assert img.mode == "RGB" and np.all(np.asarray(img) == 5)


def test_load_rgb_garbage_raises(tmp_path):
    p = tmp_path / "bad.JPEG"
    p.write_bytes(b"this is not an image" * 10)
    with pytest.raises(UnidentifiedImageError):
        load_rgb(p)


# --------------------------------------------------------------------------------------------
# Labels CSV validation


@pytest.fixture
def img_dir(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for i, name in enumerate(["a.jpg", "b.png", "c.jpg"]):
        _make_image(root / name, (i * 50, 0, 0))
    return root


def test_labels_csv_good(img_dir):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("b.png", 999), ("c.jpg", 0)])
    src = open_image_source(DataSpec(source=str(img_dir)))
    assert [(it.image_id, it.true_index) for it in src.items] == [("a.jpg", 3), ("b.png", 999), ("c.jpg", 0)]


def test_labels_csv_missing_class_index_column(img_dir):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3)], header=("file", "label"))
    with pytest.raises(DataError, match="class_index"):
        open_image_source(DataSpec(source=str(img_dir)))


def test_labels_csv_missing_file_column(img_dir):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3)], header=("path", "class_index"))
    with pytest.raises(DataError, match="file"):
        open_image_source(DataSpec(source=str(img_dir)))


def test_labels_csv_duplicate_file(img_dir):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("b.png", 4), ("a.jpg", 5)])
    with pytest.raises(DataError, match="twice") as e:
        open_image_source(DataSpec(source=str(img_dir)))
    assert "a.jpg" in str(e.value)


@pytest.mark.parametrize("bad", ["1000", "-1", "abc", "2.5", ""])
def test_labels_csv_bad_class_index(img_dir, bad):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("b.png", bad)])
    with pytest.raises(DataError, match="0-999") as e:
        open_image_source(DataSpec(source=str(img_dir)))
    assert "b.png" in str(e.value)


def test_labels_csv_listed_file_missing(img_dir):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("ghost.jpg", 4)])
    with pytest.raises(DataError, match="ghost.jpg"):
        open_image_source(DataSpec(source=str(img_dir)))


def test_labels_csv_empty(img_dir):
    _write_csv(img_dir / "labels.csv", [])
    with pytest.raises(DataError, match="no rows"):
        open_image_source(DataSpec(source=str(img_dir)))


def test_labels_csv_zero_bytes(img_dir):
    (img_dir / "labels.csv").write_bytes(b"")
    with pytest.raises(DataError, match="labels.csv"):
        open_image_source(DataSpec(source=str(img_dir)))


def test_explicit_labels_path_missing(img_dir):
    missing = img_dir / "nope.csv"
    with pytest.raises(DataError, match="does not exist") as e:
        open_image_source(DataSpec(source=str(img_dir), labels=str(missing)))
    assert "nope.csv" in str(e.value)


# --------------------------------------------------------------------------------------------
# select_subset


def _items(sizes: dict[int, int]) -> list[ImageItem]:
    items = []
    for c, n in sizes.items():
        items += [ImageItem(f"{c}/{k}", c) for k in range(n)]
    return items


def test_select_subset_one_per_class(sample_source):
    items = sample_source.items
    a = select_subset(items, 100, seed=0)
    assert len(a) == 100
    assert a == sorted(a) and len(set(a)) == 100
    assert all(0 <= i < 500 for i in a)
    assert len({items[i].true_index for i in a}) == 100
    assert select_subset(items, 100, seed=0) == a
    b = select_subset(items, 100, seed=1)
    assert b != a and len(b) == 100


def test_select_subset_three_classes():
    items = _items({7: 10, 3: 10, 500: 10})
    sel = select_subset(items, 9, seed=0)
    assert len(sel) == 9 and sel == sorted(sel)
    assert Counter(items[i].true_index for i in sel) == {7: 3, 3: 3, 500: 3}
    seeds = {tuple(select_subset(items, 9, seed=s)) for s in range(5)}
    assert len(seeds) > 1


def test_select_subset_uneven_classes():
    items = _items({1: 1, 2: 10, 3: 10})
    sel = select_subset(items, 9, seed=3)
    assert Counter(items[i].true_index for i in sel) == {1: 1, 2: 4, 3: 4}


@pytest.mark.parametrize("limit", [None, 30, 31, 1000])
def test_select_subset_all(limit):
    items = _items({0: 10, 1: 10, 2: 10})
    assert select_subset(items, limit, seed=5) == list(range(30))


def test_select_subset_negative_seed_works():
    """build_run_config accepts any integer seed (e.g. `seed: -1`, `--seed -1`), and the runner
    passes it to select_subset, so a negative seed must not crash."""
    items = _items({0: 10, 1: 10, 2: 10})
    sel = select_subset(items, 6, seed=-1)
    assert len(sel) == 6


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=8), limit=st.integers(1, 100),
       seed=st.integers(0, 2**32))
def test_select_subset_properties(sizes, limit, seed):
    items = _items({c * 3: n for c, n in enumerate(sizes)})
    sel = select_subset(items, limit, seed)
    assert sel == sorted(sel) and len(set(sel)) == len(sel)
    assert len(sel) == min(limit, len(items))
    assert sel == select_subset(items, limit, seed)
    counts = Counter(items[i].true_index for i in sel)
    size = Counter(it.true_index for it in items)
    # balanced: a class that still has images left never has 2+ fewer than another class
    for a in size:
        if counts[a] < size[a]:
            assert all(counts[b] <= counts[a] + 1 for b in size), (counts, size)


# --------------------------------------------------------------------------------------------
# Canvas cache


SAMPLE_INDICES = list(range(19)) + [201]  # 201 is a grayscale JPEG


def test_prepare_canvases_content_and_cache(sample_source, sample_dir, tmp_path, monkeypatch):
    tf = _canvas_transform()
    cache = tmp_path / "cache"
    progress_calls: list[int] = []
    cs = prepare_canvases(sample_source, SAMPLE_INDICES, tf, "resize64", (64, 64), cache,
                          workers=0, progress=progress_calls.append)
    assert cs.canvases.shape == (20, 64, 64, 3)
    assert cs.canvases.dtype == np.uint8
    assert cs.valid.dtype == bool and cs.valid.all()
    assert cs.skipped == []
    assert cs.items == [sample_source.items[i] for i in SAMPLE_INDICES]
    assert sum(progress_calls) == 20
    for k, i in enumerate(SAMPLE_INDICES):
        ref = np.asarray(tf(Image.open(sample_dir / sample_source.items[i].image_id).convert("RGB")))
        assert np.array_equal(cs.canvases[k], ref), k
    path = Path(cs.path)
    assert path.is_file() and path.parent == cache / "canvases"
    files_before = sorted(p.name for p in (cache / "canvases").iterdir())
    assert not any(n.endswith(".tmp") for n in files_before)

    # second call: served from the cache, no image decoded
    def boom(index):
        raise AssertionError("open_image called on a cache hit")

    monkeypatch.setattr(sample_source, "open_image", boom)
    cs2 = prepare_canvases(sample_source, SAMPLE_INDICES, tf, "resize64", (64, 64), cache, workers=0)
    assert cs2.path == cs.path
    assert np.array_equal(np.asarray(cs2.canvases), np.asarray(cs.canvases))
    assert cs2.valid.all() and cs2.skipped == []
    assert sorted(p.name for p in (cache / "canvases").iterdir()) == files_before
    monkeypatch.undo()

    # a different transform key is a different cache file
    key_a = get_canvas_cache_key(sample_source, SAMPLE_INDICES, "resize64")
    key_b = get_canvas_cache_key(sample_source, SAMPLE_INDICES, "resize64-v2")
    assert key_a != key_b
    cs3 = prepare_canvases(sample_source, SAMPLE_INDICES, tf, "resize64-v2", (64, 64), cache, workers=0)
    assert cs3.path != cs.path
    assert len(list((cache / "canvases").glob("*.npy"))) == 2
    assert np.array_equal(np.asarray(cs3.canvases), np.asarray(cs.canvases))


def test_prepare_canvases_workers_equal(sample_source, tmp_path):
    tf = _canvas_transform()
    idx = SAMPLE_INDICES[:12] + [201]
    a = prepare_canvases(sample_source, idx, tf, "r64", (64, 64), tmp_path / "c0", workers=0)
    b = prepare_canvases(sample_source, idx, tf, "r64", (64, 64), tmp_path / "c2", workers=2)
    assert np.array_equal(np.asarray(a.canvases), np.asarray(b.canvases))
    assert np.array_equal(a.valid, b.valid)
    assert Path(a.path).name == Path(b.path).name  # same cache key


def test_prepare_canvases_skips_corrupt_file(sample_dir, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    names = ["n01440764_tench.JPEG", "n01484850_great_white_shark.JPEG", "n01494475_hammerhead.JPEG"]
    for n in names:
        shutil.copy(sample_dir / n, root / n)
    (root / "broken.JPEG").write_bytes(b"\xff\xd8\xff garbage, not a JPEG" * 20)
    _write_csv(root / "labels.csv", [(names[0], 0), ("broken.JPEG", 10), (names[1], 2), (names[2], 4)])
    src = open_image_source(DataSpec(source=str(root)))
    tf = _canvas_transform()
    cs = prepare_canvases(src, [0, 1, 2, 3], tf, "r64", (64, 64), tmp_path / "cache", workers=0)
    assert cs.valid.tolist() == [True, False, True, True]
    assert len(cs.skipped) == 1
    image_id, reason = cs.skipped[0]
    assert image_id == "broken.JPEG" and reason
    assert np.all(np.asarray(cs.canvases[1]) == 0)
    for k, name in zip([0, 2, 3], names):
        ref = np.asarray(tf(Image.open(root / name).convert("RGB")))
        assert np.array_equal(cs.canvases[k], ref)
    # the cache remembers the skipped row
    cs2 = prepare_canvases(src, [0, 1, 2, 3], tf, "r64", (64, 64), tmp_path / "cache", workers=0)
    assert cs2.path == cs.path
    assert cs2.valid.tolist() == [True, False, True, True]
    assert [tuple(s) for s in cs2.skipped] == [tuple(s) for s in cs.skipped]


def test_prepare_canvases_wrong_canvas_size_is_skipped(class_tree, tmp_path):
    root, _ = class_tree
    src = open_image_source(DataSpec(source=str(root)))
    # the transform makes 64x64 but canvas_size says 32x32: every image is reported, none kept
    cs = prepare_canvases(src, [0, 1], _canvas_transform(), "r64-as-32", (32, 32), tmp_path / "c", workers=0)
    assert cs.canvases.shape == (2, 32, 32, 3)
    assert not cs.valid.any()
    assert all("shape" in reason for _, reason in cs.skipped)


def test_canvas_cache_key_changes_with_image_list(sample_source):
    k = get_canvas_cache_key(sample_source, [0, 1, 2], "t")
    assert k == get_canvas_cache_key(sample_source, [0, 1, 2], "t")
    assert k != get_canvas_cache_key(sample_source, [0, 1, 3], "t")
    assert k != get_canvas_cache_key(sample_source, [0, 1], "t")
    assert k != get_canvas_cache_key(sample_source, [0, 1, 2, 4], "t")
    assert k != get_canvas_cache_key(sample_source, [0, 1, 2], "u")


def test_canvas_cache_key_changes_with_labels(img_dir, tmp_path):
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("b.png", 4)])
    k1 = get_canvas_cache_key(open_image_source(DataSpec(source=str(img_dir))), [0, 1], "t")
    _write_csv(img_dir / "labels.csv", [("a.jpg", 3), ("b.png", 5)])
    k2 = get_canvas_cache_key(open_image_source(DataSpec(source=str(img_dir))), [0, 1], "t")
    assert k1 != k2
