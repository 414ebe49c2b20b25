"""What the backends say on the terminal: a missing optional dependency in one line naming its extra, an
open_clip model name given to the transformers backend, and no library noise where it is expected (open_clip's
random-weights warning for seed:N, transformers' progress bars while a model loads)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from typer.testing import CliRunner

from typoattack.backends.open_clip.model import TINY_MODEL, create_model
from typoattack.backends.registry import get_backend, get_chat_backend
from typoattack.config.types import ModelSpec, Precision
from typoattack.errors import MissingExtraError, WeightsError

CPU = torch.device("cpu")
TRANSFORMERS_HINT = "needs the `transformers` extra: pip install 'typoattack[transformers]'"
runner = CliRunner()


def _invoke(args: list[str]):  # noqa: ANN202
    from typoattack.cli import app

    return runner.invoke(app, args)


def _lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.fixture
def no_transformers(monkeypatch):
    """`import transformers` fails (ModuleNotFoundError) and find_spec finds nothing, as without the extra."""
    monkeypatch.setitem(sys.modules, "transformers", None)


def test_the_transformers_backend_without_its_extra_says_which_extra(no_transformers, tmp_path) -> None:
    with pytest.raises(MissingExtraError, match=r"^the transformers backend " + "needs the `transformers` extra"):
        get_backend("transformers").check_model(ModelSpec(str(tmp_path), backend="transformers"))
    result = _invoke(["eval", "--backend", "transformers", "--model", str(tmp_path), "--data", "sample", "--limit", "2",
                      "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert len(_lines(result.output)) == 1 and TRANSFORMERS_HINT in result.output, result.output
    assert "Traceback" not in result.output


def test_vlm_without_the_transformers_extra_says_which_extra(no_transformers, tmp_path) -> None:
    with pytest.raises(MissingExtraError, match="needs the `transformers` extra"):
        get_chat_backend("transformers").check_model(str(tmp_path))
    with pytest.raises(MissingExtraError, match="needs the `transformers` extra"):
        get_chat_backend("transformers").load(str(tmp_path), CPU, Precision.FP32)
    result = _invoke(["vlm", "--model", str(tmp_path), "--data", "sample", "--limit", "2", "--device", "cpu",
                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert len(_lines(result.output)) == 1 and TRANSFORMERS_HINT in result.output, result.output
    assert "Traceback" not in result.output


def test_ray_without_its_extra_says_which_extra(monkeypatch) -> None:
    from typoattack.cluster import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingExtraError, match=r"needs the `ray` extra: pip install 'typoattack\[ray\]'$"):
        import_ray()


def test_an_open_clip_name_given_to_the_transformers_backend_says_so(tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    hint = "ViT-B-32 is an open_clip model name; drop --backend transformers (or pass --backend open_clip)"
    with pytest.raises(WeightsError) as error:
        get_backend("transformers").check_model(ModelSpec("ViT-B-32", backend="transformers"))
    assert str(error.value) == hint
    result = _invoke(["eval", "--backend", "transformers", "--model", "ViT-B-32", "--data", "sample", "--limit", "2",
                      "--device", "cpu", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and len(_lines(result.output)) == 1 and hint in result.output, result.output
    # a name open_clip does not know keeps the usual message
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        get_backend("transformers").check_model(ModelSpec("no-such-model", backend="transformers"))
    with pytest.raises(WeightsError, match="ViT-B-32 is an open_clip model name .*not a vision-language chat model"):
        get_chat_backend("transformers").check_model("ViT-B-32")


def test_seed_weights_load_without_open_clips_random_weights_warning(caplog) -> None:
    caplog.set_level(logging.WARNING)
    filters = list(logging.getLogger().filters)
    create_model(ModelSpec(TINY_MODEL, "seed:0"), CPU, Precision.FP32)
    assert not [r for r in caplog.records if "pretrained weights" in r.getMessage()], caplog.text
    assert logging.getLogger().filters == filters
    logging.warning("No pretrained weights loaded for model 'x'. Model initialized randomly.")  # outside: kept
    assert "No pretrained weights loaded" in caplog.text


@pytest.fixture
def progress_bars_on():
    """transformers' progress bars enabled (as in a user's terminal), and the setting restored afterwards."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    yield hf_logging
    (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def test_transformers_models_load_without_progress_bars(progress_bars_on, tmp_path, capfd) -> None:
    import hf_builders
    from vlm_builders import save_tiny_llava

    clip = hf_builders.build_clip_folder(tmp_path / "clip")
    llava = save_tiny_llava(tmp_path / "llava")
    capfd.readouterr()
    get_backend("transformers").load(ModelSpec(str(clip), backend="transformers"), CPU, Precision.FP32)
    get_chat_backend("transformers").load(str(llava), CPU, Precision.FP32)
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.err + captured.out, captured.err
    assert "it/s" not in captured.err, captured.err
    assert progress_bars_on.is_progress_bar_enabled()  # the setting is restored
