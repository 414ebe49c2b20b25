"""Defense-Prefix files as users have them: the authors' released `nn.Parameter` (fp16, [1, D],
requires_grad) and state-dict / checkpoint forms load on `real` and `eval`, give the numbers of the
plain float32 vector, and the run fingerprints hash the file's contents."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from probes_reference import hand_p_object
from real_datasets_builders import make_named_folder
from typoattack.cli import app
from typoattack.backends.open_clip.model import TINY_MODEL
from typoattack.defences.apply import check_defences
from typoattack.defences.prefix import load_prefix, load_prefix_entry
from typoattack.errors import ConfigError
from typoattack.tasks.real.config import load_real_config
from typoattack.tasks.synthetic.config import load_synthetic_config

runner = CliRunner()
D = 64  # the tiny model's text width


def _released_parameter(seed: int = 5) -> torch.nn.Parameter:
    """What Defense-Prefix's train.py saves: the Embedding weight, an fp16 Parameter of shape [1, D]."""
    return torch.nn.Parameter(torch.randn(1, D, generator=torch.Generator().manual_seed(seed)).half())


def _expected(param: torch.Tensor) -> torch.Tensor:
    return param.detach().float().reshape(-1)


def test_released_parameter_loads_as_a_detached_float32_vector(tmp_path) -> None:
    param = _released_parameter()
    assert param.requires_grad and param.dtype == torch.float16
    torch.save(param, tmp_path / "dp.pt")
    vector, key = load_prefix_entry(tmp_path / "dp.pt", D)
    assert key == "" and vector.dtype == torch.float32 and vector.shape == (D,) and not vector.requires_grad
    assert torch.equal(vector, _expected(param))
    vector.numpy()  # the call that crashed


@pytest.mark.parametrize("form, key", [
    ("bf16_flat", ""),
    ("state_dict", "prefix"),
    ("embedding_state_dict", "weight"),
    ("checkpoint", "state_dict.prefix_tokens"),
    ("list", "0"),
])
def test_dict_and_checkpoint_forms_name_the_key_they_took(tmp_path, form, key) -> None:
    param = _released_parameter(seed=7)
    values = {
        "bf16_flat": param.detach().to(torch.bfloat16).reshape(-1),
        "state_dict": {"prefix": param},
        "embedding_state_dict": torch.nn.Embedding.from_pretrained(param.detach().float(), freeze=False).state_dict(),
        # A training checkpoint: the SGD momentum has the prefix's shape too, and must not count.
        "checkpoint": {"epoch": 9, "state_dict": {"prefix_tokens": param},
                       "optimizer": {"state": {0: {"momentum_buffer": torch.ones(1, D)}}, "param_groups": [{"lr": 0.002}]},
                       "lr_scheduler": {"last_epoch": 9}},
        "list": [param],
    }
    torch.save(values[form], tmp_path / "p.pt")
    vector, found = load_prefix_entry(tmp_path / "p.pt", D)
    assert found == key
    reference = values["bf16_flat"].float() if form == "bf16_flat" else _expected(param)
    assert torch.equal(vector, reference)


def test_several_vectors_pick_the_one_of_the_model_width_or_fail_naming_them(tmp_path) -> None:
    torch.save({"prefix": torch.ones(1, D), "mean": torch.zeros(3), "step": torch.tensor(4)}, tmp_path / "one.pt")
    vector, key = load_prefix_entry(tmp_path / "one.pt", D)
    assert key == "prefix" and torch.equal(vector, torch.ones(D))
    torch.save({"a": torch.ones(D), "b": torch.zeros(1, D)}, tmp_path / "two.pt")
    with pytest.raises(ConfigError, match=r"holds 2 vectors \('a', 'b'\)"):
        load_prefix(tmp_path / "two.pt", D)
    torch.save({"epoch": 3}, tmp_path / "none.pt")
    with pytest.raises(ConfigError, match=r"shape \(D,\) or \(1, D\)"):
        load_prefix(tmp_path / "none.pt", D)
    torch.save({"prefix": torch.ones(1, 512)}, tmp_path / "wide.pt")
    with pytest.raises(ConfigError, match=r"key 'prefix'.*D=512.*width 64"):
        load_prefix(tmp_path / "wide.pt", D)
    torch.save(torch.full((D,), float("nan")), tmp_path / "nan.pt")
    with pytest.raises(ConfigError, match="non-finite"):
        load_prefix(tmp_path / "nan.pt", D)


def test_check_defences_says_which_key_it_took(tmp_path, tiny_model) -> None:
    torch.save({"state_dict": {"prefix": _released_parameter()}}, tmp_path / "ckpt.pt")
    torch.save(_released_parameter(), tmp_path / "bare.pt")
    notes = check_defences(tiny_model, ["none", f"prefix:{tmp_path / 'ckpt.pt'}", f"prefix:{tmp_path / 'bare.pt'}"])
    assert notes == [f"prefix:ckpt.pt: using the vector under key 'state_dict.prefix' of {tmp_path / 'ckpt.pt'}"]


