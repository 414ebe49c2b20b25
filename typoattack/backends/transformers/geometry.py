"""The model-input canvas of a transformers model, from its own image processor: the processor's
resize and crop, reproduced pixel for pixel (PIL -> PIL), and its rescale and normalisation as a
mean and std for [0, 1] pixels. SigLIP 2 NaFlex gets a fixed square canvas (see `NaflexCanvas`).

`AutoImageProcessor` gives the torchvision processor by default in transformers 5 (torchvision
installed); its resize runs torch's uint8 antialiased kernel on the CPU, which differs from PIL's
`Image.resize` on about 0.3% of pixels by 1-2 levels. So the canvas resize calls the same
torchvision function on the same uint8 tensor; a folder whose processor is the PIL one
(`...ImageProcessorPil`) gets PIL's `Image.resize`, as that processor does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from typoattack.backends.base import InputGeometry
from typoattack.errors import WeightsError

TORCHVISION = "torchvision"
PIL_BACKEND = "pil"
# Processors whose preprocessing is resize, centre crop, rescale (with EfficientNet's optional
# offset) and normalisation, which a canvas plus a per-channel affine map reproduces exactly.
_PLAIN_PROCESSORS = ("CLIPImageProcessor", "SiglipImageProcessor", "ChineseCLIPImageProcessor",
                     "EfficientNetImageProcessor", "ViTImageProcessor", "BitImageProcessor")
_NAFLEX_PROCESSORS = ("Siglip2ImageProcessor",)


@dataclass(frozen=True)
class ProcessorCanvas:
    """PIL -> PIL: an image processor's resize and centre crop (picklable, for decode workers).

    Attributes:
        backend: `torchvision` (torch's uint8 resize kernel) or `pil` (`Image.resize`).
        resample: PIL filter number of the resize (e.g. 3 = bicubic).
        size: Fixed (height, width) of the resize, or None.
        shortest_edge: Resize the shortest side to this (keeping the aspect ratio), or None.
        crop: (height, width) of the centre crop, or None.
    """

    backend: str
    resample: int
    size: tuple[int, int] | None = None
    shortest_edge: int | None = None
    crop: tuple[int, int] | None = None

    def __call__(self, image: Image.Image) -> Image.Image:
        """The processor's resized and cropped image (RGB, before rescaling), as a PIL image."""
        height, width = image.height, image.width
        if self.size is not None:
            target = self.size
        elif self.shortest_edge is not None:
            target = get_shortest_edge_size(height, width, self.shortest_edge)
        else:
            target = (height, width)
        pixels = resize_pixels(image, target, self.resample, self.backend)
        if self.crop is not None:
            pixels = crop_center(pixels, self.crop, self.backend)
        return Image.fromarray(pixels)


@dataclass(frozen=True)
class NaflexCanvas:
    """PIL -> PIL: the fixed square canvas of a SigLIP 2 NaFlex model (picklable).

    NaFlex's processor keeps each image's aspect ratio and resizes it to the largest grid of
    whole patches with at most `max_num_patches` patches, so canvases differ in size. Rule here:
    the image is first centre-cropped to a square (whole pixels, no resampling), then resized by
    the processor's own rule, which for a square gives `side` x `side` with side =
    floor(sqrt(max_num_patches)) * patch_size. The canvas is exactly what the processor makes of
    the square crop, and the processor leaves the canvas itself unchanged, so the pixel fraction is
    exact for what the model sees.

    Attributes:
        backend: `torchvision` or `pil`, as ProcessorCanvas.
        resample: PIL filter number (NaFlex: 2 = bilinear).
        patch_size: Pixels per patch side.
        max_num_patches: The processor's patch budget.
    """

    backend: str
    resample: int
    patch_size: int
    max_num_patches: int

    @property
    def side(self) -> int:
        """Canvas side in pixels."""
        return math.isqrt(self.max_num_patches) * self.patch_size

    def __call__(self, image: Image.Image) -> Image.Image:
        """The square canvas (RGB, before rescaling).

        Raises:
            ValueError: An image so small that the processor would not give the full grid.
        """
        side = min(image.width, image.height)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        square = image.crop((left, top, left + side, top + side))
        target = get_naflex_size(side, side, self.patch_size, self.max_num_patches)
        if target != (self.side, self.side):
            raise ValueError(f"a {side}x{side} crop gives a {target} NaFlex input, not the {self.side}-pixel canvas")
        return Image.fromarray(resize_pixels(square, target, self.resample, self.backend))


def get_shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """(height, width) after resizing the shortest side to `shortest_edge`, the longer side
    truncated as transformers' `get_resize_output_image_size` does."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def get_naflex_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """(height, width) that SigLIP 2's processor resizes an image to (its own function)."""
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    return tuple(get_image_size_for_max_num_patches(height, width, patch_size, max_num_patches))  # type: ignore[return-value]


def resize_pixels(image: Image.Image, size: tuple[int, int], resample: int, backend: str) -> np.ndarray:
    """uint8 [h, w, 3] pixels of an RGB image resized to `size` (height, width) as the processor's
    backend resizes: torchvision's antialiased resize of the uint8 CHW tensor, or PIL's."""
    if backend == PIL_BACKEND:
        return np.asarray(image.resize((size[1], size[0]), resample=resample))
    from torchvision.transforms.v2 import functional as tvF
    from transformers.image_utils import pil_torch_interpolation_mapping

    # Contiguous CHW, as the processor holds it: torch's uint8 kernels take another path for a
    # channels-last (permuted) tensor.
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    if size != (image.height, image.width):
        pixels = tvF.resize(pixels, list(size), interpolation=pil_torch_interpolation_mapping[resample],
                            antialias=True)
    return pixels.permute(1, 2, 0).numpy()


def crop_center(pixels: np.ndarray, crop: tuple[int, int], backend: str) -> np.ndarray:
    """uint8 [crop_h, crop_w, 3]: the processor's centre crop (top-left offset rounded down; an
    image smaller than the crop is zero-padded, torchvision's and transformers' numpy rules differ
    by where the odd pixel goes)."""
    height, width = pixels.shape[:2]
    ch, cw = crop
    if ch > height or cw > width:
        if backend == PIL_BACKEND:
            top_pad, left_pad = math.ceil(max(ch - height, 0) / 2), math.ceil(max(cw - width, 0) / 2)
        else:
            top_pad, left_pad = max(ch - height, 0) // 2, max(cw - width, 0) // 2
        padded = np.zeros((max(ch, height), max(cw, width), 3), dtype=pixels.dtype)
        padded[top_pad:top_pad + height, left_pad:left_pad + width] = pixels
        if backend == PIL_BACKEND:
            top, left = (height - ch) // 2 + top_pad, (width - cw) // 2 + left_pad
            return padded[max(top, 0):max(top, 0) + ch, max(left, 0):max(left, 0) + cw]
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = int((height - ch) / 2.0), int((width - cw) / 2.0)
    return pixels[top:top + ch, left:left + cw]


def load_image_processor(folder: Path, where: str) -> Any:
    """The folder's image processor as `AutoImageProcessor` loads it (no weights are read).

    Raises:
        WeightsError: No processor config, or one transformers cannot load.
    """
    from transformers import AutoImageProcessor

    if not (folder / "preprocessor_config.json").is_file() and not (folder / "processor_config.json").is_file():
        raise WeightsError(f"{where} has no image processor (preprocessor_config.json or processor_config.json): the "
                           "canvas follows the model's own processor; save it with the model "
                           "(processor.save_pretrained(folder))")
    try:
        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"cannot load the image processor of {where}: {first[:300]}") from None


