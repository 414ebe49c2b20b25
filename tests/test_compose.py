"""Device compositing is bit-identical to the CPU reference renderer (render.apply_attack)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from typoattack.attack.compose import composite_batch, get_offsets, upload_mask
from typoattack.config.types import Placement, RenderStyle
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask


@pytest.fixture(scope="module")
def canvases(sample_dir) -> tuple[list[str], np.ndarray]:
    tf = T.Compose([T.Resize(224, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224)])
    files = pd.read_csv(sample_dir / "labels.csv")["file"].tolist()[::25]
    arrays = [np.asarray(tf(Image.open(sample_dir / f).convert("RGB")), dtype=np.uint8) for f in files]
    return files, np.stack(arrays)


STYLES = [
    RenderStyle(),
    RenderStyle(fill=(255, 0, 0), outline=(0, 0, 255), outline_width=2, opacity=0.6),
    RenderStyle(outline_width=0, opacity=0.35),
]


@pytest.mark.parametrize("placement", list(Placement))
@pytest.mark.parametrize("style", STYLES, ids=["default", "coloured", "no-outline"])
@pytest.mark.parametrize("word,fraction", [("iPod", 0.07), ("library", 0.03), ("$$$", 0.12)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_device_composite_equals_cpu_reference(canvases, placement, style, word, fraction, dtype) -> None:
    ids, clean = canvases
    mask = create_attack_mask(word, fraction, placement, style, (224, 224))
    expected = [apply_attack(c, mask, i, seed=3) for c, i in zip(clean, ids)]
    x = torch.from_numpy(clean.copy()).to(dtype)
    changed = composite_batch(x, upload_mask(mask, torch.device("cpu")), get_offsets(mask, ids, seed=3))
    got = x.round().to(torch.uint8).numpy()
    for k, (attacked, cover) in enumerate(expected):
        assert np.array_equal(got[k], attacked), ids[k]
        assert changed[k].item() / (224 * 224) == cover


def test_composite_touches_only_its_box(canvases) -> None:
    ids, clean = canvases
    mask = create_attack_mask("pizza", 0.05, Placement.CENTER, RenderStyle(), (224, 224))
    x = torch.from_numpy(clean.copy()).float()
    composite_batch(x, upload_mask(mask, torch.device("cpu")))
    lay = mask.layers
    h, w = lay.shape
    outside = np.ones((224, 224), bool)
    outside[lay.y0:lay.y0 + h, lay.x0:lay.x0 + w] = False
    assert np.array_equal(x.numpy().astype(np.uint8)[:, outside], clean[:, outside])


def test_random_placement_needs_offsets(canvases) -> None:
    _, clean = canvases
    mask = create_attack_mask("pizza", 0.05, Placement.RANDOM, RenderStyle(), (224, 224))
    with pytest.raises(ValueError, match="offsets"):
        composite_batch(torch.from_numpy(clean.copy()).float(), upload_mask(mask, torch.device("cpu")))


def test_random_placement_with_several_stamps_matches_reference(canvases) -> None:
    ids, clean = canvases
    mask = create_attack_mask("library", 0.2, Placement.RANDOM, RenderStyle(), (224, 224))
    assert mask.copies == 2
    expected = [apply_attack(c, mask, i, seed=0) for c, i in zip(clean, ids)]
    x = torch.from_numpy(clean.copy()).float()
    changed = composite_batch(x, upload_mask(mask, torch.device("cpu")), get_offsets(mask, ids, seed=0))
    for k, (attacked, cover) in enumerate(expected):
        assert np.array_equal(x[k].numpy().astype(np.uint8), attacked)
        assert changed[k].item() / (224 * 224) == cover
    assert abs(np.mean([c for _, c in expected]) - 0.2) <= 0.1 * 0.2


@pytest.mark.parametrize("batch_size", [1, 7, 16, 64])
def test_batches_hold_each_jobs_canvas(canvases, batch_size) -> None:
    """The evaluation loop's batches are the canvases of their jobs, in job order, whatever the
    batch size and however the rows of a shard are spread over the cache (skipped images)."""
    from typoattack.tasks.sweep import _iter_batches

    _, clean = canvases
    cache = SimpleNamespace(canvases=clean)
    rows = np.array([0, 1, 2, 5, 6, 9, 10, 11, 12, 15, 16, 19])
    job_pos = np.tile(np.arange(len(rows)), 3)
    seen = 0
    for start, x in _iter_batches(cache, rows, job_pos, batch_size, torch.device("cpu")):
        assert start == seen
        assert np.array_equal(x.numpy(), clean[rows[job_pos[start:start + batch_size]]].astype(np.float32))
        seen += len(x)
    assert seen == len(job_pos)



def test_device_masks_bind_on_demand_and_keep_a_few(canvases) -> None:
    from typoattack.attack.compose import DeviceMasks
    from typoattack.attack.masks import MaskRequest, create_attack_masks

    ids, clean = canvases
    cpu = torch.device("cpu")
    requests = [MaskRequest(w, 0.05, p, RenderStyle(), (224, 224)) for w in ("pizza", "iPod") for p in Placement]
    bound = DeviceMasks(create_attack_masks(requests), cpu, keep=2)
    assert len(bound) == len(requests)
    offsets = [get_offsets(dm.mask, ids, seed=4) for dm in bound]
    assert not any("pixels" in vars(dm) for dm in bound._bound.values())  # reading masks uploads nothing
    first = bound[0]
    for k, request in enumerate(requests):
        mask = create_attack_mask(request.word, request.fraction, request.placement, request.style, (224, 224))
        x, y = torch.from_numpy(clean.copy()), torch.from_numpy(clean.copy())
        changed = composite_batch(x, bound[k], offsets[k])
        assert torch.equal(changed, composite_batch(y, upload_mask(mask, cpu), offsets[k])) and torch.equal(x, y)
        assert bound[k] is bound[k] and list(bound._bound)[-1] == k and len(bound._bound) <= 2
    assert bound[0] is not first  # dropped, then bound again
