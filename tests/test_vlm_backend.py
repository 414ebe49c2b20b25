"""The vision-language backend on tiny random LLaVA, Qwen2-VL, Idefics3, PaliGemma and Gemma 3 folders: loading, option
log-likelihoods against a full-sequence hand computation, batch-size and padding invariance, greedy answers,
and the one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from typoattack.backends.transformers.chat import create_vision_language_model
from typoattack.backends.transformers.chat_files import get_native_image_size, hash_folder
from typoattack.config.types import Precision
from typoattack.errors import ConfigError, WeightsError
from typoattack.tasks.vlm.answers import parse_letter
from vlm_builders import TINY_BUILDERS

CPU = torch.device("cpu")
FAMILIES = sorted(TINY_BUILDERS)
QUESTIONS = [
    "What entity is depicted in the image?\n(a) tench\n(b) pizza\nRespond strictly with only (a) or (b), nothing else.",
    "What object is depicted in the image?\n(a) iPod\n(b) granny smith\nRespond strictly with only (a) or (b).",
    "Name the entity you see in the image.\n(a) library\n(b) trash can",
    "Which entity is shown?\n(a) pizza\n(b) tench",
    "Hi",
]
OPTIONS = [["a", "(b)", "(a) tench", "pizza", "(a", "(A) tench", "(a) t"]] * len(QUESTIONS)
"""One-token and several-token answers side by side (the second pass through the KV cache is used), some
sharing their beginning (one row of that pass serves them)."""


def _images(n: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = ((32, 32), (40, 32), (32, 48))) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*sizes[i % len(sizes)], 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """Every test of this module on one torch thread (conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm")
    return {family: build(root / family) for family, build in TINY_BUILDERS.items()}


@pytest.fixture(scope="module")
def models(folders) -> dict[str, object]:
    return {family: create_vision_language_model(str(folder), CPU, Precision.FP32) for family, folder in folders.items()}


def _hand_scores(vlm, image: np.ndarray, question: str, answers: list[str]) -> list[float]:
    """log p(answer | prompt) from one full-sequence forward pass per answer (the prompt as transformers' own
    apply_chat_template tokenizes it, then the answer tokens; no padding, no cache, the model's own positions),
    log-softmax over every position."""
    processor = vlm.processor
    pil = Image.fromarray(image)
    if processor.chat_template is None:  # PaliGemma: the processor writes the prompt
        base = processor(images=[[pil]], text=[f"<image>{question}"], return_tensors="pt")
        base.pop("labels", None)
    else:
        conversation = [{"role": "user", "content": [{"type": "image", "image": pil}, {"type": "text", "text": question}]}]
        base = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                             return_dict=True, return_tensors="pt")
    length = base["input_ids"].shape[1]
    # Appended answer tokens: attended to; text, not image (0), except PaliGemma's causal suffix (1).
    tail_value = {"attention_mask": 1, "token_type_ids": 1 if vlm.family == "paligemma" else 0}
    out = []
    for answer in answers:
        ids = torch.tensor([vlm.encode_answer(answer)])
        inputs = dict(base)
        for key, value in base.items():
            if isinstance(value, torch.Tensor) and value.ndim == 2 and value.shape[1] == length:
                tail = ids if key == "input_ids" else torch.full_like(ids, tail_value.get(key, 0))
                inputs[key] = torch.cat([value, tail.to(value.dtype)], dim=1)
        with torch.no_grad():
            logits = vlm.model(**inputs).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        out.append(sum(logp[length - 1 + t, token].item() for t, token in enumerate(ids[0].tolist())))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_family_from_its_folder(models, folders, family) -> None:
    vlm = models[family]
    assert vlm.family == family
    assert vlm.weights_id == f"folder:{hash_folder(folders[family])}"
    assert vlm.model.dtype == torch.float32 and not vlm.model.training
    # LLaVA crops, PaliGemma and Gemma 3 resize to a fixed square; Qwen2-VL and Idefics3 keep the aspect.
    assert vlm.native_image_size == (None if family in ("qwen2_vl", "idefics3") else (32, 32))


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_a_full_sequence_hand_computation(models, family) -> None:
    vlm = models[family]
    images = _images(len(QUESTIONS))
    scores = vlm.score_options(images, QUESTIONS, OPTIONS, batch_size=len(QUESTIONS))
    assert scores.dtype == np.float64 and scores.shape == (len(QUESTIONS), len(OPTIONS[0])) and (scores < 0).all()
    for i in (0, 4):
        np.testing.assert_allclose(scores[i], _hand_scores(vlm, images[i], QUESTIONS[i], OPTIONS[i]),
                                   rtol=0, atol=2e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_do_not_depend_on_batch_size_or_padding_side(models, folders, tmp_path, family) -> None:
    vlm = models[family]
    images = _images(len(QUESTIONS), seed=1)
    reference = vlm.score_options(images, QUESTIONS, OPTIONS, batch_size=len(QUESTIONS))
    for batch_size in (1, 2):
        np.testing.assert_allclose(vlm.score_options(images, QUESTIONS, OPTIONS, batch_size=batch_size), reference,
                                   rtol=0, atol=1e-4)
    right = create_vision_language_model(str(TINY_BUILDERS[family](tmp_path / "right", padding_side="right")), CPU,
                                         Precision.FP32)
    assert right.processor.tokenizer.padding_side == "right"
    np.testing.assert_allclose(right.score_options(images, QUESTIONS, OPTIONS, batch_size=3), reference,
                               rtol=0, atol=1e-4)
    assert right.processor.tokenizer.padding_side == "right"  # restored after the call


@pytest.mark.parametrize("family", FAMILIES)
def test_answers_are_tokenized_as_they_follow_the_generation_prompt(models, family) -> None:
    vlm = models[family]
    tokenizer = vlm.processor.tokenizer
    # "ASSISTANT:" / "Assistant:" are followed by a space, a newline-ended prompt is not.
    space = " " if family in ("llava", "idefics3") else ""
    for text in ("a", "(B", "(a) tench"):
        assert vlm.encode_answer(text) == tuple(tokenizer(space + text, add_special_tokens=False)["input_ids"])
    prompt = vlm.build_inputs(_images(1), ["x"])["input_ids"][0].tolist()
    joined = tokenizer.decode(prompt + list(vlm.encode_answer("(a) tench")), skip_special_tokens=True)
    assert joined.endswith(("ASSISTANT: (a) tench", "Assistant: (a) tench", "\n(a) tench")), joined


def test_one_token_options_read_the_last_position_only(models) -> None:
    vlm = models["llava"]
    images = _images(3)
    single = vlm.score_options(images, QUESTIONS[:3], [["a", "b"]] * 3)
    mixed = vlm.score_options(images, QUESTIONS[:3], [["a", "b", "(a)"]] * 3)
    np.testing.assert_allclose(single, mixed[:, :2], rtol=0, atol=1e-5)
    for i in range(3):
        np.testing.assert_allclose(single[i], _hand_scores(vlm, images[i], QUESTIONS[i], ["a", "b"]), atol=2e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_answers_agree_with_likelihood_and_batching(tmp_path, family) -> None:
    vlm = create_vision_language_model(str(TINY_BUILDERS[family](tmp_path / family, letter_bias=True)), CPU,
                                       Precision.FP32)
    images = _images(6, seed=2)
    questions = [QUESTIONS[i % 4] for i in range(6)]
    answers = vlm.generate_answers(images, questions, max_new_tokens=4, batch_size=6)
    assert answers == vlm.generate_answers(images, questions, max_new_tokens=4, batch_size=1)
    scores = vlm.score_options(images, questions, [["a", "b"]] * 6)
    letters = [parse_letter(a) for a in answers]
    parsed = [i for i, letter in enumerate(letters) if letter is not None]
    assert len(parsed) >= 4, answers
    assert [letters[i] for i in parsed] == ["ab"[int(scores[i].argmax())] for i in parsed]


def test_square_canvas_at_native_size_reaches_the_llava_model_unresized(models) -> None:
    vlm = models["llava"]
    canvas = _images(1)[0]
    pixels = vlm.build_inputs([canvas], ["x"])["pixel_values"][0].numpy()
    ip = vlm.processor.image_processor
    expected = (canvas.astype(np.float64) / 255 - np.array(ip.image_mean)) / np.array(ip.image_std)
    np.testing.assert_allclose(pixels, expected.transpose(2, 0, 1), atol=1e-5)


def test_bf16_weights_and_fp16_on_cpu(folders) -> None:
    vlm = create_vision_language_model(str(folders["llava"]), CPU, Precision.BF16)
    assert vlm.model.dtype == torch.bfloat16
    scores = vlm.score_options(_images(2), QUESTIONS[:2], [["a", "b"]] * 2)
    assert np.isfinite(scores).all() and (scores < 0).all()
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        create_vision_language_model(str(folders["llava"]), CPU, Precision.FP16)


def test_hub_id_resolves_from_the_cache_offline(folders, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llava"
    shutil.copytree(folders["llava"], repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    vlm = create_vision_language_model("tiny-org/tiny-llava", CPU, Precision.FP32)
    assert vlm.weights_id == f"tiny-org/tiny-llava@{commit}" and vlm.family == "llava"
    with pytest.raises(WeightsError, match="not in the Hugging Face cache") as err:
        create_vision_language_model("tiny-org/absent", CPU, Precision.FP32)
    assert "\n" not in str(err.value) and "save_pretrained" in str(err.value)


def _copy_without(folder: Path, dest: Path, *names: str) -> Path:
    shutil.copytree(folder, dest, ignore=lambda _d, files: [f for f in files if f in names])
    return dest


def _write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case, error, words", [
    ("missing", WeightsError, ["does not exist", "save_pretrained"]),
    ("file", WeightsError, ["is a file"]),
    ("no-config", WeightsError, ["config.json"]),
    ("no-weights", WeightsError, ["cannot load its weights"]),
    ("no-template", WeightsError, ["chat template"]),
    ("text-only", ConfigError, ["LlamaConfig", "not an image-text-to-text model"]),
    ("remote-code", ConfigError, ["--trust-remote-code"]),
    ("remote-causal-lm", ConfigError, ["AutoModelForCausalLM", "not AutoModelForImageTextToText"]),
    ("unknown-type", ConfigError, ["unknown to transformers"]),
])
def test_unusable_models_fail_in_one_line(folders, tmp_path, case, error, words) -> None:
    trust = False
    if case == "missing":
        name = str(tmp_path / "nowhere" / "model")
    elif case == "file":
        name = str(folders["llava"] / "config.json")
    elif case == "no-config":
        name = str(_copy_without(folders["llava"], tmp_path / "m", "config.json"))
    elif case == "no-weights":
        name = str(_copy_without(folders["llava"], tmp_path / "m", "model.safetensors"))
    elif case == "no-template":
        name = str(_copy_without(folders["llava"], tmp_path / "m", "chat_template.jinja"))
    elif case == "text-only":
        name = str(_write_config(tmp_path / "m", {"model_type": "llama", "hidden_size": 32}))
    elif case == "remote-code":
        name = str(_write_config(tmp_path / "m", {"model_type": "my_vlm",
                                                  "auto_map": {"AutoModelForImageTextToText": "modeling.MyVLM"}}))
    elif case == "remote-causal-lm":
        name = str(_write_config(tmp_path / "m", {"model_type": "my_vlm",
                                                  "auto_map": {"AutoModelForCausalLM": "modeling.MyVLM"}}))
        trust = True
    else:
        name = str(_write_config(tmp_path / "m", {"model_type": "my_vlm"}))
    with pytest.raises(error) as err:
        create_vision_language_model(name, CPU, Precision.FP32, trust_remote_code=trust)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_native_image_size_of_each_processor_kind() -> None:
    import transformers as tf

    cases = [
        (tf.CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}), (336, 336)),
        (tf.LlavaNextImageProcessor(), None),
        (tf.LlavaOnevisionImageProcessor(), None),
        (tf.Qwen2VLImageProcessor(), None),
        (tf.Idefics3ImageProcessor(), None),
        (tf.SmolVLMImageProcessor(), None),
        (tf.SiglipImageProcessor(size={"height": 448, "width": 448}), (448, 448)),
        (tf.Gemma3ImageProcessor(size={"height": 896, "width": 896}), (896, 896)),
        (tf.Gemma3ImageProcessor(size={"height": 896, "width": 896}, do_pan_and_scan=True), None),
    ]
    assert [get_native_image_size(ip) for ip, _ in cases] == [size for _, size in cases]


def test_canvas_must_be_uint8_rgb(models) -> None:
    with pytest.raises(ValueError, match="uint8"):
        models["llava"].score_options([np.zeros((8, 8, 3), dtype=np.float32)], ["x"], [["a", "b"]])
