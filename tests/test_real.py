"""`typoattack real` end to end with the tiny model: every format under both protocols, the
summary against a plain recomputation from the records, scores against open_clip computed
directly, SCAM pairing by id, resume, CLI errors and the report."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from real_datasets_builders import make_csv_folder, make_disentangle, make_named_folder, make_scam
from typoattack.tasks.real.tables import build_paired_drop, build_summary
from typoattack.cli import app
from typoattack.tasks.real.config import load_real_config
from typoattack.data.real_datasets import open_real_dataset
from typoattack.config.types import RealDataset
from typoattack.data.sources import load_rgb
from typoattack.backends.open_clip.model import TINY_MODEL
from runs import run_real

runner = CliRunner()
FORMATS = ["rta100", "paint", "disentangle", "folder", "scam"]
PROTOCOLS = ["union", "binary"]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory) -> dict[str, str]:
    """`--data` of a small dataset in each format."""
    root = tmp_path_factory.mktemp("real-data")
    make_named_folder(root / "rta100")
    make_named_folder(root / "paint", sub="typographic_real_data_from_PAINT/typographic_attacks", numbered=True)
    make_disentangle(root / "disentangle" / "typographic_attack_dataset")
    make_csv_folder(root / "folder")
    make_scam(root / "scam")
    return {name: (f"hf:{root / name}" if name == "scam" else str(root / name)) for name in FORMATS}


def _settings(data: str, dataset: str, protocol: str, out: Path, cache_dir: Path, **extra) -> dict:
    return {"dataset": dataset, "data": data, "protocol": protocol, "model": TINY_MODEL, "pretrained": "seed:0",
            "device": "cpu", "workers": 1, "cache_dir": str(cache_dir), "out": str(out), **extra}


@pytest.fixture(scope="module")
def runs(datasets_root, tmp_path_factory, cache_dir) -> dict[tuple[str, str], Path]:
    """Every format under both protocols, run through `typoattack real`."""
    root = tmp_path_factory.mktemp("real-runs")
    out = {}
    for dataset in FORMATS:
        for protocol in PROTOCOLS:
            path = root / f"{dataset}-{protocol}"
            result = runner.invoke(app, ["real", "--dataset", dataset, "--data", datasets_root[dataset], "--protocol",
                                         protocol, "--model", TINY_MODEL, "--pretrained", "seed:0", "--device", "cpu",
                                         "--workers", "1", "--cache-dir", str(cache_dir), "--out", str(path)])
            assert result.exit_code == 0, result.output
            out[dataset, protocol] = path
    return out


def _wilson(k: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (0.0 if k == 0 else centre - half), (1.0 if k == n else centre + half)


def _recompute_summary(records: pd.DataFrame) -> dict[tuple, dict[str, float]]:
    """The summary from the records by plain loops (no pandas grouping)."""
    counts: dict[tuple, list[int]] = {}
    correct_no_scam: dict[tuple, bool] = {}
    for r in records.to_dict("records"):
        key = (r["model"], r["pretrained"], r["dataset"], r["variant"], r["protocol"])
        c = counts.setdefault(key, [0, 0, 0])
        c[0] += 1
        c[1] += r["pred_label"] == r["object_label"]
        c[2] += r["pred_label"] == r["attack_word"]
        if r["variant"] == "NoSCAM":
            correct_no_scam[r["model"], r["pretrained"], r["photo_id"]] = r["pred_label"] == r["object_label"]
    expected = {}
    for key, (n, k_obj, k_atk) in counts.items():
        row = {"n_images": n, "object_acc": k_obj / n, "attack_rate": k_atk / n}
        row["object_acc_ci_low"], row["object_acc_ci_high"] = _wilson(k_obj, n)
        row["attack_rate_ci_low"], row["attack_rate_ci_high"] = _wilson(k_atk, n)
        pairs = [(correct_no_scam[r["model"], r["pretrained"], r["photo_id"]], r["pred_label"] == r["object_label"])
                 for r in records.to_dict("records")
                 if (r["model"], r["pretrained"], r["dataset"], r["variant"], r["protocol"]) == key
                 and key[3] != "NoSCAM" and (r["model"], r["pretrained"], r["photo_id"]) in correct_no_scam]
        row["n_pairs"] = len(pairs)
        if pairs:
            row["paired_drop"] = sum(a for a, _ in pairs) / len(pairs) - sum(b for _, b in pairs) / len(pairs)
        expected[key] = row
    return expected


@pytest.mark.parametrize("dataset", FORMATS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_summary_matches_a_plain_recomputation(runs, datasets_root, dataset, protocol) -> None:
    out = runs[dataset, protocol]
    records = pd.read_parquet(out / "records.parquet")
    source = open_real_dataset(RealDataset(dataset), datasets_root[dataset])
    assert sorted(records["image_id"]) == sorted(i.image_id for i in source.items)
    assert set(records["protocol"]) == {protocol} and set(records["dataset"]) == {dataset}
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False, na_values=[""])
    expected = _recompute_summary(records)
    assert len(summary) == len(expected)
    for row in summary.to_dict("records"):
        exp = expected[row["model"], row["pretrained"], row["dataset"], row["variant"], row["protocol"]]
        for name, value in exp.items():
            assert row[name] == pytest.approx(value, abs=2e-6), name
        if exp["n_pairs"] == 0:
            assert math.isnan(row["paired_drop"])
    if dataset == "scam":
        assert list(summary["variant"]) == ["SCAM", "NoSCAM", "SynthSCAM"]
        # Photo 3 has no SCAM row and photo 4 no NoSCAM row: 3 SCAM/NoSCAM pairs, 4 SynthSCAM/NoSCAM pairs.
        assert summary.set_index("variant")["n_pairs"].to_dict() == {"SCAM": 3, "NoSCAM": 0, "SynthSCAM": 4}
    else:
        assert list(summary["variant"]) == ["attacked"]
    per_word = pd.read_csv(out / "per_attack_word.csv")
    assert per_word["n_images"].sum() == len(records)
    for row in per_word.to_dict("records"):
        sel = records[(records["variant"] == row["variant"]) & (records["attack_word"] == row["attack_word"])]
        assert row["n_images"] == len(sel)
        assert row["attack_rate"] == pytest.approx((sel["pred_label"] == sel["attack_word"]).mean(), abs=2e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scores_match_open_clip_computed_directly(runs, datasets_root, tiny_model, protocol) -> None:
    """p_object / p_attack / pred_label from the model's own preprocessing and open_clip's
    classifier, computed here without typoattack's image path."""
    out = runs["paint", protocol]
    records = pd.read_parquet(out / "records.parquet").set_index("image_id")
    root = Path(datasets_root["paint"])
    vocabulary = sorted(set(records["object_label"]) | set(records["attack_word"]))
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    with torch.no_grad():
        classifier = open_clip.build_zero_shot_classifier(tiny_model.model, tiny_model.tokenizer, vocabulary,
                                                          ["a photo of a {}."], device="cpu")
        x = torch.stack([preprocess(load_rgb(root / image_id)) for image_id in records.index])
        logits = 100 * torch.nn.functional.normalize(tiny_model.model.encode_image(x), dim=-1) @ classifier
    obj = torch.tensor([vocabulary.index(v) for v in records["object_label"]])
    atk = torch.tensor([vocabulary.index(v) for v in records["attack_word"]])
    rows = torch.arange(len(records))
    if protocol == "union":
        probs = logits.softmax(dim=1)
        p_obj, p_atk = probs[rows, obj], probs[rows, atk]
        pred = [vocabulary[i] for i in logits.argmax(dim=1)]
        assert set(records["n_classes"]) == {len(vocabulary)}
    else:
        pair = torch.stack([logits[rows, obj], logits[rows, atk]], dim=1).softmax(dim=1)
        p_obj, p_atk = pair[:, 0], pair[:, 1]
        pred = [o if po >= pa else a for o, a, po, pa in zip(records["object_label"], records["attack_word"], p_obj, p_atk)]
        assert set(records["n_classes"]) == {2}
    np.testing.assert_allclose(records["p_object"], p_obj.numpy(), atol=1e-4)
    np.testing.assert_allclose(records["p_attack"], p_atk.numpy(), atol=1e-4)
    assert list(records["pred_label"]) == pred


