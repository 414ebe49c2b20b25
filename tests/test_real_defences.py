"""`typoattack real --defence`: the undefended rows equal a run without --defence, head ablation
and template defences against open_clip computed directly, the tables per defence against a plain
recomputation, SCAM pairs within a defence, YAML defences relative to the file, and a defence that
does not fit the model as one red line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from real_datasets_builders import make_named_folder, make_scam
from typoattack.tasks.real.tables import build_real_leaderboard, build_summary
from typoattack.cli import app
from typoattack.config.parsing import load_templates
from typoattack.tasks.real.config import load_real_config
from typoattack.data.sources import load_rgb
from typoattack.backends.open_clip.heads import ablate_heads
from typoattack.backends.open_clip.model import TINY_MODEL

runner = CliRunner()
DEFENCES = ["none", "heads:0.0", "templates:simple"]


def _args(dataset: str, data: str, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["real", "--dataset", dataset, "--data", data, "--model", TINY_MODEL, "--pretrained", "seed:0",
            "--device", "cpu", "--workers", "1", "--cache-dir", str(cache_dir), "--out", str(out), *extra]


@pytest.fixture(scope="module")
def rta(tmp_path_factory, cache_dir) -> dict[str, Path]:
    """An RTA-100-style folder run with the three defences and without --defence."""
    root = tmp_path_factory.mktemp("real-defences")
    data = make_named_folder(root / "rta100")
    flags = [a for d in DEFENCES for a in ("--defence", d)]
    for name, extra in (("defended", flags), ("plain", [])):
        result = runner.invoke(app, _args("rta100", str(data), root / name, cache_dir, *extra))
        assert result.exit_code == 0, result.output
    return {"data": data, "defended": root / "defended", "plain": root / "plain"}


def test_none_rows_equal_a_run_without_defence(rta) -> None:
    defended = pd.read_parquet(rta["defended"] / "records.parquet")
    plain = pd.read_parquet(rta["plain"] / "records.parquet")
    assert list(defended.columns) == list(plain.columns)
    assert list(plain.columns[:5]) == ["image_id", "photo_id", "model", "pretrained", "defence"]
    assert set(plain["defence"]) == {"none"}
    assert defended["defence"].value_counts().to_dict() == {d: len(plain) for d in DEFENCES}
    # Image by image, then defence by defence in the order given.
    assert list(defended["defence"][:3]) == DEFENCES
    none = defended[defended["defence"] == "none"].sort_values("image_id").reset_index(drop=True)
    plain = plain.sort_values("image_id").reset_index(drop=True)
    for column in plain.columns:
        pd.testing.assert_series_equal(none[column], plain[column], check_exact=True)
    info = json.loads((rta["defended"] / "run.json").read_text())
    assert info["config"]["defences"] == DEFENCES and info["models"][0]["defences"] == DEFENCES


def _hand_p_object(tiny_model, data: Path, records: pd.DataFrame, templates: tuple[str, ...],
                   heads: list[tuple[int, int]]) -> np.ndarray:
    """p_object of each record (union protocol) from open_clip's own preprocessing and classifier."""
    vocabulary = sorted(set(records["object_label"]) | set(records["attack_word"]))
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    model = tiny_model.model
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(model, tiny_model.tokenizer, vocabulary, templates,
                                                          device="cpu")
        x = torch.stack([preprocess(load_rgb(data / image_id)) for image_id in records["image_id"]])
        with ablate_heads(model, heads):
            features = model.encode_image(x)
        probs = (100 * torch.nn.functional.normalize(features, dim=-1) @ classifier).softmax(dim=1)
    obj = torch.tensor([vocabulary.index(v) for v in records["object_label"]])
    return probs[torch.arange(len(records)), obj].numpy()


def test_heads_and_templates_rows_match_open_clip_computed_directly(rta, tiny_model) -> None:
    records = pd.read_parquet(rta["defended"] / "records.parquet")
    heads = records[records["defence"] == "heads:0.0"].reset_index(drop=True)
    none = records[records["defence"] == "none"].reset_index(drop=True)
    expected = _hand_p_object(tiny_model, rta["data"], heads, ("a photo of a {}.",), [(0, 0)])
    np.testing.assert_allclose(heads["p_object"], expected, atol=1e-4)
    assert np.abs(heads["p_object"].to_numpy() - none["p_object"].to_numpy()).max() > 1e-3  # the ablation acts
    simple = records[records["defence"] == "templates:simple"].reset_index(drop=True)
    expected = _hand_p_object(tiny_model, rta["data"], simple, load_templates("simple"), [])
    np.testing.assert_allclose(simple["p_object"], expected, atol=1e-4)


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def test_summary_has_one_row_per_defence_equal_to_a_plain_recomputation(rta) -> None:
    records = pd.read_parquet(rta["defended"] / "records.parquet")
    summary = pd.read_csv(rta["defended"] / "summary.csv")
    assert list(summary["defence"]) == DEFENCES
    for row in summary.to_dict("records"):
        rows = [r for r in records.to_dict("records") if r["defence"] == row["defence"]]
        n = len(rows)
        k_obj = sum(r["pred_label"] == r["object_label"] for r in rows)
        k_atk = sum(r["pred_label"] == r["attack_word"] for r in rows)
        assert row["n_images"] == n
        assert row["object_acc"] == pytest.approx(k_obj / n, abs=2e-6)
        assert row["attack_rate"] == pytest.approx(k_atk / n, abs=2e-6)
        assert (row["object_acc_ci_low"], row["object_acc_ci_high"]) == pytest.approx(_wilson(k_obj, n), abs=1e-6)
        assert (row["attack_rate_ci_low"], row["attack_rate_ci_high"]) == pytest.approx(_wilson(k_atk, n), abs=1e-6)
    per_word = pd.read_csv(rta["defended"] / "per_attack_word.csv")
    assert set(per_word["defence"]) == set(DEFENCES)
    for row in per_word.to_dict("records"):
        sel = records[(records["defence"] == row["defence"]) & (records["attack_word"] == row["attack_word"])]
        assert row["n_images"] == len(sel)
        assert row["object_acc"] == pytest.approx((sel["pred_label"] == sel["object_label"]).mean(), abs=2e-6)
    board = build_real_leaderboard(summary)
    assert sorted(board["defence"]) == sorted(DEFENCES)
    assert list(board["object_acc"]) == sorted(board["object_acc"], reverse=True)


