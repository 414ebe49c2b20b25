"""A second backend (tests/toy_backend.py, nothing of open_clip) runs eval, real and stroop end to
end through the CLI: the tasks know model families only through the Backend protocol."""

from __future__ import annotations

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import toy_backend
from real_datasets_builders import make_named_folder
from typoattack.backends import registry
from typoattack.cli import app
from typoattack.config.parsing import load_templates
from typoattack.config.types import ModelSpec, Precision
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.data.sources import load_rgb

runner = CliRunner()
TOY = ["--backend", "toy", "--model", toy_backend.NAME, "--pretrained", "seed:3", "--device", "cpu"]


@pytest.fixture(autouse=True)
def toy(monkeypatch):
    """Register the toy backend, and make any open_clip model creation fail loudly."""
    monkeypatch.setitem(registry._BACKENDS, "toy", "toy_backend:ToyBackend")
    registry.get_backend.cache_clear()

    def refuse(*args, **kwargs):
        raise AssertionError("an open_clip model was created during a toy-backend run")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    monkeypatch.setattr(open_clip, "create_model", refuse)
    yield
    registry.get_backend.cache_clear()


def _toy_model() -> toy_backend.ToyModel:
    return toy_backend.ToyBackend().load(ModelSpec(toy_backend.NAME, "seed:3", "toy"), torch.device("cpu"),
                                         Precision.FP32)


def test_models_lists_the_toy_family() -> None:
    result = runner.invoke(app, ["models", "--backend", "toy"])
    assert result.exit_code == 0 and result.output.split() == [toy_backend.NAME]


def test_eval_with_the_toy_backend(tmp_path, sample_dir) -> None:
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n  - {text: iPod, target: iPod}\n")
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", *TOY, "--data", str(sample_dir), "--limit", "12", "--vocab", str(vocab),
                                 "--fraction", "0.1", "--placement", "center", "--templates", "simple", "--workers", "0",
                                 "--chunk-size", "5",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 12 * 3 and set(records["model"]) == {toy_backend.NAME}
    # The clean predictions, computed here from the toy model alone.
    model = _toy_model()
    templates = load_templates("simple")
    with torch.inference_mode():
        classifier = torch.stack([model.encode_texts([t.format(c) for t in templates]).mean(0)
                                  for c in IMAGENET_CLASSNAMES], dim=1)
        classifier = classifier / classifier.norm(dim=0)
        clean = records[records["word"] == ""]
        canvases = np.stack([np.asarray(toy_backend.GEOMETRY.transform(load_rgb(sample_dir / i)), dtype=np.uint8)
                             for i in clean["image_id"]])
        logits = model.logit_scale * model.encode_images(torch.from_numpy(canvases)) @ classifier
    assert logits.argmax(1).tolist() == clean["pred_index"].tolist()
    assert (records["pixel_cover"][records["word"] != ""] > 0.05).all()
    assert (out / "per_word.csv").is_file()
    report = runner.invoke(app, ["report", str(out)])
    assert report.exit_code == 0, report.output


def test_real_with_the_toy_backend(tmp_path) -> None:
    data = make_named_folder(tmp_path / "rta100")
    out = tmp_path / "real"
    result = runner.invoke(app, ["real", *TOY, "--dataset", "rta100", "--data", str(data), "--workers", "0",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    assert len(records) == 9 and set(records["model"]) == {toy_backend.NAME}
    assert ((records["p_object"] >= 0) & (records["p_object"] <= 1)).all()


def test_stroop_with_the_toy_backend(tmp_path) -> None:
    out = tmp_path / "stroop"
    result = runner.invoke(app, ["stroop", *TOY, "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(out / "stroop.csv")
    assert len(rows) == 64 and set(rows["model"]) == {toy_backend.NAME}
    assert (out / "stroop_matrix.png").is_file()


def test_a_toy_model_without_head_hooks_refuses_head_defences_in_one_line(tmp_path, sample_dir) -> None:
    result = runner.invoke(app, ["eval", *TOY, "--data", str(sample_dir), "--limit", "2", "--vocab", "goh2021",
                                 "--placement", "center", "--templates", "simple", "--workers", "0", "--defence", "heads:0.0",
                                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "head ablation is not supported for toy ToyNet" in result.output
