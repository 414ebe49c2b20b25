"""The render pipeline: one attack on one image, drawn with the functions eval uses (the style
parsing of the config, open_clip's canvas transform, the mask solver and compositing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from typoattack.attack.render import AttackMask, apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import Placement, RenderStyle, check_fraction
from typoattack.data.fonts import resolve_font
from typoattack.data.sources import load_rgb, resolve_image_path
from typoattack.errors import ConfigError, DataError, OutputError


def run_render(word: str, image: str, fraction: float, placement: Placement, style: RenderStyle, size: int,
               seed: int, output: Path) -> tuple[float, AttackMask]:
    """Draw `word` on the `size` x `size` canvas of `image` and save it as `output`.

    The canvas is made by open_clip's default eval transform (bicubic resize of the shortest
    side, centre crop), as for a model whose input is `size` pixels square.

    Returns:
        (measured pixel cover in [0, 1], the mask drawn).

    Raises:
        ConfigError: The fraction or size is out of range, or the word cannot reach the fraction.
        DataError: The image cannot be read.
    """
    from typoattack.backends.registry import DEFAULT_BACKEND, get_backend

    check_fraction(fraction)
    check_output_image(output)
    if size < 16:
        raise ConfigError(f"--size {size} is too small; use the model's input size, e.g. 224")
    path = resolve_image_path(image)
    try:
        img = load_rgb(path)
    except Exception as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    geometry = get_backend(DEFAULT_BACKEND).get_default_geometry(size)
    canvas = np.asarray(geometry.transform(img), dtype=np.uint8)
    # `--font auto` (and the default font, for a word it cannot draw): the first font that covers the word.
    style = dataclasses.replace(style, font=resolve_font(word, style.font))
    mask = create_attack_mask(word, fraction, placement, style, geometry.size)
    attacked, cover = apply_attack(canvas, mask, path.name, seed)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(attacked).save(output)
    except OSError as e:
        raise OutputError(f"cannot write {output}: {e.strerror or e}") from None
    return cover, mask


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_output_image(output: Path) -> None:
    """Refuse an output that is a folder or names no image format, before any work.

    Raises:
        ConfigError: `output` is a folder or its suffix is not an image format PIL writes.
    """
    if output.is_dir():
        raise ConfigError(f"-o {output} is a folder; give the image file to write, e.g. {output / 'attack.png'}")
    if output.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"-o {output}: unknown image format {output.suffix or '(no suffix)'!r}; use one of "
                          f"{', '.join(IMAGE_SUFFIXES)}")
