"""End to end: the CI reproduction against results/ci/, resume, and batch-size independence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from typoattack.tasks.synthetic.config import load_synthetic_config
from typoattack.analysis.metrics import PER_WORD_COLUMNS
from typoattack.records import STYLE_COLUMNS
from runs import run_eval

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "ci"
# Untrained weights give some near-tie logits; another CPU's float kernels may break a tie the
# other way. At most this many of the 18,500 predictions may differ from the reference.
MAX_DIFFERING_PREDICTIONS = 10
RATE_COLUMNS = ["clean_top1", "attacked_top1", "asr", "changed_to", "already_target", "changed_away", "neither"]


@pytest.mark.slow
def test_ci_reproduction_matches_reference(tmp_path, cache_dir) -> None:
    cfg = load_synthetic_config(ROOT / "configs" / "ci.yaml", {"out": str(tmp_path / "ci"), "cache_dir": str(cache_dir)})
    result = run_eval(cfg)
    assert result.info.complete and result.info.n_records == 500 * (1 + 9 * 2 * 2)

    ours = pd.read_csv(tmp_path / "ci" / "per_word.csv", keep_default_na=False, na_values=[""])
    ref = pd.read_csv(REFERENCE / "per_word.csv", keep_default_na=False, na_values=[""])
    assert list(ours.columns) == list(ref.columns) == PER_WORD_COLUMNS + STYLE_COLUMNS
    keys = ["model", "pretrained", "word", "fraction", "placement", *STYLE_COLUMNS]
    assert ours[keys].equals(ref[keys])
    assert (ours["n_images"] == ref["n_images"]).all()
    # Rendering is deterministic: pixel cover must match to the CSV's 6 decimals.
    assert np.allclose(ours["pixel_cover_mean"], ref["pixel_cover_mean"], atol=2e-6, rtol=0)
    for col in RATE_COLUMNS:
        assert (np.abs(ours[col] - ref[col]) * ours["n_images"]).max() <= MAX_DIFFERING_PREDICTIONS + 1e-9, col

    conf_keys = ["model", "pretrained", "word", "fraction", "placement", *STYLE_COLUMNS, "true_index", "pred_index"]
    c_ours = pd.read_csv(tmp_path / "ci" / "confusion.csv", keep_default_na=False).set_index(conf_keys)["count"]
    c_ref = pd.read_csv(REFERENCE / "confusion.csv", keep_default_na=False).set_index(conf_keys)["count"]
    l1 = c_ours.sub(c_ref, fill_value=0).abs().sum()
    assert l1 <= 2 * MAX_DIFFERING_PREDICTIONS
    assert c_ours.sum() == c_ref.sum() == 18500


def _small_cfg(tmp_path: Path, sample_dir: Path, cache_dir: Path, name: str, **overrides):
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("name: three\nwords:\n  - {text: pizza, target: pizza}\n  - {text: $$$, target: piggy bank}\n"
                     "  - {text: meow, target: Siamese cat}\n")
    settings = {"data": str(sample_dir), "model": "typoattack-tiny", "pretrained": "seed:0", "vocab": str(vocab),
                "limit": 30, "fractions": [0.05], "placement": ["paper8", "random"], "templates": "simple",
                "device": "cpu", "workers": 0, "cache_dir": str(cache_dir), "out": str(tmp_path / name),
                "chunk_size": 10, **overrides}
    return load_synthetic_config(None, settings)


def _records(result) -> pd.DataFrame:
    """A run's records, as a user reads them."""
    return pd.read_parquet(Path(result.out_dir) / "records.parquet")


def test_resume_gives_the_same_files(tmp_path, sample_dir, cache_dir) -> None:
    full = run_eval(_small_cfg(tmp_path, sample_dir, cache_dir, "full"))
    cfg = _small_cfg(tmp_path, sample_dir, cache_dir, "resumed")
    run_eval(cfg)
    out = Path(cfg.out)
    # Simulate an interruption after the first chunk: later chunks and the final files are gone.
    chunks = sorted((out / "records.parquet").rglob("*.parquet"))
    assert len(chunks) == 3
    for path in chunks[1:]:
        path.unlink()
    for name in ("per_word.csv", "confusion.csv", "confusion.parquet"):
        (out / name).unlink()
    info = json.loads((out / "run.json").read_text())
    info["complete"] = False
    (out / "run.json").write_text(json.dumps(info))

    resumed = run_eval(cfg)
    assert resumed.info.models[0]["images_encoded_this_session"] == 20 * (1 + 3 * 2)
    pd.testing.assert_frame_equal(_records(resumed), _records(full))
    for name in ("per_word.csv", "confusion.csv"):
        assert (out / name).read_text() == (Path(full.out_dir) / name).read_text()


