"""A second model family for the tests: a deterministic two-layer image and text encoder behind the
Backend protocol, with nothing of open_clip. `--backend toy --model toy-net --pretrained seed:N`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from typoattack.backends.base import Backend, InputGeometry, ZeroShotModel, get_autocast
from typoattack.config.types import ModelSpec, Precision
from typoattack.errors import WeightsError

NAME = "toy-net"
SIZE = 64
GRID = 4  # the canvas is pooled to GRID x GRID cells per channel
WIDTH, DIM = 32, 16


def _resize_crop(image: Image.Image) -> Image.Image:
    """Bilinear resize of the shortest side to SIZE, then the centre SIZE x SIZE crop."""
    w, h = image.size
    scale = SIZE / min(w, h)
    image = image.convert("RGB").resize((max(SIZE, round(w * scale)), max(SIZE, round(h * scale))),
                                        Image.Resampling.BILINEAR)
    left, top = (image.width - SIZE) // 2, (image.height - SIZE) // 2
    return image.crop((left, top, left + SIZE, top + SIZE))


GEOMETRY = InputGeometry((SIZE, SIZE), _resize_crop, f"toy-resize-crop-{SIZE}", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class ToyNet(torch.nn.Module):
    """Two linear layers per tower: pooled pixels -> features, byte counts of a text -> features."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.image = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(3 * GRID * GRID, WIDTH, generator=g)),
                                             torch.nn.Parameter(torch.randn(WIDTH, DIM, generator=g))])
        self.text = torch.nn.ParameterList([torch.nn.Parameter(torch.randn(256, WIDTH, generator=g)),
                                            torch.nn.Parameter(torch.randn(WIDTH, DIM, generator=g))])


class ToyModel(ZeroShotModel):
    """The loaded toy model."""

    backend = "toy"

    def __init__(self, spec: ModelSpec, seed: int, device: torch.device, precision: Precision) -> None:
        self.spec, self.device, self.precision = spec, device, precision
        self.weights_id, self.geometry = f"toy|seed:{seed}", GEOMETRY
        self.model = ToyNet(seed).to(device).eval()
        self.logit_scale, self.logit_bias = 10.0, 0.0

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.geometry.mean, device=x.device)
        std = torch.tensor(self.geometry.std, device=x.device)
        x = ((x.float() / 255 - mean) / std).permute(0, 3, 1, 2)
        with get_autocast(self.precision, self.device):
            pooled = F.adaptive_avg_pool2d(x, GRID).flatten(1)
            hidden = torch.tanh(pooled @ self.model.image[0])
            return F.normalize((hidden @ self.model.image[1]).float(), dim=-1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        counts = torch.zeros(len(texts), 256, device=self.device)
        for i, text in enumerate(texts):
            for byte in text.encode():
                counts[i, byte] += 1
        hidden = torch.tanh(counts @ self.model.text[0])
        return F.normalize(hidden @ self.model.text[1], dim=-1)


class ToyBackend(Backend):
    """`--backend toy`: one model, toy-net, with random weights from `seed:N`."""

    name = "toy"

    def _seed(self, spec: ModelSpec) -> int:
        if spec.name != NAME:
            raise WeightsError(f"the toy backend has one model, {NAME}, not {spec.name!r}")
        if not (spec.pretrained or "").startswith("seed:"):
            raise WeightsError(f"{NAME} takes --pretrained seed:N, got {spec.pretrained!r}")
        return int(str(spec.pretrained)[5:])

    def check_model(self, spec: ModelSpec, cache_dir: str | None = None) -> None:
        self._seed(spec)

    def get_input_size(self, spec: ModelSpec) -> tuple[int, int] | None:
        return GEOMETRY.size

    def get_geometry(self, spec: ModelSpec) -> InputGeometry:
        return GEOMETRY

    def get_weights_id(self, spec: ModelSpec) -> str:
        return f"toy|seed:{self._seed(spec)}"

    def load(self, spec: ModelSpec, device: torch.device, precision: Precision, compile: bool = False) -> ToyModel:
        return ToyModel(spec, self._seed(spec), device, precision)

    def list_models(self) -> list[str]:
        return [NAME]