def test_paired_drop_pairs_by_photo_not_by_position() -> None:
    """NoSCAM holds photos a, b, c, d (only a correct); SCAM holds d, c, b (all wrong). Paired by
    photo the twins of the SCAM rows are b, c, d: NoSCAM accuracy 0, drop 0 (by position the first
    three NoSCAM rows a, b, c would give 1/3)."""
    base = {"model": "m", "pretrained": "p", "dataset": "scam", "protocol": "binary", "attack_word": "w"}
    rows = [{**base, "variant": "NoSCAM", "photo_id": pid, "object_label": "o", "pred_label": "o" if pid == "a" else "w"}
            for pid in "abcd"]
    rows += [{**base, "variant": "SCAM", "photo_id": pid, "object_label": "o", "pred_label": "w"} for pid in "dcb"]
    records = pd.DataFrame(rows)
    drop = build_paired_drop(records).set_index("variant").loc["SCAM"]
    assert (drop["n_pairs"], drop["paired_clean_acc"], drop["paired_acc"], drop["paired_drop"]) == (3, 0.0, 0.0, 0.0)
    summary = build_summary(records).set_index("variant")
    assert summary.loc["NoSCAM", "object_acc"] == 0.25 and summary.loc["SCAM", "object_acc"] == 0.0
    # Flip b's NoSCAM row to correct: now the pairs see a drop of 1/3.
    records.loc[(records["variant"] == "NoSCAM") & (records["photo_id"] == "b"), "pred_label"] = "o"
    assert build_paired_drop(records).set_index("variant").loc["SCAM", "paired_drop"] == pytest.approx(1 / 3)