def create_input_geometry(processor: Any, where: str) -> InputGeometry:
    """The canvas and normalisation of an image processor.

    Args:
        processor: A transformers image processor (from `load_image_processor`).
        where: The repo id or folder, for messages and the canvas key.

    Raises:
        WeightsError: A processor whose preprocessing is not resize + crop + rescale + normalise,
            or whose output size varies per image.
    """
    name = type(processor).__name__
    base = name[:-3] if name.endswith("Pil") else name
    backend = str(getattr(processor, "backend", TORCHVISION))
    resample = int(getattr(processor, "resample", 2))
    if base in _NAFLEX_PROCESSORS:
        canvas: ProcessorCanvas | NaflexCanvas = NaflexCanvas(backend, resample, int(processor.patch_size),
                                                              int(processor.max_num_patches))
        size = (canvas.side, canvas.side)
    elif base in _PLAIN_PROCESSORS:
        canvas, size = _create_plain_canvas(processor, backend, resample, where)
    else:
        raise WeightsError(f"{where}: image processor {name} is not supported (typoattack reproduces "
                           f"{', '.join(_PLAIN_PROCESSORS + _NAFLEX_PROCESSORS)})")
    mean, std = get_pixel_normalisation(processor)
    import torchvision
    from PIL import __version__ as pil_version

    library = f"torch {torch.__version__} torchvision {torchvision.__version__}" if backend == TORCHVISION \
        else f"pillow {pil_version}"
    return InputGeometry(size=size, transform=canvas, key=f"transformers {canvas!r} {library}", mean=mean, std=std)