def _real_args(data: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["real", "--dataset", "rta100", "--data", str(data), "--model", TINY_MODEL, "--pretrained", "seed:0",
            "--device", "cpu", "--workers", "1", "--cache-dir", str(cache_dir), "--out", str(out), *extra]


def test_real_with_the_released_parameter_matches_open_clip_and_resumes_by_contents(tmp_path, cache_dir,
                                                                                    tiny_model) -> None:
    data = make_named_folder(tmp_path / "rta")
    param = _released_parameter()
    torch.save(param, tmp_path / "dp.pt")
    out = tmp_path / "out"
    args = _real_args(data, out, cache_dir, "--defence", "none", "--defence", f"prefix:{tmp_path / 'dp.pt'}")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = pd.read_parquet(out / "records.parquet")
    prefix = records[records["defence"] == "prefix:dp.pt"].reset_index(drop=True)
    assert len(prefix) == 9
    vocabulary = sorted(set(records["object_label"]) | set(records["attack_word"]))
    expected = hand_p_object(tiny_model, data, prefix, vocabulary, "a photo of a * {}.", _expected(param))
    np.testing.assert_allclose(prefix["p_object"], expected, atol=1e-4)
    none = records[records["defence"] == "none"].reset_index(drop=True)
    assert np.abs(prefix["p_object"].to_numpy() - none["p_object"].to_numpy()).max() > 1e-3  # the prefix acts

    # Same path, other contents: refused as another run; the original contents again: resumes.
    original = (tmp_path / "dp.pt").read_bytes()
    torch.save(_released_parameter(seed=6), tmp_path / "dp.pt")
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "holds a different run" in result.output
    (tmp_path / "dp.pt").write_bytes(original)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pd.testing.assert_frame_equal(pd.read_parquet(out / "records.parquet"), records)


def test_eval_with_the_released_parameter_equals_the_plain_vector(tmp_path, sample_dir, cache_dir) -> None:
    (tmp_path / "released").mkdir()
    (tmp_path / "plain").mkdir()
    param = _released_parameter(seed=11)
    torch.save(param, tmp_path / "released" / "p.pt")
    torch.save(_expected(param), tmp_path / "plain" / "p.pt")
    (tmp_path / "vocab.yaml").write_text("words:\n  - {text: pizza, target: pizza}\n")
    (tmp_path / "one.yaml").write_text("- 'a photo of a {}.'\n")  # one template: 1,000 prompts, not 7,000
    frames = []
    for name in ("plain", "released"):
        out = tmp_path / f"out-{name}"
        result = runner.invoke(app, [
            "eval", "--model", TINY_MODEL, "--pretrained", "seed:0", "--data", str(sample_dir), "--limit", "3",
            "--vocab", str(tmp_path / "vocab.yaml"), "--fraction", "0.1", "--templates", str(tmp_path / "one.yaml"),
            "--device", "cpu", "--workers", "0", "--cache-dir", str(cache_dir), "--out", str(out),
            "--defence", f"prefix:{tmp_path / name / 'p.pt'}"])
        assert result.exit_code == 0, result.output
        frames.append(pd.read_parquet(out / "records.parquet"))
    assert set(frames[1]["defence"]) == {"prefix:p.pt", "templates:photo"}  # the prefix and its baseline
    pd.testing.assert_frame_equal(frames[0], frames[1])


def test_fingerprints_hash_defence_file_contents_not_paths(tmp_path, sample_dir) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        torch.save(torch.ones(D), tmp_path / folder / "p.pt")
    (tmp_path / "t.yaml").write_text("- 'a photo of a {}.'\n")
    a, b = (f"prefix:{tmp_path / f / 'p.pt'}" for f in ("a", "b"))
    templates = f"templates:{tmp_path / 't.yaml'}"
    vocab_path = tmp_path / "vocab.yaml"
    vocab_path.write_text("words:\n  - {text: pizza, target: pizza}\n")

    def eval_fingerprint(*defences: str) -> str:
        return load_synthetic_config(None, {"model": TINY_MODEL, "pretrained": "seed:0", "data": str(sample_dir),
                                            "vocab": str(vocab_path), "defences": ["none", *defences]}).fingerprint()

    first = eval_fingerprint(a, templates)
    assert eval_fingerprint(b, templates) == first  # the same contents elsewhere: the same run
    (tmp_path / "t.yaml").write_text("- 'a photo of the {}.'\n")
    assert eval_fingerprint(a, templates) != first
    torch.save(torch.zeros(D), tmp_path / "a" / "p.pt")
    assert eval_fingerprint(a) != eval_fingerprint(b)


def test_real_fingerprint_follows_the_prefix_contents(tmp_path) -> None:
    data = make_named_folder(tmp_path / "rta")
    torch.save(torch.ones(D), tmp_path / "p.pt")
    cfg = load_real_config(None, {"dataset": "rta100", "data": str(data), "model": TINY_MODEL, "pretrained": "seed:0",
                                  "defences": [f"prefix:{tmp_path / 'p.pt'}"]})
    first = cfg.fingerprint()
    shutil.copy(tmp_path / "p.pt", tmp_path / "copy.pt")
    torch.save(torch.ones(D) * 2, tmp_path / "p.pt")
    assert cfg.fingerprint() != first
    shutil.copy(tmp_path / "copy.pt", tmp_path / "p.pt")
    assert cfg.fingerprint() == first
