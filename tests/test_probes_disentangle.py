"""Disentangling scored as the authors' code does: the union label set holds `classes.json`'s keys
with the annotations' labels and words (`--label-set annotations`: the annotations' only), the
template is "a photo of {}." and the Defense-Prefix prompt "a photo of * {}." (other datasets keep
"a photo of a * {}.")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from probes_reference import hand_p_object
from real_datasets_builders import OBJECTS, WORDS, make_disentangle
from typoattack.cli import app
from typoattack.config.types import LabelSet, Protocol, RealDataset
from typoattack.data.real_datasets import open_real_dataset
from typoattack.defences.apply import get_prefix_classifier
from typoattack.defences.prefix import PREFIX_PROMPT
from typoattack.tasks.real.config import get_default_templates, get_prefix_prompt
from typoattack.errors import ConfigError, DataError
from typoattack.backends.open_clip.model import TINY_MODEL

runner = CliRunner()
# The authors' classes.json lists objects the annotations may not use (here banana, laptop) and
# not the attack words (cat, ipod), as its keys.
CLASSES = {"dog": 0, "cup": 1, "apple": 2, "banana": 3, "laptop": 4}
ANNOTATED = sorted(set(OBJECTS) | set(WORDS[:2]))  # what make_disentangle's annotations use


@pytest.fixture
def disentangle(tmp_path) -> Path:
    """The Defense-Prefix layout: datasets/typographic_attack_dataset/{annotations,classes}.json, images/."""
    folder = make_disentangle(tmp_path / "datasets" / "typographic_attack_dataset")
    (folder / "classes.json").write_text(json.dumps(CLASSES), encoding="utf-8")
    return tmp_path / "datasets"


def test_label_set_is_the_class_list_with_the_annotations(disentangle) -> None:
    source = open_real_dataset(RealDataset.DISENTANGLE, str(disentangle))
    assert source.classes == tuple(CLASSES)
    assert source.list_vocabulary() == sorted(set(CLASSES) | set(ANNOTATED))
    assert source.list_vocabulary(with_classes=False) == ANNOTATED
    assert get_default_templates(RealDataset.DISENTANGLE, Protocol.UNION) == ("a photo of {}.",)
    assert get_prefix_prompt(RealDataset.DISENTANGLE) == "a photo of * {}."
    for other in (RealDataset.RTA100, RealDataset.PAINT, RealDataset.SCAM, RealDataset.FOLDER):
        assert get_prefix_prompt(other) == PREFIX_PROMPT == "a photo of a * {}."


def test_bad_classes_json_names_the_file(disentangle) -> None:
    path = disentangle / "typographic_attack_dataset" / "classes.json"
    path.write_text("[\"dog\"]")
    with pytest.raises(DataError, match=r"classes\.json must be a JSON object whose keys are the class names"):
        open_real_dataset(RealDataset.DISENTANGLE, str(disentangle))


def _args(data: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["real", "--dataset", "disentangle", "--data", str(data), "--model", TINY_MODEL, "--pretrained", "seed:0",
            "--device", "cpu", "--workers", "1", "--cache-dir", str(cache_dir), "--out", str(out), *extra]


def test_real_run_follows_the_authors_by_default(disentangle, tmp_path, cache_dir, tiny_model) -> None:
    prefix = torch.randn(64, generator=torch.Generator().manual_seed(8))
    torch.save(prefix, tmp_path / "p.pt")
    out = tmp_path / "out"
    result = runner.invoke(app, _args(disentangle, out, cache_dir, "--defence", "none",
                                      "--defence", f"prefix:{tmp_path / 'p.pt'}"))
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    vocabulary = sorted(set(CLASSES) | set(ANNOTATED))
    assert set(records["n_classes"]) == {len(vocabulary)}
    images = disentangle / "typographic_attack_dataset" / "images"
    none = records[records["defence"] == "none"].reset_index(drop=True)
    np.testing.assert_allclose(none["p_object"], hand_p_object(tiny_model, images, none, vocabulary, "a photo of {}."),
                               atol=1e-4)
    with_prefix = records[records["defence"] == "prefix:p.pt"].reset_index(drop=True)
    expected = hand_p_object(tiny_model, images, with_prefix, vocabulary, "a photo of * {}.", prefix)
    np.testing.assert_allclose(with_prefix["p_object"], expected, atol=1e-4)
    # The old prompt gives other numbers: the test tells the two apart.
    old = hand_p_object(tiny_model, images, with_prefix, vocabulary, "a photo of a * {}.", prefix)
    assert np.abs(old - expected).max() > 1e-3
    info = json.loads((out / "run.json").read_text())
    assert info["templates"]["first"] == "a photo of {}." and info["templates"]["prefix_prompt"] == "a photo of * {}."
    assert info["dataset"]["label_set"] == "dataset" and info["dataset"]["vocabulary_size"] == len(vocabulary)

    # The earlier behaviour stays reachable: the annotations' labels and words only.
    old_out = tmp_path / "annotations"
    result = runner.invoke(app, _args(disentangle, old_out, cache_dir, "--label-set", "annotations"))
    assert result.exit_code == 0, result.output
    plain = pd.read_parquet(old_out / "records.parquet")
    assert set(plain["n_classes"]) == {len(ANNOTATED)}
    np.testing.assert_allclose(plain["p_object"], hand_p_object(tiny_model, images, plain, ANNOTATED, "a photo of {}."),
                               atol=1e-4)


def test_label_set_setting_is_validated(disentangle) -> None:
    from typoattack.tasks.real.config import load_real_config

    base = {"dataset": "disentangle", "data": str(disentangle), "model": TINY_MODEL, "pretrained": "seed:0"}
    assert load_real_config(None, base).label_set is LabelSet.DATASET
    assert load_real_config(None, {**base, "label_set": "annotations"}).label_set is LabelSet.ANNOTATIONS
    with pytest.raises(ConfigError, match="`label_set` is 'classes'; choose one of dataset, annotations"):
        load_real_config(None, {**base, "label_set": "classes"})


def test_prefix_classifier_takes_the_prompt(tmp_path, tiny_model) -> None:
    prefix = torch.randn(64, generator=torch.Generator().manual_seed(9))
    torch.save(prefix, tmp_path / "p.pt")
    names = ["dog", "cup"]
    weights, cached = get_prefix_classifier(tiny_model, names, tmp_path / "p.pt", tmp_path / "cache",
                                              prompt="a photo of * {}.")
    assert not cached
    again, cached = get_prefix_classifier(tiny_model, names, tmp_path / "p.pt", tmp_path / "cache",
                                            prompt="a photo of * {}.")
    assert cached and torch.equal(again, weights)
    default, cached = get_prefix_classifier(tiny_model, names, tmp_path / "p.pt", tmp_path / "cache")
    assert not cached and not torch.allclose(default, weights, atol=1e-3)  # the prompt is part of the cache key
    with pytest.raises(ConfigError, match="one `\\*` and one `\\{\\}`"):
        get_prefix_classifier(tiny_model, names, tmp_path / "p.pt", tmp_path / "cache", prompt="a photo of {}.")
