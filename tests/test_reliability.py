"""Reliability: odd image files, user mistakes as one line before any model loads, interrupted
runs that resume to identical files, and property-based tests of the renderer."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

import typoattack.backends.open_clip.model
from typoattack.cli import app
from typoattack.config.types import Placement, RenderStyle
from typoattack.errors import RenderError
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _png_with_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height pixels (a decompression bomb for PIL)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _photo(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.BICUBIC)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory) -> Path:
    """A folder of odd image files with a labels CSV: 8 usable, 4 that must be skipped."""
    root = tmp_path_factory.mktemp("odd")
    good = root / "good.jpg"
    _photo().save(good, quality=95)
    (root / "zero.jpg").write_bytes(b"")
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "text.jpg").write_text("this is not an image\n")
    _png_with_header_only(root / "bomb.png", 30000, 30000)
    _photo((1, 1)).save(root / "tiny.png")
    _photo().convert("L").save(root / "gray.png")
    _photo().convert("CMYK").save(root / "cmyk.jpg")
    _photo().convert("RGBA").save(root / "rgba.png")
    _photo().convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette.png")
    Image.fromarray((np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20)).save(root / "sixteen.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    _photo((64, 48)).save(root / "exif.jpg", exif=exif)
    files = ["good.jpg", "zero.jpg", "truncated.jpg", "text.jpg", "bomb.png", "tiny.png", "gray.png", "cmyk.jpg",
             "rgba.png", "palette.png", "sixteen.png", "exif.jpg"]
    pd.DataFrame({"file": files, "class_index": list(range(0, 24, 2))}).to_csv(root / "labels.csv", index=False)
    return root


def _eval_args(data: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["eval", "--data", str(data), "--model", "typoattack-tiny", "--pretrained", "seed:0",
            "--vocab", str(ROOT / "configs/vocab/goh2021.yaml"), "--fraction", "0.07", "--templates", "simple",
            "--device", "cpu", "--workers", "0", "--cache-dir", str(cache_dir), "--out", str(out), *extra]


def test_odd_images_are_used_or_skipped(odd_images, tmp_path, cache_dir) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, _eval_args(odd_images, out, cache_dir))
    assert result.exit_code == 0, result.output
    skipped = pd.read_csv(out / "skipped.csv")
    assert sorted(skipped["image_id"]) == ["bomb.png", "text.jpg", "truncated.jpg", "zero.jpg"]
    reasons = dict(zip(skipped["image_id"], skipped["reason"]))
    assert "DecompressionBomb" in reasons["bomb.png"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    assert all(isinstance(r, str) and r for r in reasons.values())
    info = json.loads((out / "run.json").read_text())
    assert info["n_skipped"] == 4 and info["complete"]
    per_word = pd.read_csv(out / "per_word.csv")
    assert set(per_word["n_images"]) == {8}
    records = pd.read_parquet(out / "records.parquet")
    assert set(records["image_id"]) == {"good.jpg", "tiny.png", "gray.png", "cmyk.jpg", "rgba.png", "palette.png",
                                        "sixteen.png", "exif.jpg"}


def test_every_image_bad_is_a_clear_error(tmp_path, cache_dir) -> None:
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("nope")
    pd.DataFrame({"file": ["a.jpg", "b.jpg"], "class_index": [1, 2]}).to_csv(tmp_path / "labels.csv", index=False)
    result = runner.invoke(app, _eval_args(tmp_path, tmp_path / "out", cache_dir))
    assert result.exit_code == 1
    assert "none of the 2 images could be decoded" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------------------------
# Bad configuration: one line, exit code 1, before any model is loaded


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the configuration was validated")

    monkeypatch.setattr(typoattack.backends.open_clip.model, "create_model", refuse)
    monkeypatch.setattr(typoattack.backends.open_clip.model.open_clip, "create_model_and_transforms", refuse)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_VOCABS = {
    "empty": ("name: x\nwords: []\n", "has no words"),
    "duplicate": ("words:\n  - {text: pizza, target: pizza}\n  - {text: pizza, target: 963}\n", "appears twice"),
    "no-class": ("words:\n  - {text: cash, target: piggy bnak}\n", "Did you mean 'piggy bank'"),
    # U+0378 is unassigned: no font of any machine draws it (a CJK word would find fonts-noto-cjk where it is installed).
    "glyph": ("words:\n  - {text: \"\\u0378\", target: Siamese cat}\n", "no installed font covers"),
}


@pytest.mark.parametrize("case", sorted(BAD_VOCABS))
def test_bad_vocabulary(case, sample_dir, tmp_path, no_model_loading) -> None:
    text, message = BAD_VOCABS[case]
    vocab = _write(tmp_path / "v.yaml", text)
    args = ["eval", "--data", str(sample_dir), "--model", "ViT-B-32", "--pretrained", "seed:0", "--vocab", str(vocab),
            "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


BAD_CONFIGS = {
    "misspelled-key": ("fractons: [0.1]\n", "unknown config key `fractons`. Did you mean 'fractions'"),
    "wrong-type": ("limit: many\n", "`limit` must be an integer"),
    "fraction-range": ("fractions: [0.0]\n", "fraction 0.0 must be in (0, 1)"),
    "unreachable": ("fractions: [0.6]\nplacement: random\n", "the largest reachable fraction is"),
    "font-missing": ("font: /no/such/font.ttf\n", "font file /no/such/font.ttf does not exist"),
    "data-missing": ("data: /no/such/data\n", "data path /no/such/data does not exist"),
    "unknown-model": ("model: ViT-B-33\n", "Did you mean 'ViT-B-32'"),
    "unknown-tag": ("pretrained: opnai\n", "Did you mean 'openai'"),
    "offline-weights": ("pretrained: laion2b_s34b_b79k\n", "not in the local cache"),
    "cuda": ("device: cuda\n", "no CUDA GPU is visible"),
    "not-yaml": ("model: [unclosed\n", "is not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config(case, sample_dir, tmp_path, no_model_loading, monkeypatch) -> None:
    import typoattack.hub

    monkeypatch.setattr(typoattack.hub, "is_hub_reachable", lambda timeout=3.0: False)
    text, message = BAD_CONFIGS[case]
    base = {"model": "ViT-B-32", "pretrained": "seed:0", "data": str(sample_dir), "vocab": "goh2021"}
    lines = [f"{k}: {v}" for k, v in base.items() if not text.startswith(f"{k}:")]
    config = _write(tmp_path / "c.yaml", "\n".join(lines) + "\n" + text)
    result = runner.invoke(app, ["eval", "--config", str(config), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


BAD_LABELS = {
    "missing-file": ("file,class_index\nnope.jpg,3\n", "missing under"),
    "duplicate": ("file,class_index\na.png,3\na.png,4\n", "twice"),
    "out-of-range": ("file,class_index\na.png,1000\n", "is not an integer 0-999"),
    "no-column": ("file,label\na.png,3\n", "lacks column"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_labels_csv(case, tmp_path, no_model_loading) -> None:
    text, message = BAD_LABELS[case]
    _photo().save(tmp_path / "a.png")
    _write(tmp_path / "labels.csv", text)
    result = runner.invoke(app, ["eval", "--data", str(tmp_path), "--model", "ViT-B-32", "--pretrained", "seed:0",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and message in result.output, result.output


def test_hf_dataset_without_label_column(tmp_path, no_model_loading) -> None:
    import datasets

    ds = datasets.Dataset.from_dict({"image": [_photo()], "target": [3]},
                                    features=datasets.Features({"image": datasets.Image(), "target": datasets.Value("int64")}))
    ds.save_to_disk(str(tmp_path / "ds"))
    result = runner.invoke(app, ["eval", "--data", f"hf:{tmp_path / 'ds'}", "--model", "ViT-B-32", "--pretrained",
                                 "seed:0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "has no label column 'label'" in result.output, result.output


def test_output_folder_with_another_run_is_refused(sample_dir, tmp_path, cache_dir) -> None:
    args = _eval_args(sample_dir, tmp_path / "run", cache_dir, "--limit", "4")
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--seed", "5"])
    assert result.exit_code == 1 and "holds a different run" in result.output
    result = runner.invoke(app, [*args, "--seed", "5", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["seed"] == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = runner.invoke(app, _eval_args(sample_dir, tmp_path / "other", cache_dir, "--limit", "4"))
    assert result.exit_code == 1 and "is not empty" in result.output


# --------------------------------------------------------------------------------------------
# Interruption


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from typoattack.cli import app; app()", *args]


def test_kill_9_then_resume_gives_identical_results(sample_dir, tmp_path, cache_dir) -> None:
    common = ["--limit", "60", "--chunk-size", "5", "--batch-size", "32", "--placement", "paper8",
              "--placement", "random"]
    # The reference run, uninterrupted.
    ref = tmp_path / "ref"
    done = subprocess.run(_cli(_eval_args(sample_dir, ref, cache_dir, *common)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(_eval_args(sample_dir, out, cache_dir, *common)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "records.parquet").rglob("*.parquet"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    chunks_at_kill = len(list((out / "records.parquet").rglob("*.parquet")))
    assert 3 <= chunks_at_kill < 12, "the run must be killed part-way"
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] is False
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 1 and "incomplete" in result.output

    resumed = subprocess.run(_cli(_eval_args(sample_dir, out, cache_dir, *common)), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    info = json.loads((out / "run.json").read_text())
    assert info["complete"] and info["models"][0]["images_encoded_this_session"] <= (60 - 5 * chunks_at_kill) * 19
    pd.testing.assert_frame_equal(pd.read_parquet(out / "records.parquet"), pd.read_parquet(ref / "records.parquet"))
    for name in ("per_word.csv", "confusion.csv", "per_word.md"):
        assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_sigterm_loses_at_most_the_chunk_in_flight(sample_dir, tmp_path, cache_dir) -> None:
    out = tmp_path / "term"
    args = _eval_args(sample_dir, out, cache_dir, "--limit", "60", "--chunk-size", "5")
    proc = subprocess.Popen(_cli(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "records.parquet").rglob("*.parquet"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # Every chunk file present is complete and readable; no temporary file is taken for a chunk.
    for path in (out / "records.parquet").rglob("*.parquet"):
        assert len(pd.read_parquet(path)) == 5 * 10
    resumed = subprocess.run(_cli(args), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(pd.read_parquet(out / "records.parquet")) == 60 * 10


# --------------------------------------------------------------------------------------------
# Property-based: any word and fraction renders within tolerance or is a clear error

CANVAS = np.asarray(_photo((224, 224), seed=3), dtype=np.uint8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(word=st.text(min_size=1, max_size=20), fraction=st.floats(0.005, 0.5),
       placement=st.sampled_from(list(Placement)))
def test_renderer_never_fails_unexpectedly(word, fraction, placement) -> None:
    try:
        mask = create_attack_mask(word, fraction, placement, RenderStyle(), (224, 224))
    except RenderError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert abs(mask.coverage - fraction) <= 0.04 * fraction
    attacked, cover = apply_attack(CANVAS, mask, "img", 0)
    assert attacked.shape == CANVAS.shape and 0 < cover <= mask.coverage + 1e-12


def test_interrupted_canvas_fill_leaves_no_temporary_file(sample_dir, tmp_path, monkeypatch) -> None:
    from torchvision import transforms as T

    from typoattack.config.types import DataSpec
    from typoattack.data.canvases import get_canvas_cache_key, prepare_canvases
    from typoattack.data.sources import open_image_source

    source = open_image_source(DataSpec(str(sample_dir)))
    transform = T.Compose([T.Resize(32), T.CenterCrop(32)])
    key = get_canvas_cache_key(source, range(10), "t32", (32, 32))
    folder = tmp_path / "canvases"
    folder.mkdir()
    orphan = folder / f".{key}.npy.999999999.tmp"  # left by a process that was killed
    orphan.write_bytes(b"half written")
    calls = []

    def interrupted(index):
        calls.append(index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return Image.new("RGB", (40, 40))

    monkeypatch.setattr(source, "open_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_canvases(source, range(10), transform, "t32", (32, 32), tmp_path)
    assert list(folder.iterdir()) == []


def test_ctrl_c_says_how_to_resume(sample_dir, tmp_path, cache_dir) -> None:
    out = tmp_path / "int"
    # 100 chunks: seconds of work left after the first one, so the signal lands mid-run.
    # A shell that starts the test suite in the background ignores SIGINT in its children, and Python
    # keeps an inherited SIG_IGN: give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(_cli(_eval_args(sample_dir, out, cache_dir, "--limit", "500", "--chunk-size", "5")),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "records.parquet").rglob("*.parquet"))) < 1:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