def test_run_json_and_several_models(datasets_root, tmp_path, cache_dir) -> None:
    cfg = load_real_config(None, {**_settings(datasets_root["rta100"], "rta100", "union", tmp_path / "o", cache_dir),
                                  "model": [TINY_MODEL, TINY_MODEL], "pretrained": ["seed:0", "seed:1"],
                                  "batch_size": 4})
    result = run_real(cfg)
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["task"] == "real" and info["complete"] and info["templates"]["first"] == "a photo of a {}."
    assert [m["pretrained"] for m in info["models"]] == ["seed:0", "seed:1"]
    assert all(m["n_images"] == 9 and m["input_size"] == [224, 224] for m in info["models"])
    assert result.n_records == 18 and len(result.summary) == 2
    assert set(result.summary["pretrained"]) == {"seed:0", "seed:1"}


def test_resume_recomputes_only_missing_chunks(datasets_root, tmp_path, cache_dir) -> None:
    settings = _settings(datasets_root["paint"], "paint", "binary", tmp_path / "o", cache_dir, chunk_size=4)
    run_real(load_real_config(None, settings))
    chunks = sorted((tmp_path / "o" / "records.parquet").rglob("*.parquet"))
    assert len(chunks) == 3  # 10 images in chunks of 4
    first = pd.read_parquet(tmp_path / "o" / "records.parquet")
    chunks[1].unlink()
    again = run_real(load_real_config(None, settings))
    assert again.info.models[0]["images_encoded_this_session"] == 4
    pd.testing.assert_frame_equal(first, pd.read_parquet(again.out_dir / "records.parquet"))
    assert (tmp_path / "o" / "summary.csv").is_file()


def test_limit_takes_a_seeded_subset_of_photos(datasets_root, tmp_path, cache_dir) -> None:
    result = run_real(load_real_config(None, _settings(datasets_root["scam"], "scam", "union", tmp_path / "o",
                                                       cache_dir, limit=2, seed=5)))
    assert pd.read_parquet(result.out_dir / "records.parquet")["photo_id"].nunique() == 2
    assert result.n_records == result.info.n_items


