"""GPU checks: device compositing, encoding and autocast on CUDA against the CPU.

Skipped where no CUDA GPU is visible (CI, the 2-core machines); `make gpu-check` runs them with
the GPU visible (the test session otherwise hides it, see conftest.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from typoattack.attack.compose import composite_batch, get_offsets, upload_mask
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import ModelSpec, Placement, Precision, RenderStyle
from typoattack.data.classes import IMAGENET_CLASSNAMES
from runs import encode_canvases
from typoattack.backends.base import get_classifier
from typoattack.backends.open_clip.model import TINY_MODEL, create_geometry, create_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make gpu-check)")]
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def canvases(sample_dir) -> tuple[list[str], np.ndarray]:
    transform = create_geometry(size=224).transform
    files = pd.read_csv(sample_dir / "labels.csv")["file"].tolist()[::8]
    return files, np.stack([np.asarray(transform(Image.open(sample_dir / f).convert("RGB")), np.uint8) for f in files])


@pytest.mark.parametrize("placement", list(Placement))
def test_cuda_composite_equals_cpu_reference(canvases, placement) -> None:
    ids, clean = canvases
    style = RenderStyle(fill=(255, 0, 0), outline=(0, 0, 255), outline_width=2, opacity=0.6)
    mask = create_attack_mask("library", 0.07, placement, style, (224, 224))
    x = torch.from_numpy(clean.copy()).float().to(CUDA)
    composite_batch(x, upload_mask(mask, CUDA), get_offsets(mask, ids, seed=5))
    got = x.round().to(torch.uint8).cpu().numpy()
    for k, image_id in enumerate(ids):
        assert np.array_equal(got[k], apply_attack(clean[k], mask, image_id, 5)[0]), image_id


@pytest.fixture(scope="module")
def models(cache_dir):
    spec = ModelSpec(TINY_MODEL, "seed:0")
    out = {}
    for name, device, precision in (("cpu", CPU, Precision.FP32), ("fp32", CUDA, Precision.FP32),
                                    ("bf16", CUDA, Precision.BF16)):
        loaded = create_model(spec, device, precision)
        classifier, _ = get_classifier(loaded, IMAGENET_CLASSNAMES, ("a photo of a {}.",), str(cache_dir))
        out[name] = (loaded, classifier)
    return out


def test_cuda_fp32_logits_match_the_cpu(models, canvases) -> None:
    _, clean = canvases
    cpu = encode_canvases(*models["cpu"], clean)
    gpu = encode_canvases(*models["fp32"], clean)
    assert torch.allclose(cpu, gpu, atol=2e-2), (cpu - gpu).abs().max()
    assert (cpu.argmax(1) == gpu.argmax(1)).float().mean() >= 0.98


def test_cuda_bf16_autocast_agrees_with_fp32(models, canvases) -> None:
    _, clean = canvases
    fp32 = encode_canvases(*models["fp32"], clean)
    bf16 = encode_canvases(*models["bf16"], clean)
    assert bf16.dtype == torch.float32  # logits leave autocast in fp32
    assert (fp32.argmax(1) == bf16.argmax(1)).float().mean() >= 0.9