def test_scam_pairs_within_each_defence(tmp_path, cache_dir) -> None:
    data = make_scam(tmp_path / "scam")
    out = tmp_path / "out"
    result = runner.invoke(app, _args("scam", f"hf:{data}", out, cache_dir, "--protocol", "binary",
                                      "--defence", "none", "--defence", "heads:1.1"))
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    assert len(summary) == 2 * 3
    for row in summary[summary["variant"] != "NoSCAM"].to_dict("records"):
        mine = records[records["defence"] == row["defence"]]
        clean = mine[mine["variant"] == "NoSCAM"].set_index("photo_id")
        attacked = mine[(mine["variant"] == row["variant"]) & mine["photo_id"].isin(clean.index)]
        clean_ok = [clean.loc[p, "pred_label"] == clean.loc[p, "object_label"] for p in attacked["photo_id"]]
        ok = list(attacked["pred_label"] == attacked["object_label"])
        assert row["n_pairs"] == len(ok)
        assert row["paired_drop"] == pytest.approx(np.mean(clean_ok) - np.mean(ok), abs=2e-6)
    # Photo 3 has no SCAM row and photo 4 no NoSCAM row (as in test_real), under each defence alike.
    assert summary.groupby("defence")["n_pairs"].sum().to_dict() == {"heads:1.1": 7, "none": 7}


def test_yaml_defences_are_relative_to_the_file_and_in_the_fingerprint(tmp_path) -> None:
    data = make_named_folder(tmp_path / "rta100")
    (tmp_path / "heads.yaml").write_text("heads: ['1.0']\n")
    (tmp_path / "real.yaml").write_text(
        f"dataset: rta100\ndata: {data}\nmodel: {TINY_MODEL}\ndefences: [none, 'heads:@heads.yaml']\n")
    cfg = load_real_config(tmp_path / "real.yaml")
    assert cfg.defences[0] == "none" and cfg.defences[1].startswith("heads:")
    plain = load_real_config(tmp_path / "real.yaml", {"defences": ["none"]})
    assert plain.defences == ("none",) and plain.fingerprint() != cfg.fingerprint()
    assert load_real_config(None, {"dataset": "rta100", "data": str(data), "model": TINY_MODEL}).defences == ("none",)


def test_defence_that_does_not_fit_is_one_red_line(tmp_path, cache_dir) -> None:
    data = make_named_folder(tmp_path / "rta100")
    result = runner.invoke(app, _args("rta100", str(data), tmp_path / "o1", cache_dir, "--defence", "heads:7.0"))
    assert result.exit_code == 1, result.output
    assert "7.0 does not exist" in result.output and "Traceback" not in result.output
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "typoattack-test-rn.json").write_text(json.dumps({
        "embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(tmp_path / "configs")
    args = _args("rta100", str(data), tmp_path / "o2", cache_dir, "--defence", "none", "--defence", "heads:0.0")
    args[args.index(TINY_MODEL)] = "typoattack-test-rn"
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "ModifiedResNet" in result.output and "Traceback" not in result.output
    assert not list((tmp_path / "o2" / "records.parquet").rglob("*.parquet"))  # no cell committed


def test_records_without_a_defence_column_read_as_none(rta) -> None:
    """Records of real runs written before the defence column: the tables treat them as `none`."""
    plain = pd.read_parquet(rta["plain"] / "records.parquet")
    old = build_summary(plain.drop(columns=["defence"]))
    pd.testing.assert_frame_equal(old, build_summary(plain))
    assert list(old["defence"]) == ["none"]


def test_each_batch_is_encoded_once_per_image_side_variant(rta, tmp_path, cache_dir, monkeypatch) -> None:
    """none and templates:simple share one encoder pass (their classifiers on the same features),
    heads:0.0 has its own."""
    import typoattack.backends.base as base

    calls: list[tuple[int, bool]] = []
    encode = base.encode_features

    def counting(model, x):
        ablated = any(isinstance(b.attn, torch.nn.Module) and type(b.attn).__name__ == "HeadAblatedAttention"
                      for b in model.model.visual.transformer.resblocks)
        calls.append((len(x), ablated))
        return encode(model, x)

    monkeypatch.setattr(base, "encode_features", counting)
    flags = [a for d in DEFENCES for a in ("--defence", d)]
    result = runner.invoke(app, _args("rta100", str(rta["data"]), tmp_path / "o", cache_dir, *flags,
                                      "--batch-size", "4"))
    assert result.exit_code == 0, result.output
    plain = pd.read_parquet(rta["plain"] / "records.parquet")
    n_images, n_labels = len(plain), len(set(plain["object_label"]) | set(plain["attack_word"]))
    assert n_images == 9  # two batches of 4 and one of 1
    assert n_labels > 2
    assert sorted(calls) == sorted([(4, False), (4, True)] * 2 + [(1, False), (1, True)])
    assert sum(b for b, _ in calls) == 2 * n_images
