"""Model loading (tags, files, local-dir:, hf-hub:, seed:N), devices, the classifier cache and
agreement with open_clip's reference zero-shot evaluation."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from typoattack.data.classes import IMAGENET_CLASSNAMES
from runs import encode_canvases
from typoattack.backends.base import get_classifier, get_classifier_cache_path
from typoattack.tasks.sweep import summarize_logits
from typoattack.config.parsing import load_templates
from typoattack.config.types import DataSpec, ModelSpec, Precision
from typoattack.constants import MODEL_CONFIGS_DIR
from typoattack.data.canvases import prepare_canvases
from typoattack.data.sources import open_image_source
from typoattack.errors import ConfigError, WeightsError
from typoattack.backends.base import check_precision, resolve_device
from typoattack.backends.open_clip.model import TINY_MODEL, create_model, get_canvas_size

CPU = torch.device("cpu")


def _logits(loaded, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model.encode_image(x, normalize=True)


def test_resolve_device() -> None:
    assert resolve_device("auto") == CPU  # no GPU visible in tests
    assert resolve_device("CPU") == CPU
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu")


def test_fp16_on_cpu_is_refused() -> None:
    with pytest.raises(ConfigError, match="fp16 needs a CUDA"):
        check_precision(Precision.FP16, CPU)
    check_precision(Precision.BF16, CPU)
    check_precision(Precision.FP32, CPU)


def test_seed_weights_are_deterministic_and_leave_global_rng_alone(tiny_model) -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    again = create_model(ModelSpec(TINY_MODEL, "seed:0"), CPU, Precision.FP32)
    assert torch.equal(torch.rand(3), expected_next)
    for (k, a), b in zip(tiny_model.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), k
    other = create_model(ModelSpec(TINY_MODEL, "seed:1"), CPU, Precision.FP32)
    a, b = tiny_model.model.visual.conv1.weight, other.model.visual.conv1.weight
    assert not torch.equal(a, b)


def test_checkpoint_file_loads_through_the_user_path(tiny_model, tiny_checkpoint) -> None:
    loaded = create_model(ModelSpec(TINY_MODEL, str(tiny_checkpoint)), CPU, Precision.FP32)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    assert torch.equal(_logits(loaded, x), _logits(tiny_model, x))
    assert "file:" in loaded.weights_id and str(tiny_checkpoint.resolve()) in loaded.weights_id
    assert loaded.canvas_size == (224, 224)
    assert loaded.geometry.mean == pytest.approx(open_clip.OPENAI_DATASET_MEAN)


def test_local_dir_loads(tiny_model, tmp_path) -> None:
    cfg = json.loads((MODEL_CONFIGS_DIR / f"{TINY_MODEL}.json").read_text())
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(tiny_model.model.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    loaded = create_model(ModelSpec(f"local-dir:{tmp_path}"), CPU, Precision.FP32)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    assert torch.equal(_logits(loaded, x), _logits(tiny_model, x))
    assert loaded.weights_id.startswith("local-dir:")


def test_local_dir_without_weights_is_an_error(tmp_path) -> None:
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(WeightsError, match="holds no weights"):
        create_model(ModelSpec(f"local-dir:{tmp_path}"), CPU, Precision.FP32)
    with pytest.raises(WeightsError, match="does not exist"):
        create_model(ModelSpec(f"local-dir:{tmp_path / 'nope'}"), CPU, Precision.FP32)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        (ModelSpec("ViT-B-33", "openai"), r"unknown open_clip model 'ViT-B-33'.*Did you mean 'ViT-B-32'"),
        (ModelSpec("ViT-B-32", "opnai"), r"unknown pretrained tag 'opnai'.*Did you mean 'openai'"),
        (ModelSpec("ViT-B-32", None), r"no weights given for ViT-B-32.*--pretrained"),
        (ModelSpec("ViT-B-32", "/no/such/file.pt"), r"checkpoint file /no/such/file.pt does not exist"),
        (ModelSpec(TINY_MODEL, "seed:x"), r"seed:N with an integer"),
    ],
)
def test_bad_model_specs_give_clear_errors(spec: ModelSpec, pattern: str) -> None:
    with pytest.raises(WeightsError, match=pattern):
        create_model(spec, CPU, Precision.FP32)


def test_wrong_architecture_checkpoint_is_a_weights_error(tmp_path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"visual.conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="cannot load weights for typoattack-tiny"):
        create_model(ModelSpec(TINY_MODEL, str(path)), CPU, Precision.FP32)


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("spec", [ModelSpec("ViT-B-32", "openai"), ModelSpec("hf-hub:nobody/no-such-clip")])
def test_missing_weights_offline_fail_fast_with_how_to_supply(no_network, tmp_path, spec) -> None:
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        create_model(spec, CPU, Precision.FP32, cache_dir=str(tmp_path))
    assert time.perf_counter() - t0 < 30  # no minute of download retries
    message = str(info.value)
    assert "\n" not in message
    assert "--pretrained /path/to/checkpoint.pt" in message and "local-dir:" in message


def test_canvas_size_from_config_without_loading() -> None:
    assert get_canvas_size(ModelSpec("ViT-B-32", "openai")) == (224, 224)
    assert get_canvas_size(ModelSpec("RN50x4", "openai")) == (288, 288)
    assert get_canvas_size(ModelSpec("hf-hub:x/y")) is None


def test_canvas_transform_matches_open_clip_preprocess(tiny_model, sample_dir) -> None:
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    mean = torch.tensor(tiny_model.geometry.mean).view(3, 1, 1)
    std = torch.tensor(tiny_model.geometry.std).view(3, 1, 1)
    files = pd.read_csv(sample_dir / "labels.csv")["file"].tolist()[:12]
    for name in files:
        img = Image.open(sample_dir / name).convert("RGB")
        canvas = np.asarray(tiny_model.geometry.transform(img), dtype=np.uint8)
        ours = (torch.from_numpy(canvas.copy()).permute(2, 0, 1).float() / 255 - mean) / std
        assert torch.equal(ours, preprocess(img)), name


def test_classifier_matches_open_clip_and_is_cached(tiny_model, tmp_path) -> None:
    templates = load_templates("simple")
    weights, cached = get_classifier(tiny_model, IMAGENET_CLASSNAMES, templates, tmp_path)
    assert not cached
    assert weights.shape == (64, 1000) and weights.dtype == torch.float32
    assert torch.allclose(weights.norm(dim=0), torch.ones(1000), atol=1e-5)
    reference = open_clip.build_zero_shot_classifier(
        tiny_model.model, tiny_model.tokenizer, IMAGENET_CLASSNAMES, list(templates), num_classes_per_batch=10)
    assert torch.allclose(weights, reference, atol=1e-6)
    path = get_classifier_cache_path(tiny_model, IMAGENET_CLASSNAMES, templates, tmp_path)
    assert path.is_file() and path.parent == tmp_path / "classifiers"

    seen = []
    again, cached = get_classifier(tiny_model, IMAGENET_CLASSNAMES, templates, tmp_path, progress=seen.append)
    assert cached and torch.equal(again, weights) and sum(seen) == 1000

    other = get_classifier_cache_path(tiny_model, IMAGENET_CLASSNAMES, templates[:3], tmp_path)
    renamed = get_classifier_cache_path(tiny_model, ["x", *IMAGENET_CLASSNAMES[1:]], templates, tmp_path)
    assert len({path, other, renamed}) == 3


def test_clean_predictions_equal_open_clip_reference_zero_shot(tiny_model, sample_dir, cache_dir) -> None:
    """Our canvases + encoder give the top-1 of open_clip's reference evaluation on real images."""
    templates = load_templates("simple")
    classifier, _ = get_classifier(tiny_model, IMAGENET_CLASSNAMES, templates, cache_dir)
    source = open_image_source(DataSpec(str(sample_dir)))
    indices = list(range(0, 500, 8))
    canvases = prepare_canvases(source, indices, tiny_model.geometry.transform, tiny_model.geometry.key,
                                tiny_model.canvas_size, cache_dir)
    ours = encode_canvases(tiny_model, classifier, np.asarray(canvases.canvases)).argmax(1)

    # The reference: open_clip_train's zero-shot loop on preprocess(PIL RGB image).
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    images = torch.stack([preprocess(Image.open(sample_dir / source.items[i].image_id).convert("RGB"))
                          for i in indices])
    with torch.inference_mode():
        output = tiny_model.model(image=images)
        features = output["image_features"] if isinstance(output, dict) else output[0]
        reference = (100.0 * features @ classifier).argmax(1)
    assert torch.equal(ours, reference)


def test_summarize_logits() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0, 5.0], [4.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    s = summarize_logits(logits, np.array([1, -1]), np.array([5, 2]))
    assert s["pred_index"].tolist() == [5, 0]
    assert s["pred_top5"][0].tolist() == [5, 1, 3, 2, 0]
    probs = torch.softmax(logits, 1)
    assert s["p_target"][0] == pytest.approx(float(probs[0, 1]))
    assert np.isnan(s["p_target"][1])
    assert s["p_true"].tolist() == pytest.approx([float(probs[0, 5]), float(probs[1, 2])])


def test_bf16_autocast_runs_on_cpu(tiny_model, tmp_path) -> None:
    loaded = create_model(ModelSpec(TINY_MODEL, "seed:0"), CPU, Precision.BF16)
    classifier, _ = get_classifier(tiny_model, IMAGENET_CLASSNAMES[:20], ["a photo of a {}."], tmp_path)
    canvases = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    logits = encode_canvases(loaded, classifier, canvases)
    assert logits.dtype == torch.float32 and logits.shape == (2, 20)
    full = encode_canvases(tiny_model, classifier, canvases)
    assert torch.allclose(logits, full, atol=2.0)  # bf16 is close to fp32, not equal
