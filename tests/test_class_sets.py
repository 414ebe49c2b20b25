"""Class sets (`--classes`): the shipped CLIP prompts asset, names files, `hf` ClassLabel names, labels checked
against the set, vocabularies made from it (`classes`, `random-class`), `--templates dataset`, the fingerprint
rule for a setting added with its default, and small `eval` runs on a non-ImageNet class set."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from class_sets_builders import TEN_NAMES, build_hf_class_dataset, build_names_folder
from typoattack.cli import app
from typoattack.config.classes import DATASET_TEMPLATES, OMIT_DEFAULT, load_builtin_class_sets, parse_class_set
from typoattack.config.common import RunSettings
from typoattack.config.options import Panel, option
from typoattack.config.types import DataSpec, ModelSpec, Placement, RenderStyle
from typoattack.constants import CLASS_SETS_FILE, RANDOM_CLASS_WORD
from typoattack.data.class_sets import ClassSet, get_imagenet_class_set, load_class_set, read_class_names_file
from typoattack.data.sources import open_image_source
from typoattack.data.vocab import build_class_vocab, load_attack_vocab, load_vocab
from typoattack.errors import ConfigError, DataError
from typoattack.records import count_image_conditions, draw_other_class, list_conditions, select_condition_images
from typoattack.tasks.synthetic.config import load_synthetic_config

runner = CliRunner()
PROJECT_DIR = Path(__file__).resolve().parents[1]
DEMO = ["--model", "typoattack-reader-tiny", "--pretrained", "ci500", "--device", "cpu", "--workers", "0"]


@pytest.fixture(scope="module")
def hf_ten(tmp_path_factory) -> Path:
    return build_hf_class_dataset(tmp_path_factory.mktemp("hf-ten"))


@pytest.fixture(scope="module")
def names_folder(tmp_path_factory) -> tuple[Path, Path, Path]:
    return build_names_folder(tmp_path_factory.mktemp("names"))


# --------------------------------------------------------------------------------------------
# The asset and the class sets


def test_the_asset_has_the_common_datasets_with_their_own_templates() -> None:
    doc = load_builtin_class_sets()
    sizes = {"cifar10": 10, "cifar100": 100, "food101": 101, "pets": 37, "cars": 196, "flowers": 102,
             "aircraft": 100, "dtd": 47, "sun397": 397, "eurosat": 10, "caltech101": 102, "gtsrb": 43, "stl10": 10}
    for name, n in sizes.items():
        entry = doc["class_sets"][name]
        assert len(entry["classes"]) == n and len(set(entry["classes"])) == n, name
        assert entry["templates"] and all(t.count("{}") == 1 for t in entry["templates"]), name
    assert doc["class_sets"]["cifar10"]["classes"] == list(TEN_NAMES)
    assert doc["commit"] in doc["source"] and "MIT" in doc["licence"]
    assert (CLASS_SETS_FILE.parent / "README.md").read_text().count("MIT") >= 1


def test_the_asset_is_what_the_script_builds_from_the_clip_prompts() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_class_sets", PROJECT_DIR / "scripts" / "build_class_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = ("# Prompts\n\n## CIFAR10\n\n```bash\nclasses = [\n    'airplane',\n    'automobile',\n]\n\n"
            "templates = [\n    'a photo of a {}.',\n]\n```\n\n## FacialEmotionRecognition2013\n\n```bash\n"
            "classes = [\n    ['angry'],\n    ['happy', 'smiling'],\n]\n\ntemplates = [\n    'a {} face.',\n]\n```\n")
    doc = module.build(text, "abc123")
    assert doc["class_sets"] == {"cifar10": {"title": "CIFAR10", "classes": ["airplane", "automobile"],
                                             "templates": ["a photo of a {}."]}}
    assert doc["skipped"] == ["FacialEmotionRecognition2013: a class has several names"]
    shipped = load_builtin_class_sets()
    assert set(shipped) == set(doc) and shipped["skipped"] == doc["skipped"]


def test_class_set_names_aliases_and_files(tmp_path) -> None:
    assert parse_class_set("CIFAR100") == "cifar100" and parse_class_set("fgvc_aircraft") == "aircraft"
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert parse_class_set(str(names)) == str(names.resolve())
    assert parse_class_set("names.txt", tmp_path) == str(names.resolve())
    with pytest.raises(ConfigError, match="Did you mean 'cifar100'"):
        parse_class_set("cifar1000")
    with pytest.raises(ConfigError, match="does not exist"):
        parse_class_set(str(tmp_path / "missing.txt"))


def test_names_files_one_a_line_or_yaml(tmp_path, names_folder) -> None:
    _, _, text_file = names_folder
    assert read_class_names_file(text_file) == TEN_NAMES  # the comment line is skipped
    yaml_file = build_names_folder(tmp_path / "y", yaml_names=True)[2]
    assert read_class_names_file(yaml_file) == TEN_NAMES
    mapping = tmp_path / "m.yaml"
    mapping.write_text("classes: [x, y]\n")
    assert read_class_names_file(mapping) == ("x", "y")
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="no class names"):
        read_class_names_file(empty)
    bad = tmp_path / "b.yaml"
    bad.write_text("- a\n- [b]\n")
    with pytest.raises(ConfigError, match="not a class name"):
        read_class_names_file(bad)


def test_hf_class_label_names_and_one_line_otherwise(hf_ten, tmp_path) -> None:
    spec = DataSpec(f"hf:{hf_ten}", hf_split="train", hf_image_column="img", hf_label_column="fine_label")
    classes = load_class_set("hf", spec)
    assert classes.names == TEN_NAMES and classes.describe() == f"hf:{hf_ten} fine_label (10 classes)"
    import datasets

    from typoattack.constants import SAMPLE_DIR

    first = sorted(SAMPLE_DIR.glob("*.JPEG"))[0]
    plain = datasets.Dataset.from_dict({"image": [str(first)], "label": [3]}, features=datasets.Features(
        {"image": datasets.Image(), "label": datasets.Value("int64")}))
    plain.save_to_disk(str(tmp_path / "plain"))
    with pytest.raises(DataError, match="not a ClassLabel") as e:
        load_class_set("hf", DataSpec(f"hf:{tmp_path / 'plain'}", hf_split="train"))
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="is not one"):
        load_class_set("hf", DataSpec("/some/folder"))


def test_labels_are_indices_into_the_class_set(names_folder, tmp_path) -> None:
    images, labels, _ = names_folder
    source = open_image_source(DataSpec(str(images), labels=str(labels)), 10, "names.txt")
    assert sorted({it.true_index for it in source.items}) == list(range(10))
    with pytest.raises(DataError, match="class_index of .* is not a class index 0-4 of class set five") as e:
        open_image_source(DataSpec(str(images), labels=str(labels)), 5, "five")
    assert "\n" not in str(e.value)
    # A WordNet-id folder is ImageNet's alone.
    (tmp_path / "n01440764").mkdir()
    with pytest.raises(DataError, match="WordNet-id sub-folders is read only with --classes imagenet"):
        open_image_source(DataSpec(str(tmp_path)), 10, "cifar10")


def test_hf_labels_outside_the_set_are_one_line(hf_ten) -> None:
    spec = DataSpec(f"hf:{hf_ten}", hf_split="train", hf_image_column="img", hf_label_column="fine_label")
    with pytest.raises(DataError, match="holds 5, not a class index 0-4 of class set five"):
        open_image_source(spec, 5, "five")


def test_targets_resolve_against_the_class_set(tmp_path) -> None:
    cifar = load_class_set("cifar10")
    vocab = tmp_path / "v.yaml"
    vocab.write_text("words:\n  - {text: plane, target: Airplane}\n  - {text: lorry, target: 9}\n")
    assert [(w.text, w.target_index) for w in load_vocab(vocab, cifar).words] == [("plane", 0), ("lorry", 9)]
    vocab.write_text("words:\n  - {text: x, target: aeroplane}\n")
    with pytest.raises(ConfigError, match="matches no class of class set cifar10"):
        load_vocab(vocab, cifar)
    vocab.write_text("words:\n  - {text: x, target: 10}\n")
    with pytest.raises(ConfigError, match="outside 0-9"):
        load_vocab(vocab, cifar)
    # WordNet lemmas stay ImageNet's.
    vocab.write_text("words:\n  - {text: bin, target: dustbin}\n")
    assert load_vocab(vocab, get_imagenet_class_set()).words[0].target_index == 412
    with pytest.raises(ConfigError):
        load_vocab(vocab, cifar)
    vocab.write_text(f"words:\n  - {{text: {RANDOM_CLASS_WORD}, target: 1}}\n")
    with pytest.raises(ConfigError, match="reserved"):
        load_vocab(vocab, cifar)


def test_vocabularies_from_the_class_set() -> None:
    cifar = load_class_set("cifar10")
    vocab = load_attack_vocab("classes", cifar)
    assert [(w.text, w.target_index) for w in vocab.words] == [(n, i) for i, n in enumerate(TEN_NAMES)]
    # ImageNet names two classes "missile" (and others twice): each name once, aimed at its first class.
    imagenet = build_class_vocab(get_imagenet_class_set())
    assert len(imagenet.words) == len({w.text for w in imagenet.words}) < 1000
    random = load_attack_vocab(RANDOM_CLASS_WORD, cifar)
    assert random.pseudo_word == RANDOM_CLASS_WORD and len(random.words) == 10


def test_templates_dataset_is_the_class_sets_own() -> None:
    from typoattack.config.parsing import load_templates
    from typoattack.tasks.shared import get_templates

    spec = ModelSpec("typoattack-reader-tiny", "ci500")
    cifar = load_class_set("cifar10")
    assert get_templates(DATASET_TEMPLATES, spec, cifar) == tuple(load_builtin_class_sets()["class_sets"]["cifar10"]
                                                                   ["templates"])
    assert get_templates(DATASET_TEMPLATES, spec, get_imagenet_class_set()) == load_templates("openai")
    assert get_templates("photo", spec, cifar) == ("a photo of a {}.",)


# --------------------------------------------------------------------------------------------
# random-class: one other class per image, keyed on (seed, image id)


def test_random_class_draws_another_class_per_image_whatever_the_batch() -> None:
    cifar = load_class_set("cifar10")

    @dataclass
    class Sweep:
        placements: tuple = (Placement.CENTER, Placement.PAPER8)
        fractions: tuple = (0.1,)
        styles: tuple = (RenderStyle(),)

    conditions = list_conditions(Sweep(), load_attack_vocab(RANDOM_CLASS_WORD, cifar))
    assert len(conditions) == 20 and {c.word for c in conditions} == {RANDOM_CLASS_WORD}
    assert [c.drawn_text for c in conditions[:10]] == list(TEN_NAMES)
    assert count_image_conditions(conditions) == 2
    ids = [f"img{i}" for i in range(200)]
    trues = np.arange(200) % 10
    shown = select_condition_images(conditions, ids, trues, seed=3)
    assert (shown[:10].sum(axis=0) == 1).all() and (shown[10:].sum(axis=0) == 1).all()
    drawn = np.array([conditions[k].target_index for k in shown[:10].argmax(axis=0)])
    assert (drawn != trues).all() and len(set(drawn.tolist())) == 10  # every other class comes up
    assert (shown[:10] == shown[10:]).all()  # the same class under every placement
    # Any subset (a batch, a chunk, a shard) draws the same for its images; another seed draws otherwise.
    part = select_condition_images(conditions, ids[50:60], trues[50:60], seed=3)
    assert (part == shown[:, 50:60]).all()
    assert draw_other_class(3, "img7", 7, list(range(10))) == drawn[7]
    other = select_condition_images(conditions, ids, trues, seed=4)
    assert not (other == shown).all()


# --------------------------------------------------------------------------------------------
# The fingerprint: a setting added with its default leaves runs' fingerprints as they were


def test_a_field_marked_omit_default_enters_the_fingerprint_only_when_set() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Extended(RunSettings):
        extra: str = field(default="plain", metadata=option(panel=Panel.DATA, metavar="X", help="x",
                                                            metadata=OMIT_DEFAULT))

    models = (ModelSpec("m", "p"),)
    assert Extended(models=models).fingerprint() == RunSettings(models=models).fingerprint()
    assert json.loads(Extended(models=models, extra="other").fingerprint())["extra"] == "other"


def test_default_classes_keep_the_fingerprint_and_another_changes_it() -> None:
    ci = load_synthetic_config("ci")
    assert ci.classes == "imagenet" and "classes" not in json.loads(ci.fingerprint())
    assert load_synthetic_config("ci", {"classes": "imagenet"}).fingerprint() == ci.fingerprint()
    cifar = load_synthetic_config("ci", {"classes": "cifar10"})
    assert json.loads(cifar.fingerprint())["classes"] == "cifar10"
    with pytest.raises(ConfigError, match="templates 'datasets'"):
        load_synthetic_config("ci", {"templates": "datasets"})


def test_class_set_run_json_round_trip() -> None:
    cifar = load_class_set("cifar100")
    info = cifar.to_info()
    assert info["n_classes"] == 100 and info["names"][0] == "apple" and len(info["digest"]) == 16
    back = ClassSet.from_info(json.loads(json.dumps(info)))
    assert back.names == cifar.names and back.describe() == "cifar100 (100 classes)"
    assert ClassSet.from_info(None).is_imagenet and "names" not in get_imagenet_class_set().to_info()


# --------------------------------------------------------------------------------------------
# Runs


def test_eval_with_hf_class_names_and_the_classes_vocabulary(hf_ten, tmp_path, cache_dir) -> None:
    out = tmp_path / "run"
    args = ["eval", "--data", f"hf:{hf_ten}", "--hf-split", "train", "--hf-image-column", "img",
            "--hf-label-column", "fine_label", "--classes", "hf", "--vocab", "classes", "--fraction", "0.1",
            "--placement", "center", "--templates", "dataset", "--chunk-size", "16", "--cache-dir", str(cache_dir),
            *DEMO, "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["classes"]["names"] == list(TEN_NAMES) and info["classes"]["n_classes"] == 10
    assert info["templates"] == {"name": "dataset", "count": 80}  # hf names: the openai templates
    per_word = pd.read_csv(out / "per_word.csv")
    assert sorted(per_word["word"]) == sorted(TEN_NAMES) and (per_word["word"] == per_word["target_name"]).all()
    assert (out / "per_word.md").read_text().startswith(f"Classes: hf:{hf_ten} fine_label (10 classes)\n\n|")
    records = pd.read_parquet(out / "records.parquet")
    assert records["true_index"].between(0, 9).all() and records["pred_index"].between(0, 9).all()
    assert not (out / "per_target.csv").exists()
    # Rerun: resumes (nothing to do), the same fingerprint.
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads((out / "run.json").read_text())["fingerprint"] == info["fingerprint"]


def test_eval_random_class_on_a_names_file_and_its_report(names_folder, tmp_path, cache_dir) -> None:
    images, labels, names = names_folder
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "--data", str(images), "--labels", str(labels), "--classes", str(names),
                                 "--vocab", RANDOM_CLASS_WORD, "--fraction", "0.1", "--fraction", "0.2",
                                 "--placement", "random", "--templates", "photo", "--chunk-size", "16",
                                 "--cache-dir", str(cache_dir), *DEMO, "--out", str(out)])
    assert result.exit_code == 0, result.output
    per_word = pd.read_csv(out / "per_word.csv")
    assert list(per_word["word"]) == [RANDOM_CLASS_WORD] * 2 and (per_word["n_images"] == 40).all()
    assert (per_word["target_name"] == "another class per image").all()
    records = pd.read_parquet(out / "records.parquet")
    attacked = records[records["word"] == RANDOM_CLASS_WORD]
    assert len(attacked) == 80 and (attacked["target_index"] != attacked["true_index"]).all()
    # One class per image, the same at both fractions.
    assert (attacked.groupby("image_id")["target_index"].nunique() == 1).all()
    per_target = pd.read_csv(out / "per_target.csv")
    assert per_target.groupby("fraction")["n_images"].sum().tolist() == [40, 40]
    for fraction, rows in per_target.groupby("fraction"):
        row = per_word[per_word["fraction"] == fraction].iloc[0]
        assert rows["asr"].mul(rows["n_images"]).sum() == pytest.approx(row["asr"] * 40)
    assert set(per_target["target_name"]) <= set(TEN_NAMES)
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    page = (tmp_path / "report" / "report.md").read_text()
    assert "Classes: names.txt (10 classes)" in page
    top = pd.read_csv(tmp_path / "report" / "top_confusions.csv")
    assert set(top["true_name"]) <= set(TEN_NAMES) and set(top["pred_name"]) <= set(TEN_NAMES)


def test_a_report_over_two_class_sets_is_refused(names_folder, tmp_path, cache_dir) -> None:
    images, labels, names = names_folder
    outs = []
    for k, classes in enumerate((str(names), "cifar10")):
        outs.append(tmp_path / f"run{k}")
        result = runner.invoke(app, ["eval", "--data", str(images), "--labels", str(labels), "--classes", classes,
                                     "--vocab", "classes", "--fraction", "0.1", "--placement", "center", "--limit",
                                     "10", "--templates", "photo", "--cache-dir", str(cache_dir), *DEMO, "--out",
                                     str(outs[-1])])
        assert result.exit_code == 0, result.output
    report = runner.invoke(app, ["report", *map(str, outs), "--out", str(tmp_path / "report")])
    assert report.exit_code != 0 and "different class sets" in report.output


def test_threshold_searches_over_the_class_set_and_its_report_names_it(names_folder, tmp_path, cache_dir) -> None:
    images, labels, names = names_folder
    base = ["threshold", "--data", str(images), "--labels", str(labels), "--limit", "10", "--grid", "3",
            "--steps", "2", "--placement", "center", "--templates", "photo", "--cache-dir", str(cache_dir), *DEMO]
    out = tmp_path / "run"
    result = runner.invoke(app, [*base, "--classes", str(names), "--vocab", "classes", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "run.json").read_text())
    assert info["classes"]["names"] == list(TEN_NAMES)
    assert [(w["text"], w["target_index"], w["target_name"]) for w in info["vocab"]["words"]] == \
        [(name, k, name) for k, name in enumerate(TEN_NAMES)]
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 10 * 10 and records["true_index"].between(0, 9).all()
    # The classifier has the ten names only: every prediction is one of them.
    for column in ("clean_pred", "target_pred_lo", "target_pred_hi", "flip_pred_lo", "flip_pred_hi"):
        assert records[column].dropna().between(-1, 9).all(), column
    assert (records["clean_pred"] >= 0).all()
    # A pair whose clean prediction is its word's class does not count for f_target (clean_is_target).
    same = records["clean_pred"] == records["target_index"]
    assert (records.loc[same, "target_reason"] == "clean_is_target").all()
    assert (records.loc[~same, "target_reason"] != "clean_is_target").all()
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "Classes: names.txt (10 classes)" in (tmp_path / "report" / "report.md").read_text()
    # ImageNet's classes: another fingerprint, and a report over both is refused.
    imagenet = tmp_path / "imagenet"
    result = runner.invoke(app, [*base, "--out", str(imagenet)])  # the labels as ImageNet indices, goh2021
    assert result.exit_code == 0, result.output
    assert json.loads((imagenet / "run.json").read_text())["fingerprint"] != info["fingerprint"]
    both = runner.invoke(app, ["report", str(out), str(imagenet), "--out", str(tmp_path / "both")])
    assert both.exit_code != 0 and "different class sets" in both.output


def test_threshold_refuses_a_word_per_image(names_folder, tmp_path) -> None:
    images, labels, names = names_folder
    result = runner.invoke(app, ["threshold", "--data", str(images), "--labels", str(labels), "--classes", str(names),
                                 "--vocab", RANDOM_CLASS_WORD, *DEMO, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "threshold searches the fraction per word" in result.output


def test_vlm_options_come_from_the_class_set(names_folder, tmp_path, cache_dir) -> None:
    from vlm_builders import save_tiny_llava

    images, labels, names = names_folder
    model = save_tiny_llava(tmp_path / "tiny-llava")
    base = ["vlm", "--data", str(images), "--labels", str(labels), "--classes", str(names), "--model", str(model),
            "--limit", "10", "--fraction", "0.2", "--placement", "center", "--prompt", "1", "--order", "object-first",
            "--cache-dir", str(cache_dir), "--device", "cpu", "--workers", "0"]
    for vocab in ("classes", RANDOM_CLASS_WORD):
        out = tmp_path / vocab
        result = runner.invoke(app, [*base, "--vocab", vocab, "--out", str(out)])
        assert result.exit_code == 0, result.output
        records = pd.read_parquet(out / "records.parquet")
        assert set(records["object_label"]) <= set(TEN_NAMES) and set(records["attack_label"]) <= set(TEN_NAMES)
        assert (records["object_label"] == [TEN_NAMES[t] for t in records["true_index"]]).all()
        assert (records["attack_label"] == [TEN_NAMES[t] for t in records["target_index"]]).all()
        assert json.loads((out / "run.json").read_text())["classes"]["names"] == list(TEN_NAMES)
        attacked = records[records["word"] != ""]
        if vocab == RANDOM_CLASS_WORD:
            # One other class per image: one attacked question and one clean control per image.
            assert (attacked.groupby("image_id").size() == 1).all() and len(attacked) == 10
            assert (records.groupby("image_id").size() == 2).all()
            assert (attacked["target_index"] != attacked["true_index"]).all()
            # per_word.csv: the pseudo-word is one row, each image paired with the control of its own class.
            per_word = pd.read_csv(out / "per_word.csv")
            assert list(per_word["word"]) == [RANDOM_CLASS_WORD] and int(per_word["target_index"][0]) == -1
            assert per_word["target_name"][0] == "another class per image"
            assert int(per_word["n"][0]) == 10 and int(per_word["n_pairs"][0]) == 10
            from typoattack.analysis.query import open_records
            from typoattack.tasks.vlm.tables import build_per_word, query_per_word

            pd.testing.assert_frame_equal(query_per_word(open_records([out])).drop(columns=["run"], errors="ignore"),
                                          build_per_word(records), check_dtype=False)
        else:
            assert len(attacked) == 10 * 9  # every other class's name on every image
    report = runner.invoke(app, ["report", str(tmp_path / RANDOM_CLASS_WORD), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
