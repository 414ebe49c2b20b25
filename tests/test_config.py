"""Tests of typoattack.config (types and loading) and typoattack.data.classes: run configs, vocabularies, templates."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from typoattack.data.classes import IMAGENET_CLASSNAMES, resolve_class
from typoattack.config.parsing import load_templates, parse_color
from typoattack.config.types import ModelSpec, Placement, Precision
from typoattack.data.vocab import load_vocab
from typoattack.tasks.synthetic.config import (
    SYNTHETIC_KEYS, SyntheticConfig, build_synthetic_config, load_synthetic_config,
)
from typoattack.constants import CONFIGS_DIR, DEFAULT_FONT, FONTS_DIR, SAMPLE_DIR, VOCAB_DIR
from typoattack.errors import ConfigError

PROJECT_DIR = Path(__file__).resolve().parents[1]
CI_YAML = CONFIGS_DIR / "ci.yaml"
PAPER_YAML = CONFIGS_DIR / "paper.yaml"
GOH = VOCAB_DIR / "goh2021.yaml"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    return d


@pytest.fixture
def base(data_dir: Path) -> dict:
    """A minimal valid raw config."""
    return {"data": str(data_dir), "model": "ViT-B-32", "pretrained": "openai"}


def write_yaml(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# Shipped configs


def test_constants_point_at_shipped_files():
    # The repository's configs/ is a link to the configs shipped in the package.
    assert CONFIGS_DIR == (PROJECT_DIR / "configs").resolve()
    assert VOCAB_DIR == (PROJECT_DIR / "configs" / "vocab").resolve()
    assert DEFAULT_FONT.is_file()


def test_load_ci_yaml():
    cfg = load_synthetic_config(CI_YAML)
    assert cfg.models == (ModelSpec("typoattack-reader-tiny", "ci500"),)
    src = Path(cfg.data.source)
    assert src.is_absolute()
    assert src.is_dir(), "ci.yaml's data must point at an existing folder"
    assert src.resolve() == SAMPLE_DIR.resolve()
    assert (src / "labels.csv").is_file()
    assert cfg.data.labels is None
    assert Path(cfg.vocab) == VOCAB_DIR / "goh2021.yaml" == GOH
    assert Path(cfg.vocab).is_file()
    assert cfg.fractions == (0.04, 0.10)
    assert cfg.placements == (Placement.PAPER8, Placement.RANDOM)
    assert cfg.templates == "openai"
    assert cfg.batch_size == 256
    assert cfg.device == "cpu"
    assert cfg.precision is Precision.FP32
    assert cfg.seed == 0
    assert cfg.workers == 2
    assert cfg.chunk_size == 100
    assert cfg.limit is None
    assert cfg.out is None
    assert Path(cfg.style.font) == DEFAULT_FONT


def test_load_paper_yaml():
    cfg = load_synthetic_config(PAPER_YAML)
    assert cfg.models == (ModelSpec("RN50x4", "openai"),)
    assert cfg.data.source == "/path/to/imagenet/val"
    assert cfg.limit == 1000
    assert Path(cfg.vocab) == GOH
    assert cfg.fractions == (0.07,)
    assert cfg.placements == (Placement.PAPER8,)
    assert cfg.style.fill == (255, 255, 255)
    assert cfg.style.outline == (0, 0, 0)
    assert cfg.style.outline_width == 1
    assert cfg.style.opacity == 1.0
    assert cfg.templates == "openai"
    assert cfg.batch_size == 256
    assert cfg.device == "auto"
    assert cfg.precision is Precision.FP32
    assert cfg.seed == 0


def test_relative_paths_resolved_against_yaml_folder(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "project" / "cfg"
    (cfg_dir / "imgs").mkdir(parents=True)
    write_yaml(cfg_dir / "t.yaml", ["a photo of a {}."])
    write_yaml(cfg_dir / "v.yaml", {"words": [{"text": "x", "target": 1}]})
    shutil.copy(DEFAULT_FONT, cfg_dir / "myfont.ttf")
    path = write_yaml(cfg_dir / "run.yaml", {
        "model": "m", "pretrained": "p", "data": "imgs", "labels": "imgs/labels.csv",
        "out": "../results/run1", "templates": "t.yaml", "vocab": "v.yaml", "font": "myfont.ttf",
    })
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_synthetic_config(path)
    assert Path(cfg.data.source).resolve() == (cfg_dir / "imgs").resolve()
    assert Path(cfg.data.labels).resolve() == (cfg_dir / "imgs" / "labels.csv").resolve()
    assert Path(cfg.out).resolve() == (tmp_path / "project" / "results" / "run1").resolve()
    assert Path(cfg.templates).resolve() == (cfg_dir / "t.yaml").resolve()
    assert Path(cfg.vocab).resolve() == (cfg_dir / "v.yaml").resolve()
    assert Path(cfg.style.font).resolve() == (cfg_dir / "myfont.ttf").resolve()


def test_font_name_resolves_to_shipped_fonts(tmp_path, data_dir):
    path = write_yaml(tmp_path / "run.yaml", {"model": "m", "data": str(data_dir), "font": "DejaVuSans.ttf"})
    cfg = load_synthetic_config(path)
    assert Path(cfg.style.font) == FONTS_DIR / "DejaVuSans.ttf"


def test_hf_data_is_not_made_a_path(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", {"model": "m", "data": "hf:imagenet-1k", "hf_split": "val"})
    cfg = load_synthetic_config(path)
    assert cfg.data.source == "hf:imagenet-1k"
    assert cfg.data.hf_split == "val"


# --------------------------------------------------------------------------------------------
# CLI overrides


def test_overrides_win_over_yaml(tmp_path):
    overrides = {
        "model": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "fractions": [0.2, 0.3],
        "placement": ["center"], "seed": 7, "limit": 10, "out": "some/out", "batch_size": 8,
    }
    cfg = load_synthetic_config(CI_YAML, overrides)
    assert cfg.models == (ModelSpec("ViT-B-32", "laion2b_s34b_b79k"),)
    assert cfg.fractions == (0.2, 0.3)
    assert cfg.placements == (Placement.CENTER,)
    assert cfg.seed == 7
    assert cfg.limit == 10
    assert cfg.out == "some/out"
    assert cfg.batch_size == 8
    # untouched keys keep their YAML values
    assert cfg.device == "cpu" and cfg.chunk_size == 100


def test_none_overrides_are_ignored():
    plain = load_synthetic_config(CI_YAML)
    overridden = load_synthetic_config(CI_YAML, {k: None for k in
                                           ("model", "pretrained", "fractions", "placement", "seed",
                                            "limit", "out", "batch_size", "data", "device")})
    assert overridden == plain


def test_override_model_replaces_models_list(tmp_path, data_dir):
    path = write_yaml(tmp_path / "run.yaml", {
        "data": str(data_dir), "models": [{"name": "A", "pretrained": "a"}, {"name": "B", "pretrained": "b"}]})
    cfg = load_synthetic_config(path, {"model": "C", "pretrained": "c"})
    assert cfg.models == (ModelSpec("C", "c"),)


def test_override_fractions_replaces_yaml_fraction(tmp_path, data_dir):
    path = write_yaml(tmp_path / "run.yaml", {"data": str(data_dir), "model": "m", "fraction": 0.05,
                                              "placements": ["random"]})
    cfg = load_synthetic_config(path, {"fractions": [0.5], "placement": ["center"]})
    assert cfg.fractions == (0.5,)
    assert cfg.placements == (Placement.CENTER,)


def test_overrides_without_yaml(data_dir):
    cfg = load_synthetic_config(None, {"data": str(data_dir), "model": "m", "pretrained": None})
    assert cfg.models == (ModelSpec("m", None),)
    assert cfg.data.source == str(data_dir)


# --------------------------------------------------------------------------------------------
# Validation errors


@pytest.mark.parametrize("key,expected", [("fractons", "fractions"), ("placment", "placement"),
                                          ("batchsize", "batch_size"), ("modle", "model")])
def test_unknown_key_suggests(base, key, expected):
    with pytest.raises(ConfigError, match="Did you mean") as e:
        build_synthetic_config({**base, key: 1})
    assert key in str(e.value)
    assert repr(expected) in str(e.value)


def test_unknown_key_in_yaml_file(tmp_path, data_dir):
    path = write_yaml(tmp_path / "run.yaml", {"data": str(data_dir), "model": "m", "fractons": [0.1]})
    with pytest.raises(ConfigError, match="fractons.*Did you mean 'fractions'"):
        load_synthetic_config(path)


def test_unknown_key_without_close_match(base):
    with pytest.raises(ConfigError, match="zzzzzz") as e:
        build_synthetic_config({**base, "zzzzzz": 1})
    assert "Did you mean" not in str(e.value)


def test_non_string_key(base):
    with pytest.raises(ConfigError):
        build_synthetic_config({**base, 5: "x"})


@pytest.mark.parametrize("key,value", [
    ("limit", "abc"), ("limit", 1.5), ("limit", True), ("limit", 0), ("limit", -3), ("limit", [1]),
    ("batch_size", 1.5), ("batch_size", 0), ("batch_size", "many"),
    ("seed", "x"), ("seed", 0.5),
    ("workers", -1), ("workers", "two"),
    ("chunk_size", 0),
    ("outline_width", -1), ("outline_width", 17), ("outline_width", 1.5),
    ("opacity", 0), ("opacity", 1.5), ("opacity", -0.1), ("opacity", "abc"), ("opacity", float("nan")),
    ("device", ""), ("device", ["cpu"]),
    ("hf_split", {"a": 1}),
])
def test_wrong_types_name_the_key(base, key, value):
    with pytest.raises(ConfigError, match=key):
        build_synthetic_config({**base, key: value})


@pytest.mark.parametrize("value", [["x"], [0], [1], [1.5], [0.0], [-0.1], [float("nan")], [float("inf")],
                                   [True], [[0.1]], [None], 0, 1, 1.5, "x", None])
def test_bad_fractions(base, value):
    with pytest.raises(ConfigError, match="fraction"):
        build_synthetic_config({**base, "fractions": value})


@pytest.mark.parametrize("key", ["fraction", "fractions"])
def test_fraction_scalar_and_string(base, key):
    assert build_synthetic_config({**base, key: 0.25}).fractions == (0.25,)
    assert build_synthetic_config({**base, key: "0.25"}).fractions == (0.25,)
    assert build_synthetic_config({**base, key: [0.1, "0.2"]}).fractions == (0.1, 0.2)


def test_empty_fractions(base):
    with pytest.raises(ConfigError, match="empty"):
        build_synthetic_config({**base, "fractions": []})


def test_duplicate_fractions(base):
    with pytest.raises(ConfigError, match="twice"):
        build_synthetic_config({**base, "fractions": [0.1, 0.2, 0.1]})


def test_fraction_and_fractions_together(base):
    with pytest.raises(ConfigError, match="not both"):
        build_synthetic_config({**base, "fraction": 0.1, "fractions": [0.2]})


def test_precision_suggestion(base):
    with pytest.raises(ConfigError, match="precision") as e:
        build_synthetic_config({**base, "precision": "fp64"})
    msg = str(e.value)
    assert "fp32" in msg and "bf16" in msg and "fp16" in msg
    assert "Did you mean" in msg


def test_precision_case_insensitive(base):
    assert build_synthetic_config({**base, "precision": "BF16"}).precision is Precision.BF16


@pytest.mark.parametrize("value", ["diagonal", ["paper8", "diagonal"], [], ["center", "center"], [["paper8"]], None])
def test_bad_placement(base, value):
    with pytest.raises(ConfigError, match="placement"):
        build_synthetic_config({**base, "placement": value})


def test_placements_forms(base):
    assert build_synthetic_config({**base, "placement": "center"}).placements == (Placement.CENTER,)
    assert build_synthetic_config({**base, "placements": ["Random", "paper8"]}).placements == (
        Placement.RANDOM, Placement.PAPER8)


@pytest.mark.parametrize("doc", ["- a\n- b\n", "just a string\n", "42\n", "[1, 2, 3]\n"])
def test_yaml_not_a_mapping(tmp_path, doc):
    path = write_yaml(tmp_path / "run.yaml", doc)
    with pytest.raises(ConfigError, match="mapping"):
        load_synthetic_config(path)


@pytest.mark.parametrize("doc", ["model: [unclosed\n", "a: b: c\n", "key: 'open\n", "\tmodel: x\n",
                                 "model: x\nmodel: y: z\n", "? [a, b]\n: c\n"])
def test_invalid_yaml(tmp_path, doc):
    path = write_yaml(tmp_path / "run.yaml", doc)
    with pytest.raises(ConfigError, match="run.yaml"):
        load_synthetic_config(path)


def test_yaml_not_utf8(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_bytes(b"model: \xff\xfe\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_synthetic_config(path)


def test_yaml_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_synthetic_config(tmp_path / "nope.yaml")


def test_empty_yaml_needs_data(tmp_path):
    path = write_yaml(tmp_path / "run.yaml", "")
    with pytest.raises(ConfigError, match="data"):
        load_synthetic_config(path)


@pytest.mark.parametrize("raw", [{"model": "m"}, {"model": "m", "data": None}])
def test_missing_data(raw):
    with pytest.raises(ConfigError, match="data"):
        build_synthetic_config(raw)


def test_missing_model(data_dir):
    with pytest.raises(ConfigError, match="model"):
        build_synthetic_config({"data": str(data_dir)})


def test_missing_font(base, tmp_path):
    with pytest.raises(ConfigError, match="font"):
        build_synthetic_config({**base, "font": str(tmp_path / "nope.ttf")})
    with pytest.raises(ConfigError, match="font"):
        build_synthetic_config({**base, "font": "NoSuchFont.ttf"})


def test_missing_templates_file(base, tmp_path):
    with pytest.raises(ConfigError, match="templates"):
        build_synthetic_config({**base, "templates": str(tmp_path / "nope.yaml")})


@pytest.mark.parametrize("value,rgb", [
    ("white", (255, 255, 255)), ("black", (0, 0, 0)), ("#ff0000", (255, 0, 0)), ("#00F", (0, 0, 255)),
    ([0, 255, 0], (0, 255, 0)), ((1, 2, 3), (1, 2, 3)), ("Red", (255, 0, 0)),
])
def test_colours_parse(base, value, rgb):
    cfg = build_synthetic_config({**base, "fill": value, "outline": value})
    assert cfg.style.fill == rgb and cfg.style.outline == rgb
    assert parse_color("fill", value) == rgb


@pytest.mark.parametrize("value", [
    "notacolour", "#gg0000", "#ff00000", "", [0, 256, 0], [0, -1, 0], [1, 2], [1, 2, 3, 4],
    [0.5, 0, 0], [True, 0, 0], {"r": 1}, None, True,
])
@pytest.mark.parametrize("key", ["fill", "outline"])
def test_bad_colours(base, key, value):
    with pytest.raises(ConfigError, match=key):
        build_synthetic_config({**base, key: value})


@pytest.mark.parametrize("value", ["rgb(300, 0, 0)", "rgb(0, 999, 0)"])
def test_colour_strings_out_of_range(base, value):
    """[0, 256, 0] is refused; the same colour spelled as an rgb() string must not slip through
    with a component above 255."""
    try:
        cfg = build_synthetic_config({**base, "fill": value})
    except ConfigError:
        return
    assert all(0 <= c <= 255 for c in cfg.style.fill), cfg.style.fill


def test_models_list_form(data_dir):
    cfg = build_synthetic_config({"data": str(data_dir), "models": [
        {"name": "RN50", "pretrained": "openai"}, {"name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"},
        {"name": "hf-hub:org/repo"}, "local-dir:/some/dir"]})
    assert cfg.models == (ModelSpec("RN50", "openai"), ModelSpec("ViT-B-32", "laion2b_s34b_b79k"),
                          ModelSpec("hf-hub:org/repo", None), ModelSpec("local-dir:/some/dir", None))
    assert cfg.models[0].label == "RN50/openai"
    assert cfg.models[2].label == "hf-hub:org/repo"


def test_model_list_with_pretrained_list(data_dir):
    cfg = build_synthetic_config({"data": str(data_dir), "model": ["A", "B"], "pretrained": ["a", "b"]})
    assert cfg.models == (ModelSpec("A", "a"), ModelSpec("B", "b"))
    cfg = build_synthetic_config({"data": str(data_dir), "model": ["A", "B"], "pretrained": "x"})
    assert cfg.models == (ModelSpec("A", "x"), ModelSpec("B", "x"))
    with pytest.raises(ConfigError, match="pretrained"):
        build_synthetic_config({"data": str(data_dir), "model": ["A", "B", "C"], "pretrained": ["a", "b"]})


@pytest.mark.parametrize("extra", [{"model": "X"}, {"pretrained": "x"}])
def test_models_plus_model_raises(data_dir, extra):
    with pytest.raises(ConfigError, match="not both"):
        build_synthetic_config({"data": str(data_dir), "models": [{"name": "A", "pretrained": "a"}], **extra})


@pytest.mark.parametrize("models", [
    [{"name": "A", "pretraind": "a"}], [{"pretrained": "a"}], [3], [None], [{"name": ""}], [],
    [{"name": "A", "pretrained": "a"}, {"name": "A", "pretrained": "a"}],
])
def test_bad_models_entries(data_dir, models):
    with pytest.raises(ConfigError):
        build_synthetic_config({"data": str(data_dir), "models": models})


@pytest.mark.parametrize("entry", [{"name": "A", 1: "x"}, {"name": "A", 1: "x", "zz": 2}, {True: 1}])
def test_models_entry_with_non_string_key(data_dir, entry):
    """YAML like `models: [{name: A, 1: x}]` has an integer key; it must be a ConfigError."""
    with pytest.raises(ConfigError):
        build_synthetic_config({"data": str(data_dir), "models": [entry]})


def test_models_unknown_key_suggestion(data_dir):
    with pytest.raises(ConfigError, match="Did you mean 'pretrained'"):
        build_synthetic_config({"data": str(data_dir), "models": [{"name": "A", "pretraind": "a"}]})


@pytest.mark.parametrize("key,value", [("limit", "--5"), ("limit", "²"), ("seed", "--1"), ("batch_size", "¹")])
def test_integer_strings_that_int_cannot_parse(base, key, value):
    """`"²".isdigit()` is True but int("²") fails; such strings must give a ConfigError."""
    with pytest.raises(ConfigError, match=key):
        build_synthetic_config({**base, key: value})


@pytest.mark.parametrize("key,value", [("opacity", 10**400), ("fractions", [10**400]), ("opacity", -(10**400))])
def test_huge_integers_are_config_errors(base, key, value):
    """YAML reads a 400-digit number as a Python int, which float() cannot hold."""
    with pytest.raises(ConfigError, match=key.rstrip("s")):
        build_synthetic_config({**base, key: value})


@pytest.mark.parametrize("key", ["data", "out", "cache_dir", "labels"])
def test_unknown_user_home_is_a_config_error_or_kept(base, key):
    """`~nosuchuser/x` cannot be expanded; that must not raise RuntimeError."""
    try:
        build_synthetic_config({**base, key: "~typoattack_no_such_user/x"})
    except ConfigError:
        pass


def test_integer_strings_accepted(base):
    cfg = build_synthetic_config({**base, "limit": "12", "batch_size": " 8 ", "seed": "3"})
    assert (cfg.limit, cfg.batch_size, cfg.seed) == (12, 8, 3)
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        build_synthetic_config({**base, "seed": "-3"})


def test_defaults(base):
    cfg = build_synthetic_config(base)
    assert cfg.fractions == (0.07,)
    assert cfg.placements == (Placement.PAPER8,)
    assert cfg.precision is Precision.FP32
    assert cfg.limit is None and cfg.seed == 0
    assert cfg.batch_size is None  # "auto": chosen at run time
    assert cfg.style.fill == (255, 255, 255) and cfg.style.outline == (0, 0, 0)
    assert Path(cfg.vocab) == GOH


def test_batch_size_auto(base):
    assert build_synthetic_config({**base, "batch_size": "auto"}).batch_size is None
    assert build_synthetic_config({**base, "batch_size": "AUTO"}).batch_size is None
    assert build_synthetic_config({**base, "batch_size": 64}).batch_size == 64
    with pytest.raises(ConfigError, match="batch_size"):
        build_synthetic_config({**base, "batch_size": "automatic"})


def test_build_synthetic_config_rejects_non_mapping():
    for raw in (["data"], "data: x", 3, None):
        with pytest.raises(ConfigError, match="mapping"):
            build_synthetic_config(raw)


# --------------------------------------------------------------------------------------------
# Fingerprint


def test_fingerprint(base, tmp_path):
    cfg = build_synthetic_config(base)
    fp = cfg.fingerprint()
    for change in ({"out": str(tmp_path / "o")}, {"cache_dir": str(tmp_path / "c")}, {"workers": 7},
                   {"batch_size": 3}, {"device": "cuda:1"}) + (({"compile": True},) if "compile" in SYNTHETIC_KEYS else ()):
        assert dataclasses.replace(cfg, **change).fingerprint() == fp, change
        assert build_synthetic_config({**base, **change}).fingerprint() == fp, change
    for change in ({"seed": 1}, {"fractions": [0.1]}, {"model": "RN50"}, {"pretrained": "other"},
                   {"limit": 5}, {"placement": "center"}, {"precision": "fp16"}, {"fill": "red"},
                   {"templates": "simple"}, {"vocab": "imagenet-classes"}):
        assert build_synthetic_config({**base, **change}).fingerprint() != fp, change


def test_fingerprint_is_json_and_deterministic(base):
    import json

    a = build_synthetic_config(base)
    b = build_synthetic_config(dict(reversed(list(base.items()))))
    assert a.fingerprint() == b.fingerprint()
    d = json.loads(a.fingerprint())
    assert "out" not in d and "workers" not in d and "seed" in d
    json.dumps(a.to_dict())  # serialisable


# --------------------------------------------------------------------------------------------
# Vocabularies and classes

GOH_EXPECTED = [("trash", 412), ("iPod", 605), ("pizza", 963), ("rifle", 764), ("radio", 754),
                ("library", 624), ("shark", 2), ("meow", 284), ("$$$", 719)]


def test_load_vocab_goh2021():
    v = load_vocab(GOH)
    assert v.name == "goh2021"
    assert [(w.text, w.target_index) for w in v.words] == GOH_EXPECTED
    assert [w.target_index for w in v.words] == [412, 605, 963, 764, 754, 624, 2, 284, 719]
    assert v.path == str(GOH)


def test_load_vocab_target_index_and_default_name(tmp_path):
    p = write_yaml(tmp_path / "mine.yaml", {"words": [{"text": "a", "target": 7}, {"text": "b", "target": "12"},
                                                       {"text": "c", "target": "Tench", "note": "x"}]})
    v = load_vocab(p)
    assert v.name == "mine"
    assert [(w.text, w.target_index) for w in v.words] == [("a", 7), ("b", 12), ("c", 0)]


def test_load_vocab_suggests_close_name(tmp_path):
    p = write_yaml(tmp_path / "v.yaml", {"words": [{"text": "$$$", "target": "piggy bnak"}]})
    with pytest.raises(ConfigError, match="piggy bank") as e:
        load_vocab(p)
    assert "$$$" in str(e.value)


@pytest.mark.parametrize("name", ["sunglasses", "missile", "Sunglasses"])
def test_load_vocab_ambiguous_name(tmp_path, name):
    assert sum(n.lower() == name.lower() for n in IMAGENET_CLASSNAMES) == 2
    p = write_yaml(tmp_path / "v.yaml", {"words": [{"text": "x", "target": name}]})
    with pytest.raises(ConfigError, match="index"):
        load_vocab(p)


@pytest.mark.parametrize("doc,match", [
    ({"name": "x", "words": []}, "no words"),
    ({"name": "x"}, "no words"),
    ({"words": "trash"}, "no words"),
    ({"words": [{"text": "a", "target": 1}, {"text": "a", "target": 2}]}, "twice"),
    ({"words": [{"target": 1}]}, "text"),
    ({"words": [{"text": "a"}]}, "target"),
    ({"words": ["a"]}, "text"),
    ({"words": [{"text": "a", "target": 1}], "wrods": []}, "wrods"),
    ({"words": [{"text": "a", "target": 1, "targt": 2}]}, "targt"),
    ({"words": [{"text": "a", "target": 1000}]}, "0-999"),
    ({"words": [{"text": "a", "target": -1}]}, "a"),
    ({"words": [{"text": "a", "target": 1.5}]}, "a"),
    ({"words": [{"text": "", "target": 1}]}, "empty"),
    ({"words": [{"text": "x" * 41, "target": 1}]}, "40"),
    ({"words": [{"text": "a", "target": 1}], 3: 4}, "3"),
    ("- a\n- b\n", "mapping"),
    ("words: [\n", "YAML"),
])
def test_load_vocab_errors(tmp_path, doc, match):
    p = write_yaml(tmp_path / "v.yaml", doc)
    with pytest.raises(ConfigError, match=match):
        load_vocab(p)


def test_load_vocab_unknown_key_suggests(tmp_path):
    p = write_yaml(tmp_path / "v.yaml", {"wrods": [{"text": "a", "target": 1}]})
    with pytest.raises(ConfigError, match="Did you mean 'words'"):
        load_vocab(p)


def test_load_vocab_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_vocab(tmp_path / "nope.yaml")


def test_load_vocab_target_unicode_digit(tmp_path):
    p = write_yaml(tmp_path / "v.yaml", {"words": [{"text": "a", "target": "²"}]})
    with pytest.raises(ConfigError):
        load_vocab(p)


@pytest.mark.parametrize("target,expected", [(0, 0), (999, 999), ("412", 412), (" 412 ", 412), ("007", 7),
                                             ("trash can", 412), ("TRASH CAN", 412), (" pizza ", 963)])
def test_resolve_class_ok(target, expected):
    assert resolve_class(target) == expected


@pytest.mark.parametrize("target", [1000, -1, True, False, 412.0, None, [412], "1000", "", "no such class", "²"])
def test_resolve_class_errors(target):
    with pytest.raises(ConfigError):
        resolve_class(target)


def test_resolve_class_no_match_without_close_name():
    with pytest.raises(ConfigError, match="class index 0-999"):
        resolve_class("qqqqqqqqqqqqqqqqqqqq")


# --------------------------------------------------------------------------------------------
# Templates


def test_load_templates_builtin():
    openai = load_templates("openai")
    assert len(openai) == 80
    assert all(t.count("{}") == 1 for t in openai)
    assert all("dog" in t.format("dog") for t in openai)
    simple = load_templates("simple")
    assert len(simple) == 7
    assert all(t.count("{}") == 1 for t in simple)
    assert len(set(openai)) == 80


def test_load_templates_yaml_file(tmp_path):
    p = write_yaml(tmp_path / "t.yaml", ["a photo of a {c}.", "itap of a {}.", "{c}"])
    assert load_templates(str(p)) == ("a photo of a {}.", "itap of a {}.", "{}")
    p2 = write_yaml(tmp_path / "t2.yaml", {"templates": ["a {c} in the wild."]})
    assert load_templates(str(p2)) == ("a {} in the wild.",)


def test_templates_file_in_run_config(base, tmp_path):
    p = write_yaml(tmp_path / "t.yaml", ["a photo of a {c}."])
    cfg = build_synthetic_config({**base, "templates": str(p)})
    assert cfg.templates == str(p)
    assert load_templates(cfg.templates) == ("a photo of a {}.",)


@pytest.mark.parametrize("doc", [
    ["a photo of a dog."], ["a {} and a {c}."], ["{} {}"], ["ok {}", "no placeholder"], [], "just a string",
    [1, 2], {"other": ["{}"]}, {"templates": []},
])
def test_load_templates_bad(tmp_path, doc):
    p = write_yaml(tmp_path / "t.yaml", doc)
    with pytest.raises(ConfigError, match="t.yaml"):
        load_templates(str(p))


def test_load_templates_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_templates(str(tmp_path / "nope.yaml"))


def test_load_templates_invalid_yaml(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("- a {}\n- [unclosed\n")
    with pytest.raises(ConfigError, match=r"templates file .*t.yaml is not valid YAML at line \d+") as caught:
        load_templates(str(p))
    assert "\n" not in str(caught.value)


def test_load_templates_not_utf8(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_bytes(b"- a \xff\xfe {}\n")
    with pytest.raises(ConfigError, match="templates file .*t.yaml is not UTF-8 text"):
        load_templates(str(p))


@pytest.mark.parametrize("template", ["a {} photo of {x}", "a photo of {{}}", "{} {"])
def test_loaded_templates_format_with_the_class_name(tmp_path, template):
    """Templates are used as `t.format(classname)` (open_clip); whatever load_templates accepts
    must format without error and contain the class name."""
    p = write_yaml(tmp_path / "t.yaml", [template])
    try:
        loaded = load_templates(str(p))
    except ConfigError:
        return
    for t in loaded:
        assert "goldfish" in t.format("goldfish"), t


# --------------------------------------------------------------------------------------------
# Property-based: build_synthetic_config never raises anything but ConfigError

_INTERESTING = st.sampled_from([
    "paper8", "center", "random", "fp32", "bf16", "fp16", "fp64", "openai", "simple", "white", "#ff0000",
    "0.07", "0.5", "1", "-1", "abc", "", " ", "hf:", "hf:x", "~", "~/x", "seed:0", "DejaVuSans.ttf",
    "²", "--5", "1e400", "nan", "inf", "rgb(1,2,3)", "name", "pretrained", "~typoattack_no_such_user/x",
])
_SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
            | st.text(max_size=12) | _INTERESTING)
_KEYS = st.sampled_from(SYNTHETIC_KEYS) | st.text(max_size=10)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_KEYS | _INTERESTING | st.integers(-3, 3) | st.booleans(), children, max_size=4),
    max_leaves=10,
)
_DOCS = st.dictionaries(_KEYS, _VALUES, max_size=8)


def _check(raw):
    try:
        cfg = build_synthetic_config(raw)
    except ConfigError:
        return
    assert isinstance(cfg, SyntheticConfig)
    cfg.fingerprint()


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCS, inject=st.sampled_from(["none", "data", "data+model"]))
def test_property_build_synthetic_config_only_raises_config_error(doc, inject):
    raw = dict(doc)
    if inject != "none":
        raw["data"] = str(SAMPLE_DIR)
    if inject == "data+model":
        raw.pop("models", None)
        raw["model"] = "RN50"
    _check(raw)


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(models=_VALUES, rest=st.dictionaries(st.sampled_from(SYNTHETIC_KEYS), _VALUES, max_size=3))
def test_property_models_entries(models, rest):
    raw = {**rest, "data": str(SAMPLE_DIR), "models": models}
    raw.pop("model", None)
    raw.pop("pretrained", None)
    _check(raw)


@settings(max_examples=100, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80) | _DOCS.map(lambda d: yaml.safe_dump(d)))
def test_property_load_run_config_yaml_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("y") / "run.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        cfg = load_synthetic_config(path)
    except ConfigError:
        return
    assert isinstance(cfg, SyntheticConfig)


# --------------------------------------------------------------------------------------------
# WordNet lemmas as targets, built-in configs and vocabularies by name


@pytest.mark.parametrize("lemma", ["dustbin", "ashcan", "garbage can", "Wastebin", "trash can"])
def test_wordnet_lemmas_resolve_to_their_class(lemma) -> None:
    assert resolve_class(lemma) == 412


def test_lemma_file_matches_the_synsets() -> None:
    from typoattack.data.classes import list_lemmas, list_synsets

    lemmas = list_lemmas()
    assert len(lemmas) == len(list_synsets()) == 1000
    assert lemmas[0][:2] == ("tench", "Tinca tinca") and "great white shark" in lemmas[2]


def test_ambiguous_lemma_asks_for_the_index() -> None:
    with pytest.raises(ConfigError, match=r"134 \(crane bird\), 517 \(construction crane\); give the class index"):
        resolve_class("crane")


def test_vocabulary_with_lemma_targets(tmp_path) -> None:
    path = write_yaml(tmp_path / "v.yaml", {"words": [{"text": "bin", "target": "dustbin"},
                                                       {"text": "fish", "target": "Tinca tinca"}]})
    assert [w.target_index for w in load_vocab(path).words] == [412, 0]


@pytest.mark.parametrize("name", ["ci", "paper", "sweep-fraction"])
def test_builtin_configs_resolve_by_name_from_anywhere(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_synthetic_config(name)
    assert Path(cfg.vocab) == VOCAB_DIR / "goh2021.yaml"


def test_ci_config_uses_the_shipped_demo_model_and_images() -> None:
    cfg = load_synthetic_config("ci")
    assert cfg.models == (ModelSpec("typoattack-reader-tiny", "ci500"),)
    assert Path(cfg.data.source).resolve() == SAMPLE_DIR.resolve()


def test_unknown_config_name_lists_the_builtin_ones(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'cii' is neither a file nor a built-in config \(ci, paper, sweep-fraction\)\. Did you mean 'ci'"):
        load_synthetic_config("cii")
    with pytest.raises(ConfigError, match="config file nothere/x.yaml does not exist"):
        load_synthetic_config("nothere/x.yaml")


def test_vocabularies_by_name(base) -> None:
    assert Path(build_synthetic_config({**base, "vocab": "imagenet-classes"}).vocab) == VOCAB_DIR / "imagenet-classes.yaml"
    with pytest.raises(ConfigError, match=r"'goh2012' is neither a YAML file nor a built-in vocabulary .*Did you mean 'goh2021'"):
        build_synthetic_config({**base, "vocab": "goh2012"})


def test_imagenet_classes_vocabulary_aims_each_name_at_its_class() -> None:
    vocab = load_vocab(VOCAB_DIR / "imagenet-classes.yaml")
    assert len(vocab.words) == 998  # 'missile' and 'sunglasses' name two classes each
    assert all(IMAGENET_CLASSNAMES[w.target_index] == w.text for w in vocab.words)


def test_pretrained_checkpoint_relative_to_the_config(tmp_path, data_dir) -> None:
    (tmp_path / "w.pt").write_bytes(b"x")
    path = write_yaml(tmp_path / "c.yaml", {"data": str(data_dir), "model": "ViT-B-32", "pretrained": "w.pt"})
    assert load_synthetic_config(path).models[0].pretrained == str(tmp_path / "w.pt")
    path = write_yaml(tmp_path / "d.yaml", {"data": str(data_dir), "model": "ViT-B-32", "pretrained": "openai"})
    assert load_synthetic_config(path).models[0].pretrained == "openai"


def test_open_clip_and_transformers_models_mix_on_the_command_line(tmp_path) -> None:
    """`--pretrained -` is "none": one --pretrained per --model mixes an open_clip tag and a local folder."""
    folder = tmp_path / "hf-clip"
    folder.mkdir()
    cfg = load_synthetic_config(None, {"data": "sample", "model": ["RN50", str(folder)], "pretrained": ["openai", "-"],
                                       "backend": ["open_clip", "transformers"]})
    assert [(m.name, m.pretrained, m.backend) for m in cfg.models] == [
        ("RN50", "openai", "open_clip"), (str(folder), None, "transformers")]
    with pytest.raises(ConfigError, match="or - for a model that takes none"):
        load_synthetic_config(None, {"data": "sample", "model": ["RN50"], "pretrained": [""]})
