"""Tests of the mask cache and the batch solver (typoattack.attack.masks)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time

import numpy as np
import pytest

from typoattack.attack import masks as masks_module
from typoattack.config.types import Placement, RenderStyle
from typoattack.constants import DEFAULT_FONT
from typoattack.errors import RenderError
from typoattack.attack.masks import (
    MaskPool, MaskRequest, create_attack_masks, decode_mask, get_mask_key, load_mask, start_attack_masks,
)
from typoattack.attack.solver import create_attack_mask

SIZE = (224, 224)
STYLE = RenderStyle()


def _requests(words=("pizza", "iPod", "rifle"), style: RenderStyle = STYLE) -> list[MaskRequest]:
    return [MaskRequest(w, f, p, style, SIZE) for w in words for f in (0.04, 0.1) for p in (Placement.PAPER8, Placement.RANDOM)]


def _same(a, b) -> None:
    assert (a.word, a.fraction, a.placement, a.canvas_size, a.copies, a.phases) == \
           (b.word, b.fraction, b.placement, b.canvas_size, b.copies, b.phases)
    assert a.font_size == b.font_size and a.coverage == b.coverage
    assert (a.layers.y0, a.layers.x0) == (b.layers.y0, b.layers.x0)
    np.testing.assert_array_equal(a.layers.outline_alpha, b.layers.outline_alpha)
    np.testing.assert_array_equal(a.layers.fill_alpha, b.layers.fill_alpha)


def test_cached_masks_equal_solved_ones_and_a_rerun_solves_nothing(tmp_path, monkeypatch) -> None:
    requests = _requests()
    first = create_attack_masks(requests, tmp_path)
    assert len(list((tmp_path / "masks").glob("*.npz"))) == len(requests)
    for request, mask in zip(requests, first):
        _same(mask, create_attack_mask(request.word, request.fraction, request.placement, request.style, SIZE))

    def no_solving(request):
        raise AssertionError(f"solved {request} again")

    monkeypatch.setattr(masks_module, "_solve", no_solving)
    done = []
    again = create_attack_masks(requests, tmp_path, advance=done.append)
    assert sum(done) == len(requests)
    for a, b in zip(first, again):
        _same(a, b)


def test_cache_ignores_colours_but_draws_in_the_requested_style(tmp_path) -> None:
    red = RenderStyle(fill=(255, 0, 0), outline=(0, 0, 255), opacity=0.5)
    white, = create_attack_masks(_requests(("pizza",))[:1], tmp_path)
    redm, = create_attack_masks(_requests(("pizza",), red)[:1], tmp_path)
    assert len(list((tmp_path / "masks").glob("*.npz"))) == 1
    assert redm.style == red and white.style == STYLE
    np.testing.assert_array_equal(redm.layers.outline_alpha, white.layers.outline_alpha)


def test_key_follows_font_content_not_its_path(tmp_path) -> None:
    copy = tmp_path / "copy.ttf"
    shutil.copy(DEFAULT_FONT, copy)
    other = DEFAULT_FONT.with_name("DejaVuSans.ttf")
    base = MaskRequest("pizza", 0.07, Placement.PAPER8, STYLE, SIZE)
    assert get_mask_key(base) == get_mask_key(MaskRequest("pizza", 0.07, Placement.PAPER8, RenderStyle(font=str(copy)), SIZE))
    assert get_mask_key(base) != get_mask_key(MaskRequest("pizza", 0.07, Placement.PAPER8, RenderStyle(font=str(other)), SIZE))
    for changed in (MaskRequest("pizzas", 0.07, Placement.PAPER8, STYLE, SIZE),
                    MaskRequest("pizza", 0.071, Placement.PAPER8, STYLE, SIZE),
                    MaskRequest("pizza", 0.07, Placement.CENTER, STYLE, SIZE),
                    MaskRequest("pizza", 0.07, Placement.PAPER8, RenderStyle(outline_width=2), SIZE),
                    MaskRequest("pizza", 0.07, Placement.PAPER8, STYLE, (288, 288))):
        assert get_mask_key(changed) != get_mask_key(base)


def test_unreadable_or_half_written_files_are_solved_again(tmp_path) -> None:
    request, = _requests(("radio",))[:1]
    path = tmp_path / "masks" / f"{get_mask_key(request)}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a mask")  # a file cut short by a kill
    (path.parent / f".{path.name}.123.tmp").write_bytes(b"half")  # a write that never got renamed
    assert load_mask(path, STYLE) is None
    mask, = create_attack_masks([request], tmp_path)
    _same(mask, load_mask(path, STYLE))


def test_worker_processes_give_the_same_masks(tmp_path) -> None:
    words = [f"word{i}" for i in range(10)]
    requests = [MaskRequest(w, 0.07, p, STYLE, SIZE) for w in words for p in (Placement.PAPER8, Placement.RANDOM)]
    assert len(requests) >= masks_module._PARALLEL_MIN
    parallel = create_attack_masks(requests, None, workers=2)
    for request, mask in zip(requests, parallel):
        _same(mask, create_attack_mask(request.word, request.fraction, request.placement, request.style, SIZE))


_SOLVED_DIR = "TYPOATTACK_TEST_SOLVED_DIR"


def _solve_and_mark(request: MaskRequest):
    """masks._solve that leaves a file for each mask it solves (in a worker: fork inherits the patch)."""
    out = _ORIGINAL_SOLVE(request)
    marks = os.environ[_SOLVED_DIR]
    with open(os.path.join(marks, f"{os.getpid()}-{request.word}-{request.placement.value}"), "w"):
        pass
    return out


_ORIGINAL_SOLVE = masks_module._solve


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="workers inherit the patch by fork")
def test_a_pool_solves_ahead_of_the_reader_and_serves_later_calls(tmp_path, monkeypatch) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv(_SOLVED_DIR, str(marks))
    monkeypatch.setattr(masks_module, "_solve", _solve_and_mark)
    requests = [MaskRequest(f"word{i}", 0.07, p, STYLE, SIZE) for i in range(10) for p in (Placement.PAPER8, Placement.RANDOM)]
    assert len(requests) >= masks_module._PARALLEL_MIN
    with MaskPool(2) as pool:
        entries = start_attack_masks(requests, tmp_path, pool)
        # Nothing read yet, and the workers solve every mask.
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < len(requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        solved = list(marks.iterdir())
        assert len(solved) == len(requests)
        assert {f.name.split("-")[0] for f in solved} != {str(os.getpid())}, "solved in the caller's process"
        assert list((tmp_path / "masks").glob("*.npz")) == []  # cached as they are read
        executor = pool._pool
        for request, (data, info) in zip(requests, entries, strict=True):
            _same(decode_mask(data, request.style),
                  create_attack_mask(request.word, request.fraction, request.placement, request.style, SIZE))
            assert info.font_size == decode_mask(data, request.style).font_size
        assert len(list((tmp_path / "masks").glob("*.npz"))) == len(requests)
        # A later call with missing masks runs on the same workers.
        more = [MaskRequest(f"more{i}", 0.05, Placement.PAPER8, STYLE, SIZE) for i in range(masks_module._PARALLEL_MIN)]
        create_attack_masks(more, tmp_path, pool)
        assert pool._pool is executor
    assert pool._pool is None


def test_render_errors_pass_through(tmp_path) -> None:
    with pytest.raises(RenderError, match="largest reachable fraction"):
        create_attack_masks([MaskRequest("a very long attack word here", 0.9, Placement.RANDOM, STYLE, SIZE)], tmp_path)
    assert list((tmp_path / "masks").glob("*.npz")) == []


# --------------------------------------------------------------------------- compact masks (issue 26)

# A short word's mask file at 224 px holds a few KB (uint8 alpha cropped to the text, compressed);
# float32 layers of the whole box were about 330 KB.
MAX_FILE_BYTES = 40_000


@pytest.fixture(scope="module")
def canvas(sample_dir) -> np.ndarray:
    """One sample image as a uint8 [224, 224, 3] canvas."""
    from PIL import Image

    with Image.open(next(sample_dir.glob("*.JPEG"))) as im:
        return np.asarray(im.convert("RGB").resize(SIZE), dtype=np.uint8)


@pytest.mark.parametrize("placement", list(Placement))
def test_mask_file_is_small_and_loads_back_drawing_the_same_pixels(tmp_path, monkeypatch, canvas, placement) -> None:
    from typoattack.attack.render import apply_attack

    request = MaskRequest("pizza", 0.1, placement, STYLE, SIZE)
    solved = create_attack_mask(request.word, request.fraction, request.placement, request.style, SIZE)
    create_attack_masks([request], tmp_path)
    path = tmp_path / "masks" / f"{get_mask_key(request)}.npz"
    assert path.stat().st_size < MAX_FILE_BYTES
    with np.load(path) as data:
        assert data["outline_alpha"].dtype == data["fill_alpha"].dtype == np.uint8
        assert data["outline_alpha"].shape == solved.layers.shape  # cropped to the text's box
    monkeypatch.setattr(masks_module, "_solve", lambda request: pytest.fail("solved again"))
    cached, = create_attack_masks([request], tmp_path)
    _same(cached, solved)
    assert cached.layers.outline_alpha.dtype == np.float32
    for image_id in ("a", "b"):
        attacked, cover = apply_attack(canvas, cached, image_id, seed=1)
        expected, expected_cover = apply_attack(canvas, solved, image_id, seed=1)
        assert np.array_equal(attacked, expected) and cover == expected_cover


def test_alpha_that_uint8_cannot_hold_is_stored_exactly(tmp_path) -> None:
    from dataclasses import replace

    from typoattack.attack.render import TextLayers

    solved = create_attack_mask("pizza", 0.07, Placement.CENTER, STYLE, SIZE)
    odd = solved.layers.outline_alpha * np.float32(0.999)  # not k / 255: uint8 would round it
    layers = TextLayers(solved.layers.y0, solved.layers.x0, odd, np.minimum(solved.layers.fill_alpha, odd))
    mask = replace(solved, layers=layers)
    path = tmp_path / "odd.npz"
    masks_module.save_mask(mask, path)
    _same(load_mask(path, STYLE), mask)


def test_mask_set_holds_infos_and_a_few_kb_per_mask(tmp_path) -> None:
    requests = _requests()
    masks = create_attack_masks(requests, tmp_path)
    assert isinstance(masks, masks_module.MaskSet) and len(masks) == len(requests)
    assert masks.nbytes < MAX_FILE_BYTES * len(requests)
    for request, info, mask in zip(requests, masks.infos, masks):
        assert info == masks_module.MaskInfo.of(mask)
        assert (info.word, info.fraction, info.placement, info.canvas_size) == \
               (request.word, request.fraction, request.placement, request.canvas_size)
    _same(masks[-1], masks[len(masks) - 1])
    assert [m.word for m in masks[1:3]] == [r.word for r in requests[1:3]]
    with pytest.raises(IndexError):
        masks[len(masks)]
