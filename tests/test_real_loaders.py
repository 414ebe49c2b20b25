"""Loaders of the real typographic-attack datasets (no model): each published format, the
config of `typoattack real`, and format errors that name the file or column."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from real_datasets_builders import (
    OBJECTS, SCAM_PHOTOS, WORDS, make_csv_folder, make_disentangle, make_named_folder, make_scam,
)
from typoattack.config.types import Protocol, RealDataset
from typoattack.tasks.real.config import PHOTO_OF, PHOTO_OF_A, get_default_templates, load_real_config
from typoattack.data.real_datasets import (
    ATTACKED, get_photo_id, open_real_dataset, parse_file_name, select_photos,
)
from typoattack.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def scam_dir(tmp_path_factory) -> Path:
    return make_scam(tmp_path_factory.mktemp("scam") / "ds")


@pytest.mark.parametrize("name, expected", [
    ("label=dog_text=cat.png", ("dog", "cat")),
    ("label=coffee mug_text=good luck.JPG", ("coffee mug", "good luck")),
    ("label=dog_text=cat_2.png", ("dog", "cat")),
    ("label=dog_text=ipod 2.png", ("dog", "ipod 2")),
])
def test_parse_file_name(name, expected) -> None:
    assert parse_file_name(name) == expected


@pytest.mark.parametrize("name", ["dog_cat.png", "label=dog.png", "text=cat_label=dog.png", "label=_text=cat.png"])
def test_parse_file_name_rejects_other_names(name) -> None:
    with pytest.raises(DataError, match="label=<object>_text=<word>"):
        parse_file_name(name)


@pytest.mark.parametrize("dataset", [RealDataset.RTA100, RealDataset.PAINT, RealDataset.FOLDER])
def test_named_files_are_found_recursively(tmp_path, dataset) -> None:
    make_named_folder(tmp_path, sub="typographic_attacks", numbered=True)
    source = open_real_dataset(dataset, str(tmp_path))
    assert len(source.items) == len(OBJECTS) * len(WORDS) + 1
    pairs = {(i.object_label, i.attack_word) for i in source.items}
    assert pairs == {(o, w) for o in OBJECTS for w in WORDS}
    assert all(i.variant == ATTACKED and i.image_id.startswith("typographic_attacks/") for i in source.items)
    assert source.list_vocabulary() == sorted(set(OBJECTS) | set(WORDS))
    second = next(k for k, i in enumerate(source.items) if i.image_id.endswith("cat_2.png"))
    assert source.open_image(second).size == (80, 96)


def test_disentangle_annotations_and_images_folder(tmp_path) -> None:
    make_disentangle(tmp_path)
    source = open_real_dataset(RealDataset.DISENTANGLE, str(tmp_path))
    assert len(source.items) == 6
    first = source.items[0]
    assert (first.image_id, first.object_label, first.attack_word) == ("IMG_2930.JPG", "dog", "cat")
    assert source.open_image(0).mode == "RGB"


def test_disentangle_accepts_annotation_json_one_level_down(tmp_path) -> None:
    make_disentangle(tmp_path / "typographic_attack_dataset", file_name="annotation.json")
    assert len(open_real_dataset(RealDataset.DISENTANGLE, str(tmp_path)).items) == 6


def test_folder_with_csv(tmp_path) -> None:
    make_csv_folder(tmp_path)
    source = open_real_dataset(RealDataset.FOLDER, str(tmp_path))
    assert [(i.image_id, i.object_label, i.attack_word) for i in source.items][:2] == [
        ("pics/photo0.png", "dog", "ipod"), ("pics/photo1.png", "dog", "good")]
    assert source.description.startswith("csv:")


def test_scam_from_save_to_disk(scam_dir) -> None:
    source = open_real_dataset(RealDataset.SCAM, f"hf:{scam_dir}")
    assert len(source.items) == 13
    assert {i.variant for i in source.items} == {"SCAM", "NoSCAM", "SynthSCAM"}
    by_photo: dict[str, set[tuple[str, str]]] = {}
    for item in source.items:
        by_photo.setdefault(item.photo_id, set()).add((item.object_label, item.attack_word))
    assert sorted(by_photo) == [f"img_{k:04d}" for k in range(len(SCAM_PHOTOS))]
    assert all(len(v) == 1 for v in by_photo.values())
    no_text = [i for i in source.items if i.variant == "NoSCAM"]
    assert all(i.postit_area_pct == 0.0 for i in no_text)
    assert all(math.isclose(i.postit_area_pct, 14.5) for i in source.items if i.variant != "NoSCAM")
    # A plain folder path works too (the save_to_disk folder without the hf: prefix).
    assert len(open_real_dataset(RealDataset.SCAM, str(scam_dir)).items) == 13


def test_photo_id_strips_a_variant_prefix() -> None:
    assert get_photo_id("SCAM_img_0001", "SCAM") == "img_0001"
    assert get_photo_id("NoSCAM_img_0001", "NoSCAM") == "img_0001"
    assert get_photo_id("SynthSCAM-img_0001", "SynthSCAM") == "img_0001"
    assert get_photo_id("img_0001", "SCAM") == "img_0001"


def test_select_photos_keeps_variants_of_a_photo_together(scam_dir) -> None:
    items = open_real_dataset(RealDataset.SCAM, f"hf:{scam_dir}").items
    chosen = select_photos(items, 2, seed=0)
    photos = {items[i].photo_id for i in chosen}
    assert len(photos) == 2
    assert chosen == sorted(i for i, item in enumerate(items) if item.photo_id in photos)
    assert chosen == select_photos(items, 2, seed=0)
    assert select_photos(items, None, seed=0) == list(range(len(items)))


# Format errors: one DataError naming the file or column.

def test_unparsable_file_name_names_the_file(tmp_path) -> None:
    make_named_folder(tmp_path)
    (tmp_path / "IMG_0001.png").write_bytes((tmp_path / "label=dog_text=cat.png").read_bytes())
    with pytest.raises(DataError, match=r"IMG_0001\.png.*label=<object>_text=<word>"):
        open_real_dataset(RealDataset.RTA100, str(tmp_path))


def test_empty_folder(tmp_path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path} holds no image files"):
        open_real_dataset(RealDataset.PAINT, str(tmp_path))


def test_csv_missing_column_names_it(tmp_path) -> None:
    make_csv_folder(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text(csv.read_text().replace("attack_word", "text"))
    with pytest.raises(DataError, match=r"labels\.csv has no column 'attack_word'"):
        open_real_dataset(RealDataset.FOLDER, str(tmp_path))


def test_csv_missing_file(tmp_path) -> None:
    make_csv_folder(tmp_path)
    (tmp_path / "pics" / "photo3.png").unlink()
    with pytest.raises(DataError, match=r"missing under .*'pics/photo3\.png'"):
        open_real_dataset(RealDataset.FOLDER, str(tmp_path))


def test_image_missing_from_annotations(tmp_path) -> None:
    make_disentangle(tmp_path)
    shutil.copy(tmp_path / "images" / "IMG_2930.JPG", tmp_path / "images" / "IMG_9999.JPG")
    with pytest.raises(DataError, match=r"'IMG_9999\.JPG' .* is missing from the annotations .*annotations\.json"):
        open_real_dataset(RealDataset.DISENTANGLE, str(tmp_path))


def test_annotation_without_attack_label(tmp_path) -> None:
    make_disentangle(tmp_path)
    path = tmp_path / "annotations.json"
    doc = json.loads(path.read_text())
    del doc["IMG_2931.JPG"]["typographic attack label"]
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\.json: entry 'IMG_2931\.JPG' has no 'typographic attack label'"):
        open_real_dataset(RealDataset.DISENTANGLE, str(tmp_path))


def test_no_annotations_file(tmp_path) -> None:
    make_named_folder(tmp_path)
    with pytest.raises(DataError, match=r"holds no annotations\.json or annotation\.json"):
        open_real_dataset(RealDataset.DISENTANGLE, str(tmp_path))


def test_scam_missing_column_names_it(tmp_path) -> None:
    make_scam(tmp_path / "ds", drop_column="attack_word")
    with pytest.raises(DataError, match=r"has no column 'attack_word'"):
        open_real_dataset(RealDataset.SCAM, f"hf:{tmp_path / 'ds'}")


def test_scam_unknown_split(scam_dir, tmp_path) -> None:
    import datasets

    datasets.DatasetDict({"train": datasets.load_from_disk(str(scam_dir))}).save_to_disk(str(tmp_path / "dd"))
    assert len(open_real_dataset(RealDataset.SCAM, f"hf:{tmp_path / 'dd'}", "train").items) == 13
    with pytest.raises(DataError, match=r"no split 'test'"):
        open_real_dataset(RealDataset.SCAM, f"hf:{tmp_path / 'dd'}", "test")


# Config.

def test_default_templates_follow_each_paper() -> None:
    assert get_default_templates(RealDataset.RTA100, Protocol.UNION) == PHOTO_OF_A
    assert get_default_templates(RealDataset.PAINT, Protocol.BINARY) == PHOTO_OF_A
    assert get_default_templates(RealDataset.DISENTANGLE, Protocol.UNION) == PHOTO_OF
    assert get_default_templates(RealDataset.SCAM, Protocol.UNION) == PHOTO_OF_A
    assert get_default_templates(RealDataset.SCAM, Protocol.BINARY) == "openai"


def test_real_config_yaml_then_flags(tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "real.yaml").write_text(
        "dataset: rta100\ndata: data\nprotocol: binary\nmodels:\n  - {name: typoattack-tiny, pretrained: 'seed:0'}\n"
        "  - {name: typoattack-tiny, pretrained: 'seed:1'}\nout: results\nlimit: 5\n")
    cfg = load_real_config(tmp_path / "real.yaml", {"protocol": "union", "seed": 3})
    assert cfg.dataset is RealDataset.RTA100 and cfg.protocol is Protocol.UNION and cfg.seed == 3
    assert cfg.data.source == str(tmp_path / "data") and cfg.data.hf_split == "train" and cfg.out == str(tmp_path / "results") and cfg.limit == 5
    assert [m.label for m in cfg.models] == ["typoattack-tiny/seed:0", "typoattack-tiny/seed:1"]
    cfg = load_real_config(tmp_path / "real.yaml", {"model": ["typoattack-tiny"], "pretrained": ["seed:7"]})
    assert [m.label for m in cfg.models] == ["typoattack-tiny/seed:7"]
    assert "out" not in cfg.fingerprint() and '"protocol": "binary"' in cfg.fingerprint()


@pytest.mark.parametrize("raw, message", [
    ({"data": "x", "model": "m", "pretrained": "p"}, "no dataset given"),
    ({"dataset": "rta100", "model": "m", "pretrained": "p"}, "no data given"),
    ({"dataset": "rta", "data": "x", "model": "m"}, "choose one of scam, rta100"),
    ({"dataset": "rta100", "data": "x", "model": "m", "protocol": "pairwise"}, "choose one of union, binary"),
    ({"dataset": "rta100", "data": "hf:x", "model": "m"}, "hf:... is read for --dataset scam only"),
    ({"dataset": "rta100", "data": "x", "model": "m", "fraction": 0.1}, "unknown config key `fraction`"),
    ({"dataset": "rta100", "data": "x", "model": "m", "templates": "none.yaml"}, "neither 'dataset', 'openai'"),
])
def test_real_config_errors(raw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_real_config(None, raw)


def test_real_tables_loaders_and_config_import_no_model_code() -> None:
    import subprocess
    import sys

    code = ("import sys, typoattack.config.types; bad = [m for m in ('torch', 'yaml', 'typer') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    code = ("import sys, typoattack.tasks.real.tables, typoattack.tasks.real.report, typoattack.tasks.real.config, "
            "typoattack.data.real_datasets; bad = [m for m in ('torch', 'open_clip', 'typer', 'typoattack.backends.open_clip', "
            "'typoattack.tasks.real.evaluate') if m in sys.modules]; print(bad); sys.exit(bool(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unpaired_scam_ids_are_warned_about() -> None:
    from typoattack.data.real_datasets import RealItem, RealSource
    from typoattack.tasks.real.task import get_unpaired_warning

    def source(ids: list[tuple[str, str]]) -> RealSource:
        return RealSource("t", [RealItem(f"r{k}", "o", "w", v, pid) for k, (v, pid) in enumerate(ids)], None)

    paired = source([("SCAM", "a"), ("NoSCAM", "a"), ("NoSCAM", "b")])
    assert get_unpaired_warning(paired, [0, 1, 2]) is None
    assert "no NoSCAM photo shares its `id`" in get_unpaired_warning(paired, [0, 2])
    assert get_unpaired_warning(source([("attacked", "x")]), [0]) is None
