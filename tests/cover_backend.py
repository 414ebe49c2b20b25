"""A model family for the threshold tests whose decision is known: `--backend cover --model cover-net`.

Its images (`make_cover_images`) are canvases of one colour: red is the true class, green the image's
threshold in thousandths of the pixels. The model measures the share of pixels that differ from the
canvas's colour (the median pixel: the text covers less than half) — exactly the pixel cover that
compositing the text measures — and predicts `TARGET` once that share reaches the threshold, the true
class below it. Text features are one-hot class indices read from the class name (templates `{}`), so
the zero-shot classifier is the identity."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from typoattack.backends.base import Backend, InputGeometry, ZeroShotModel
from typoattack.config.types import ModelSpec, Precision
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.errors import WeightsError

NAME = "cover-net"
SIZE = 128
TARGET = 963  # pizza
N_CLASSES = len(IMAGENET_CLASSNAMES)
_INDEX = {}
for _i, _name in enumerate(IMAGENET_CLASSNAMES):
    _INDEX.setdefault(_name, _i)


def _identity(image: Image.Image) -> Image.Image:
    return image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.NEAREST)


GEOMETRY = InputGeometry((SIZE, SIZE), _identity, f"cover-nearest-{SIZE}", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def make_cover_images(folder: Path, thresholds: Sequence[float], classes: Sequence[int]) -> Path:
    """A folder of one-colour PNGs with labels.csv: image k has true class classes[k] (< 256, a name no
    other class has) and threshold thresholds[k] (a multiple of 0.001 in [0.001, 0.255])."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,class_index"]
    for k, (t, c) in enumerate(zip(thresholds, classes)):
        green = round(t * 1000)
        assert abs(green / 1000 - t) < 1e-12 and 1 <= green <= 255 and 0 <= c < 256
        pixels = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        pixels[...] = (c, green, 128)
        name = f"cover{k:03d}.png"
        Image.fromarray(pixels).save(folder / name)
        lines.append(f"{name},{c}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def measure_cover(x: torch.Tensor) -> torch.Tensor:
    """float64 [B] share of the pixels of each canvas that differ from its median pixel."""
    flat = x.reshape(len(x), -1, 3).float()
    background = flat.median(dim=1).values
    return (flat != background[:, None, :]).any(dim=-1).double().mean(dim=1)


class CoverModel(ZeroShotModel):
    """The loaded cover model (no weights)."""

    backend = "cover"

    def __init__(self, spec: ModelSpec, device: torch.device, precision: Precision) -> None:
        self.spec, self.device, self.precision = spec, device, precision
        self.weights_id, self.geometry = "cover|v1", GEOMETRY
        self.model = torch.nn.Identity()
        self.logit_scale, self.logit_bias = 10.0, 0.0

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1, 3).float()
        background = flat.median(dim=1).values
        true = background[:, 0].round().long()
        threshold = background[:, 1].double() / 1000
        cls = torch.where(measure_cover(x) >= threshold - 1e-12, torch.full_like(true, TARGET), true)
        return F.one_hot(cls, N_CLASSES).float()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        index = torch.tensor([_INDEX[t] for t in texts], device=self.device)
        return F.one_hot(index, N_CLASSES).float()


class CoverBackend(Backend):
    """`--backend cover`: one model, cover-net."""

    name = "cover"

    def check_model(self, spec: ModelSpec, cache_dir: str | None = None) -> None:
        if spec.name != NAME:
            raise WeightsError(f"the cover backend has one model, {NAME}, not {spec.name!r}")

    def get_input_size(self, spec: ModelSpec) -> tuple[int, int] | None:
        return GEOMETRY.size

    def get_geometry(self, spec: ModelSpec) -> InputGeometry:
        return GEOMETRY

    def get_weights_id(self, spec: ModelSpec) -> str:
        return "cover|v1"

    def load(self, spec: ModelSpec, device: torch.device, precision: Precision, compile: bool = False) -> CoverModel:
        self.check_model(spec)
        return CoverModel(spec, device, precision)

    def list_models(self) -> list[str]:
        return [NAME]