def test_cli_runs_and_resumes_and_refuses_another_run(datasets_root, tmp_path, cache_dir) -> None:
    args = ["real", "--dataset", "scam", "--data", datasets_root["scam"], "--protocol", "binary", "--model", TINY_MODEL,
            "--pretrained", "seed:0", "--templates", "simple", "--device", "cpu", "--cache-dir", str(cache_dir),
            "--out", str(tmp_path / "o")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "UNTRAINED MODEL" in result.output and "Wrote" in result.output and "SynthSCAM" in result.output
    before = (tmp_path / "o" / "summary.csv").read_text()
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and (tmp_path / "o" / "summary.csv").read_text() == before
    result = runner.invoke(app, [*args[:-2], "--protocol", "union", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "holds a different run" in result.output
    result = runner.invoke(app, [*args[:-2], "--protocol", "union", "--out", str(tmp_path / "o"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert set(pd.read_csv(tmp_path / "o" / "summary.csv")["protocol"]) == {"union"}


def _break_rta_name(root: Path) -> str:
    shutil.copy(root / "label=dog_text=cat.png", root / "dog-with-cat.png")
    return "dog-with-cat.png"


def _break_csv_column(root: Path) -> str:
    csv = root / "labels.csv"
    csv.write_text(csv.read_text().replace("object_label", "object"))
    return "labels.csv has no column 'object_label'"


def _break_annotations(root: Path) -> str:
    images = root / "typographic_attack_dataset" / "images"
    shutil.copy(images / "IMG_2930.JPG", images / "IMG_0001.JPG")
    return "'IMG_0001.JPG'"


def _empty(root: Path) -> str:
    shutil.rmtree(root)
    root.mkdir()
    return "holds no image files"


@pytest.mark.parametrize("dataset, breaker", [
    ("rta100", _break_rta_name), ("folder", _break_csv_column), ("disentangle", _break_annotations), ("paint", _empty),
])
def test_format_errors_are_one_line(datasets_root, tmp_path, dataset, breaker) -> None:
    data = tmp_path / dataset
    shutil.copytree(datasets_root[dataset], data)
    message = breaker(data)
    result = runner.invoke(app, ["real", "--dataset", dataset, "--data", str(data), "--model", TINY_MODEL,
                                 "--pretrained", "seed:0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_scam_missing_column_is_one_line(tmp_path) -> None:
    make_scam(tmp_path / "ds", drop_column="object_label")
    result = runner.invoke(app, ["real", "--dataset", "scam", "--data", f"hf:{tmp_path / 'ds'}", "--model", TINY_MODEL,
                                 "--pretrained", "seed:0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "has no column 'object_label'" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_of_real_runs(runs, tmp_path) -> None:
    dirs = [runs["scam", "binary"], runs["rta100", "union"]]
    result = runner.invoke(app, ["report", *map(str, dirs), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    rep = tmp_path / "rep"
    for name in ("report.md", "report.html", "real_summary.csv", "real_leaderboard.csv", "real_leaderboard.md",
                 "real_accuracy.png", "real_examples.png"):
        assert (rep / name).is_file(), name
    md = (rep / "report.md").read_text()
    assert "## Leaderboard" in md and "SynthSCAM" in md and "rta100" in md and "UNTRAINED MODEL" in md
    summary = pd.read_csv(rep / "real_summary.csv")
    expected = pd.concat([pd.read_csv(d / "summary.csv") for d in dirs])
    assert sorted(summary["object_acc"]) == pytest.approx(sorted(expected["object_acc"]))
    leaderboard = pd.read_csv(rep / "real_leaderboard.csv")
    assert "NoSCAM" not in set(leaderboard["variant"])


def test_report_of_real_and_eval_runs(runs, sample_dir, cache_dir, tmp_path) -> None:
    # The eval run's 1000-class classifier (tiny model, `simple` templates) is the slow part (~25 s
    # on 2 cores); in a full test session test_cli has already cached it in `cache_dir`.
    vocab = tmp_path / "one.yaml"
    vocab.write_text("words:\n  - {text: pizza, target: pizza}\n")
    result = runner.invoke(app, ["eval", "--data", str(sample_dir), "--model", TINY_MODEL, "--pretrained", "seed:0",
                                 "--vocab", str(vocab), "--limit", "6", "--templates", "simple", "--device", "cpu",
                                 "--workers", "0", "--cache-dir", str(cache_dir), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", str(tmp_path / "eval"), str(runs["disentangle", "union"]),
                                 "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    rep = tmp_path / "rep"
    assert (rep / "report.html").is_file() and (rep / "real.html").is_file() and (rep / "real.md").is_file()
    assert "real.html" in (rep / "report.md").read_text()
    assert "disentangle" in (rep / "real.md").read_text()


def test_cli_config_file_and_repeated_models(datasets_root, tmp_path, cache_dir) -> None:
    config = tmp_path / "real.yaml"
    config.write_text(f"dataset: folder\ndata: {datasets_root['folder']}\nprotocol: binary\ndevice: cpu\n"
                      f"cache_dir: {cache_dir}\nmodels:\n  - {{name: {TINY_MODEL}, pretrained: 'seed:0'}}\n")
    result = runner.invoke(app, ["real", "-c", str(config), "--model", TINY_MODEL, "--pretrained", "seed:0",
                                 "--model", TINY_MODEL, "--pretrained", "seed:1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert list(summary["pretrained"]) == ["seed:0", "seed:1"] and set(summary["protocol"]) == {"binary"}
    assert set(summary["n_images"]) == {6}


def test_unreadable_image_is_skipped_and_listed(datasets_root, tmp_path, cache_dir) -> None:
    data = tmp_path / "rta"
    shutil.copytree(datasets_root["rta100"], data)
    (data / "label=dog_text=broken.png").write_bytes(b"")
    result = run_real(load_real_config(None, _settings(str(data), "rta100", "union", tmp_path / "o", cache_dir)))
    skipped = pd.read_csv(tmp_path / "o" / "skipped.csv")
    assert list(skipped["image_id"]) == ["label=dog_text=broken.png"]
    records = pd.read_parquet(result.out_dir / "records.parquet")
    assert result.n_records == 9 and "label=dog_text=broken.png" not in set(records["image_id"])
    assert result.info.n_skipped == 1 and result.info.models[0]["n_images"] == 9
    assert pd.read_csv(tmp_path / "o" / "summary.csv")["n_images"].tolist() == [9]


def test_report_refuses_an_incomplete_real_run(runs, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(runs["rta100", "binary"], run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "complete": False}))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 1 and "rerun the same `typoattack real` command" in result.output
    assert len(result.output.strip().splitlines()) == 1