def test_records_do_not_depend_on_batch_size(tmp_path, sample_dir, cache_dir) -> None:
    a = _records(run_eval(_small_cfg(tmp_path, sample_dir, cache_dir, "b5", batch_size=5, chunk_size=7)))
    b = _records(run_eval(_small_cfg(tmp_path, sample_dir, cache_dir, "b256", batch_size=256)))
    exact = ["image_id", "true_index", "word", "target_index", "fraction", "placement", "pixel_cover", "pred_index"]
    pd.testing.assert_frame_equal(a[exact], b[exact])
    assert np.allclose(a["p_true"], b["p_true"], rtol=1e-4, atol=1e-7)
    assert set(a["word"]) == {"", "pizza", "$$$", "meow"}
    clean = a[a["word"] == ""]
    assert len(clean) == 30 and clean["pixel_cover"].eq(0).all() and clean["target_index"].eq(-1).all()
    attacked = a[a["word"] != ""]
    assert attacked["pixel_cover"].between(0.045, 0.055).mean() > 0.9


def test_sweep_over_fonts_and_colours(tmp_path, sample_dir, cache_dir) -> None:
    cfg = _small_cfg(tmp_path, sample_dir, cache_dir, "sweep", limit=6, fractions=[0.04, 0.1],
                     font=["DejaVuSans-Bold.ttf", "DejaVuSans.ttf"], fill=["white", [255, 0, 0]],
                     outline="black", placement=["paper8"])
    assert len(cfg.styles) == 4
    result = run_eval(cfg)
    records, per_word = _records(result), result.summary
    attacked = records[records["word"] != ""]
    assert len(attacked) == 6 * 3 * 2 * 4
    assert set(attacked["font"]) == {"DejaVuSans-Bold.ttf", "DejaVuSans.ttf"}
    assert set(attacked["fill"]) == {"#ffffff", "#ff0000"} and set(attacked["outline"]) == {"#000000"}
    assert len(per_word) == 3 * 2 * 4
    assert list(per_word.columns) == PER_WORD_COLUMNS + ["font", "fill", "outline", "outline_width", "opacity"]
    assert per_word.groupby(["font", "fill"]).size().eq(6).all()
    # Red text really is red on the canvases: the attacked predictions differ between colours somewhere
    # or at least the measured covers do (white text on white pixels changes nothing).
    covers = attacked.groupby("fill")["pixel_cover"].mean()
    assert covers["#ff0000"] != covers["#ffffff"]


def test_out_of_memory_halves_the_encoder_batch(monkeypatch, tiny_model) -> None:
    import torch

    import typoattack.backends.base
    from typoattack.defences.apply import BatchEncoder
    from typoattack.progress import NullProgress

    real = typoattack.backends.base.encode_features
    sizes: list[int] = []

    def limited(model, x):
        sizes.append(len(x))
        if len(x) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return real(model, x)

    monkeypatch.setattr(typoattack.backends.base, "encode_features", limited)
    classifier = torch.nn.functional.normalize(torch.randn(64, 10, generator=torch.Generator().manual_seed(0)), dim=0)
    x = torch.randint(0, 256, (20, 224, 224, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    encoder = BatchEncoder(tiny_model, classifier, 32, NullProgress())
    logits = encoder(x)
    assert encoder.max_batch == 8 and sizes[:3] == [20, 16, 8]
    assert torch.allclose(logits, typoattack.backends.base.get_logits(tiny_model, real(tiny_model, x), classifier), atol=1e-4)


def test_several_models_in_one_config_run_in_turn(tmp_path, sample_dir, cache_dir) -> None:
    vocab = tmp_path / "vocab.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n")
    config = tmp_path / "two.yaml"
    config.write_text(
        f"models:\n  - {{name: typoattack-tiny, pretrained: 'seed:0'}}\n  - {{name: typoattack-tiny, pretrained: 'seed:1'}}\n"
        f"data: {sample_dir}\nvocab: {vocab}\nlimit: 5\ntemplates: simple\ndevice: cpu\nworkers: 0\n"
        f"cache_dir: {cache_dir}\nout: {tmp_path / 'out'}\n")
    result = run_eval(load_synthetic_config(config))
    assert [m["pretrained"] for m in result.info.models] == ["seed:0", "seed:1"]
    assert _records(result).groupby("pretrained").size().to_dict() == {"seed:0": 10, "seed:1": 10}
    assert set(result.summary["pretrained"]) == {"seed:0", "seed:1"}
    # Both models share one canvas cache (same transform): decoded once.
    assert result.info.models[0]["canvas_cache"] == result.info.models[1]["canvas_cache"]
    meta = json.loads(Path(result.info.models[0]["canvas_cache"]).with_suffix(".json").read_text())
    assert len(meta["labels"]) == len(meta["image_ids"]) == 5


def test_edited_vocabulary_is_not_resumed_into_old_chunks(tmp_path, sample_dir, cache_dir) -> None:
    from typoattack.errors import OutputError

    cfg = _small_cfg(tmp_path, sample_dir, cache_dir, "edited", limit=4)
    run_eval(cfg)
    Path(cfg.vocab).write_text("words:\n  - {text: pizza, target: 964}\n")  # same file, new target
    with pytest.raises(OutputError, match="holds a different run"):
        run_eval(cfg)