def _create_plain_canvas(processor: Any, backend: str, resample: int, where: str
                         ) -> tuple[ProcessorCanvas, tuple[int, int]]:
    size = processor.size if getattr(processor, "do_resize", True) else None
    crop = processor.crop_size if getattr(processor, "do_center_crop", False) else None
    crop_hw = (int(crop.height), int(crop.width)) if crop is not None and crop.height and crop.width else None
    fixed = shortest = None
    if size is not None:
        if size.height and size.width and not size.shortest_edge:
            fixed = (int(size.height), int(size.width))
        elif size.shortest_edge and not size.longest_edge and not size.height:
            shortest = int(size.shortest_edge)
        else:
            raise WeightsError(f"{where}: resize rule {dict(size.__dict__)} of {type(processor).__name__} is not "
                               "supported (only a fixed height/width or a shortest edge)")
    out = crop_hw or fixed
    if out is None:
        raise WeightsError(f"{where}: {type(processor).__name__} gives inputs whose size varies per image (no fixed "
                           "resize and no centre crop); typoattack needs one canvas size per model")
    return ProcessorCanvas(backend, resample, fixed, shortest, crop_hw), out


def get_pixel_normalisation(processor: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The processor's rescale and normalisation as (mean, std) for pixels in [0, 1].

    A processor computes `((x * factor - offset) - m) / s` (offset 1 with EfficientNet's
    `rescale_offset`; a second division by s with its `include_top`), which equals
    `(x / 255 - mean) / std` with mean = (offset + m) / (255 factor), std = s / (255 factor).
    """
    factor = float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0
    offset = 1.0 if getattr(processor, "do_rescale", True) and getattr(processor, "rescale_offset", False) else 0.0
    if getattr(processor, "do_normalize", True):
        m = _as_triple(processor.image_mean)
        s = _as_triple(processor.image_std)
    else:
        m, s = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if getattr(processor, "include_top", False):  # EfficientNet divides by the std once more
        s = tuple(a * b for a, b in zip(s, _as_triple(processor.image_std)))  # type: ignore[assignment]
    mean = tuple((offset + mi) / (255.0 * factor) for mi in m)
    std = tuple(si / (255.0 * factor) for si in s)
    return mean, std  # type: ignore[return-value]


def _as_triple(value: Any) -> tuple[float, float, float]:
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3)]
    return (values[0], values[1], values[2])
