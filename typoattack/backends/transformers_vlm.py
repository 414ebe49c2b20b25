"""Vision-language chat models on `transformers` (AutoModelForImageTextToText + AutoProcessor + chat
template): loading from a save_pretrained folder or the Hugging Face cache, option log-likelihoods from
one forward pass over the shared prompt, and greedy answers.

What each family's processor does to the uint8 canvas it receives (the canvas is handed over unchanged):

| family | processor | native_image_size |
|---|---|---|
| llava (1.5) | CLIP: shortest edge resized to `size` (bicubic), centre crop to `crop_size`; a square canvas of the crop size passes unresized | crop_size, e.g. (336, 336) |
| llava_next | any-res: the grid resolution that best fits the aspect is chosen among `image_grid_pinpoints`, the canvas resized into it keeping aspect and padded, cut into tiles, plus a resized global view | None |
| llava_onevision | as llava_next (SigLIP, 384 tiles) | None |
| qwen2_vl, qwen2_5_vl | resized (keeping aspect) so each side is a multiple of patch x merge size (28) and the area lies within min/max pixels; no crop, no pad | None |
| idefics3, smolvlm | longest edge resized to `size`, split into square tiles of `max_image_size` plus a global view; keeps aspect | None |
| paligemma | resized to its fixed square (224, 448 or 896), aspect not kept | (h, w) of `size` |
| gemma3 | resized to 896 x 896, aspect not kept (pan-and-scan off) | (896, 896) |

The canvas a task draws on (`get_default_canvas_size`) is the native size where there is one; a processor
that keeps the aspect ratio gets a square of its tile (llava_next / llava_onevision: `crop_size` or `size`,
e.g. 336 / 384; idefics3 / smolvlm: `max_image_size`, e.g. 364 / 512), and Qwen2-VL, which has no tile, a
square of 448 (16 x 16 merged patches of 28) rounded down to its patch x merge size and kept within its
min / max pixels: sizes each processor takes without upsampling a tile.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from typoattack.config.types import Precision
from typoattack.errors import ConfigError, WeightsError

TESTED_FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm",
                   "paligemma", "gemma3")
"""model_type values this backend is written and documented for; other AutoModelForImageTextToText models load
too, through the same generic path."""
_PROMPT_ONLY_FAMILIES = ("paligemma",)
"""Families without a chat template whose processor builds the prompt itself (image tokens, BOS, newline)."""
_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}
_SUPPLY_HELP = ("pass a folder written by save_pretrained (config.json, weights, processor and tokenizer files), "
                "or download the model into the Hugging Face cache on a machine with network access "
                "(`hf download ORG/NAME`) and copy the cache (HF_HOME) here")


@dataclass(frozen=True, eq=False)
class VisionLanguageModel:
    """A loaded vision-language chat model with what scoring needs.

    Attributes:
        name: What the user asked for (folder path or Hub id).
        family: The config's model_type (`llava`, `qwen2_vl`, `idefics3`, ...).
        weights_id: `ORG/NAME@COMMIT` for a Hub model, `folder:SHA256` (content hash of the folder's files) for a
            folder; changes whenever the weights, config or processor change.
        native_image_size: (height, width) of the model's own fixed input, or None when its processor keeps the
            aspect ratio (tiles, dynamic resolution); see the module docstring.
        device: Where the model runs.
        precision: Weights and activations dtype (the model is loaded in it; log-softmax runs in float32).
        model: The AutoModelForImageTextToText model in eval mode.
        processor: Its AutoProcessor (image processor, tokenizer, chat template).
    """

    name: str
    family: str
    weights_id: str
    native_image_size: tuple[int, int] | None
    device: torch.device
    precision: Precision
    model: Any
    processor: Any
    _answer_ids: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)

    def encode_answer(self, text: str) -> tuple[int, ...]:
        """Token ids of an answer as the model writes it right after its generation prompt.

        The answer is tokenized behind the end of the generation prompt and its own tokens are kept, so a
        tokenizer that merges across the boundary or marks word starts gets the ids generation produces; after
        a prompt ending in a non-space character (LLaVA-1.5's "ASSISTANT:", Idefics3's "Assistant:") the answer
        starts with a space, as those models write it ("a" becomes " a").

        Raises:
            ValueError: The text encodes to no token.
        """
        ids = self._answer_ids.get(text)
        if ids is None:
            tokenizer = self.processor.tokenizer
            if getattr(self.processor, "chat_template", None) is None:
                context = "\n"  # PaliGemma's processor ends every prompt with a newline
            else:
                prompt = self.build_prompts(["?"])[0]
                context = "\n" if prompt.endswith("\n") else prompt.rsplit("\n", 1)[-1][-32:]
            joined = context + ("" if not context or context[-1].isspace() else " ") + text
            head = tokenizer(context, add_special_tokens=False)["input_ids"]
            full = tokenizer(joined, add_special_tokens=False)["input_ids"]
            if full[:len(head)] == head:
                ids = tuple(full[len(head):])
            else:  # the boundary merged into the prompt's last token: tokenize the answer on its own
                ids = tuple(tokenizer(joined[len(context):], add_special_tokens=False)["input_ids"])
            if not ids:
                raise ValueError(f"answer {text!r} encodes to no token")
            self._answer_ids[text] = ids
        return ids

    def score_options(self, images: Sequence[np.ndarray], questions: Sequence[str],
                      options: Sequence[Sequence[str]], batch_size: int = 8) -> np.ndarray:
        """Log-probability of each option's answer text as the continuation of the item's prompt.

        The prompt (image + question in the chat template, up to the generation prompt) runs through the model
        once per item, and every option's first token is read from the last position's logits; when options have
        more tokens, the prompt's KV cache is gathered once per such option and their other tokens run through
        the model in one more pass. Left padding with positions from the attention mask (as `generate` uses) keeps
        the scores independent of the batch size and of the tokenizer's saved padding side.

        Memory: the second pass holds one copy of an item's prompt cache per distinct option beginning, so
        `batch_size` bounds it (letter answers "a", "(a", "b", "(b" need one copy per item).

        Args:
            images: N uint8 canvases [H, W, 3] (RGB), handed to the processor as they are.
            questions: N user messages.
            options: N sequences of K answer texts (e.g. ["a", "b"] or ["(a) tench", "(b) pizza"]), tokenized by
                `encode_answer`.
            batch_size: Items per forward pass.

        Returns:
            float64 [N, K]: log p(option tokens | prompt), summed over the option's tokens (<= 0).
        """
        n = _check_batch(images, questions)
        if len(options) != n or len({len(o) for o in options}) > 1 or (n and not options[0]):
            raise ValueError("options must hold the same number (>= 1) of answers for every item")
        k = len(options[0]) if n else 0
        out = np.zeros((n, k), dtype=np.float64)
        for start in range(0, n, _check_batch_size(batch_size)):
            stop = min(start + batch_size, n)
            ids = [[self.encode_answer(text) for text in options[i]] for i in range(start, stop)]
            out[start:stop] = self._score_batch(images[start:stop], questions[start:stop], ids)
        return out

    def generate_answers(self, images: Sequence[np.ndarray], questions: Sequence[str], max_new_tokens: int = 16,
                         batch_size: int = 8) -> list[str]:
        """Greedy answers (at most `max_new_tokens` new tokens, special tokens dropped, whitespace stripped).

        Args:
            images: N uint8 canvases [H, W, 3] (RGB), handed to the processor as they are.
            questions: N user messages.
            max_new_tokens: Upper bound on each answer's length in tokens.
            batch_size: Items per `generate` call (left-padded).
        """
        n = _check_batch(images, questions)
        if max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
        tokenizer = self.processor.tokenizer
        answers: list[str] = []
        for start in range(0, n, _check_batch_size(batch_size)):
            inputs = self.build_inputs(images[start:start + batch_size], questions[start:start + batch_size])
            with torch.inference_mode():
                generated = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                                temperature=None, top_p=None, top_k=None,
                                                pad_token_id=tokenizer.pad_token_id)
            new = generated[:, inputs["input_ids"].shape[1]:]
            answers += [text.strip() for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
        return answers

    def build_prompts(self, questions: Sequence[str]) -> list[str]:
        """The prompt text of each question: one user turn (the image, then the question) in the model's chat
        template, ending with the generation prompt (the processor expands the image placeholder)."""
        if getattr(self.processor, "chat_template", None) is None:
            # A prompt-only family (PaliGemma): the processor expands the image token and adds BOS and "\n".
            return [f"{self.processor.image_token}{q}" for q in questions]
        conversations = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
                         for q in questions]
        return list(self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False))

    def build_inputs(self, images: Sequence[np.ndarray], questions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Processor outputs for a batch (left-padded), on the model's device, floats in the model's dtype."""
        pil = [[_to_pil(image)] for image in images]
        prompts = self.build_prompts(questions)
        bos = self.processor.tokenizer.bos_token
        # A template that writes BOS itself must not get a second one from the tokenizer (as transformers'
        # own apply_chat_template(tokenize=True) decides).
        special = not (bos and all(p.startswith(bos) for p in prompts))
        with _left_padding(self.processor.tokenizer):
            batch = self.processor(images=pil, text=prompts, padding=True, add_special_tokens=special,
                                   return_tensors="pt")
        dtype = _DTYPES[self.precision]
        return {key: value.to(self.device, dtype=dtype if value.is_floating_point() else None)
                for key, value in batch.items() if isinstance(value, torch.Tensor) and key != "labels"}

    def _score_batch(self, images: Sequence[np.ndarray], questions: Sequence[str],
                     option_ids: list[list[tuple[int, ...]]]) -> np.ndarray:
        """log p of every option [B, K] for one batch (see `score_options`)."""
        inputs = self.build_inputs(images, questions)
        longest = max(len(ids) for row in option_ids for ids in row)
        with torch.inference_mode():
            # The inputs of generate()'s first step (its own two helpers, so each family's conventions hold):
            # positions from the attention mask, [B, L] or [R, B, L] for multimodal RoPE (PaliGemma counts from 1).
            input_ids = inputs.pop("input_ids")
            positions = self.model._prepare_position_ids_for_generation(input_ids, {"input_ids": input_ids, **inputs})
            step = self.model.prepare_inputs_for_generation(input_ids, position_ids=positions, use_cache=longest > 1,
                                                            is_first_iteration=True, **inputs)
            positions = step["position_ids"]
            if _accepts(self.model, "logits_to_keep"):
                step["logits_to_keep"] = 1
            out = self.model(**step)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # [B, V]
            first_ids = torch.tensor([[ids[0] for ids in row] for row in option_ids], device=first.device)
            scores = first.gather(1, first_ids).double()  # [B, K]
            if longest > 1:
                cache = out.cache if hasattr(out, "cache") else out.past_key_values
                scores += self._score_option_tails(cache, inputs["attention_mask"], positions, option_ids, longest)
        return scores.cpu().numpy()

    def _score_option_tails(self, cache: Any, prompt_mask: torch.Tensor, positions: torch.Tensor,
                            option_ids: list[list[tuple[int, ...]]], longest: int) -> torch.Tensor:
        """Summed log p of every option's tokens after its first [B, K], from the prompt's KV cache.

        An option of n >= 2 tokens needs the logits after its first n - 1 tokens (its feed). One row of the
        second pass holds the KV cache of its item and one feed (right-padded to longest - 1); a feed that is a
        prefix of another feed of the same item is read from that longer row (causal attention makes its logits
        the same), so options that share a beginning ("(a" and "(b") share their row.
        """
        b, k = len(option_ids), len(option_ids[0])
        rows: list[tuple[int, tuple[int, ...]]] = []
        reads: list[tuple[int, int, tuple[int, ...]]] = []  # (option index, row, option tokens)
        for item, options in enumerate(option_ids):
            feeds = sorted({ids[:-1] for ids in options if len(ids) > 1}, key=len, reverse=True)
            kept: list[int] = []
            for feed in feeds:
                if not any(rows[r][1][:len(feed)] == feed for r in kept):
                    kept.append(len(rows))
                    rows.append((item, feed))
            for j, ids in enumerate(options):
                if len(ids) > 1:
                    row = next(r for r in kept if rows[r][1][:len(ids) - 1] == ids[:-1])
                    reads.append((item * k + j, row, ids))
        steps = longest - 1
        feed = np.full((len(rows), steps), self.processor.tokenizer.pad_token_id or 0, dtype=np.int64)
        for r, (_, tokens) in enumerate(rows):
            feed[r, :len(tokens)] = tokens
        lengths = np.array([len(tokens) for _, tokens in rows])
        device = prompt_mask.device
        items = torch.tensor([item for item, _ in rows], device=device)
        valid = torch.from_numpy(np.arange(steps)[None, :] < lengths[:, None]).to(device)
        mask = torch.cat([prompt_mask[items], valid.to(prompt_mask.dtype)], dim=1)
        # Text positions continue from the prompt's last token (left padding: the last column) in every RoPE row.
        steps_pos = positions[..., -1:].index_select(-2, items) + 1 + torch.arange(steps, device=device)
        cache.batch_select_indices(items)
        out = self.model(input_ids=torch.from_numpy(feed).to(device), attention_mask=mask, position_ids=steps_pos,
                         cache=cache, use_cache=True)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        # Token t + 1 of an option is scored by its row's logits at step t.
        index = np.array([(option, row, t, ids[t + 1]) for option, row, ids in reads for t in range(len(ids) - 1)])
        option, row, step, token = (torch.from_numpy(index[:, c]).to(device) for c in range(4))
        sums = torch.zeros(b * k, dtype=torch.float64, device=device)
        sums.index_add_(0, option, logp[row, step, token].double())
        return sums.view(b, k)


def create_vision_language_model(name: str, device: torch.device, precision: Precision,
                                 trust_remote_code: bool = False) -> VisionLanguageModel:
    """Load a vision-language chat model for scoring.

    Args:
        name: A folder written by `save_pretrained` (model and processor), or a Hub id (`ORG/NAME`) resolved
            from the Hugging Face cache without network access.
        device: Where the model runs.
        precision: fp32, bf16, or fp16 (CUDA only); the weights are loaded in that dtype.
        trust_remote_code: Allow a repository's own Python code (models transformers does not know).

    Raises:
        WeightsError: The folder or the cached model is missing, or its files cannot be loaded.
        ConfigError: The model is not a vision-language model this backend can run, needs
            `--trust-remote-code`, or fp16 is asked for on a CPU.
    """
    from transformers import AutoModelForImageTextToText

    if precision is Precision.FP16 and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")
    folder, weights_id, family, processor = _load_processor(name, trust_remote_code)
    try:
        model = AutoModelForImageTextToText.from_pretrained(folder, dtype=_DTYPES[precision],
                                                            trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise _load_error(name, "weights", exc) from None
    model = model.to(device).eval()
    return VisionLanguageModel(name=name, family=family, weights_id=weights_id,
                               native_image_size=get_native_image_size(processor.image_processor), device=device,
                               precision=precision, model=model, processor=processor)


@dataclass(frozen=True)
class ModelFacts:
    """What a vision-language model's files say before its weights load (`check_vision_language_model`).

    Attributes:
        weights_id: As `VisionLanguageModel.weights_id`.
        family: The config's model_type.
        native_image_size: (height, width) of the model's fixed input, or None (`get_native_image_size`).
        canvas_size: The default square canvas (`get_default_canvas_size`), or None when the processor
            gives no size to go by.
    """

    weights_id: str
    family: str
    native_image_size: tuple[int, int] | None
    canvas_size: tuple[int, int] | None


def check_vision_language_model(name: str, trust_remote_code: bool = False) -> ModelFacts:
    """Check that a model can be loaded by this backend and read its input sizes, without loading its weights
    (the folder or cached snapshot, its config, its processor and chat template).

    Raises:
        WeightsError: The folder or the cached model, or its processor, tokenizer or chat template, is missing.
        ConfigError: The model is not a vision-language model this backend can run, or needs
            `--trust-remote-code`.
    """
    _, weights_id, family, processor = _load_processor(name, trust_remote_code)
    return ModelFacts(weights_id, family, get_native_image_size(processor.image_processor),
                      get_default_canvas_size(processor.image_processor))


def _load_processor(name: str, trust_remote_code: bool) -> tuple[Path, str, str, Any]:
    """(folder, weights id, family, AutoProcessor) of a model, its config, processor and chat template checked.

    Raises:
        WeightsError, ConfigError: As `create_vision_language_model`.
    """
    from transformers import AutoProcessor

    folder, weights_id = resolve_model_folder(name)
    family = check_model_config(name, folder, trust_remote_code)
    try:
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise _load_error(name, "processor", exc) from None
    if getattr(processor, "image_processor", None) is None or getattr(processor, "tokenizer", None) is None:
        raise WeightsError(f"{name}: no image processor and tokenizer found (processor_config.json or "
                           f"preprocessor_config.json, tokenizer files); {_SUPPLY_HELP}")
    if getattr(processor, "chat_template", None) is None and family not in _PROMPT_ONLY_FAMILIES:
        raise WeightsError(f"{name}: the processor has no chat template (chat_template.jinja or chat_template.json); "
                           "copy the model's template into the folder")
    return folder, weights_id, family, processor


def resolve_model_folder(name: str) -> tuple[Path, str]:
    """The local folder of a model name and the id of its weights.

    A name that is an existing folder is used as it is (weights id: a hash of its files' content); any
    other name is a Hub id looked up in the Hugging Face cache, offline (weights id: `ID@COMMIT`).

    Raises:
        WeightsError: A path that does not exist, or a Hub id not in the cache.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve(), f"folder:{hash_folder(path)}"
    if path.exists():
        raise WeightsError(f"model {name}: is a file; pass the folder that save_pretrained wrote")
    looks_like_path = name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name
    if looks_like_path:
        raise WeightsError(f"model folder {name} does not exist; {_SUPPLY_HELP}")
    try:
        snapshot = Path(snapshot_download(repo_id=name, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError, ValueError):
        raise WeightsError(f"model {name}: no such folder and not in the Hugging Face cache (offline); "
                           f"{_SUPPLY_HELP}") from None
    return snapshot, f"{name}@{snapshot.name}"


def hash_folder(folder: Path) -> str:
    """SHA-256 (first 16 hex digits) of every file's relative path and bytes in a folder, hidden entries
    (such as the Hub client's `.cache`) excluded."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 23):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def check_model_config(name: str, folder: Path, trust_remote_code: bool) -> str:
    """The model family (config model_type) of a folder, after checking this backend can run it.

    Raises:
        WeightsError: No readable config.json.
        ConfigError: The model needs its own code and `trust_remote_code` is off, or it is not an
            image-text-to-text model.
    """
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config_file = folder / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError):
        raise WeightsError(f"model {name}: no readable config.json in {folder}; {_SUPPLY_HELP}") from None
    model_type = raw.get("model_type", "")
    auto_map = raw.get("auto_map") or {}
    if model_type not in CONFIG_MAPPING:
        if not auto_map:
            raise ConfigError(f"model {name}: model_type {model_type!r} is unknown to transformers; it is not a "
                              "vision-language model this backend can load")
        if not trust_remote_code:
            raise ConfigError(f"model {name} runs its own code from the repository (auto_map in config.json); "
                              "pass --trust-remote-code if you trust it")
        if "AutoModelForImageTextToText" not in auto_map:
            classes = ", ".join(sorted(auto_map))
            raise ConfigError(f"model {name}: its code registers {classes}, not AutoModelForImageTextToText; "
                              "this backend cannot run it")
        return model_type
    config_class = type(AutoConfig.for_model(model_type)).__name__
    if model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise ConfigError(f"model {name}: {config_class} ({model_type}) is not an image-text-to-text model "
                          f"(AutoModelForImageTextToText); supported families: {', '.join(TESTED_FAMILIES)}")
    return model_type


def get_native_image_size(image_processor: Any) -> tuple[int, int] | None:
    """(height, width) the image processor turns every image into, or None when it keeps the aspect ratio
    (any-res tiles, image splitting, dynamic resolution, shortest-edge resize without a crop)."""
    if getattr(image_processor, "image_grid_pinpoints", None) or getattr(image_processor, "do_image_splitting", False) \
            or getattr(image_processor, "do_pan_and_scan", False):
        return None
    if getattr(image_processor, "do_center_crop", False):
        crop = _size_fields(getattr(image_processor, "crop_size", None))
        if "height" in crop and "width" in crop:
            return int(crop["height"]), int(crop["width"])
    size = _size_fields(getattr(image_processor, "size", None))
    if getattr(image_processor, "do_resize", True) and "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    return None


QWEN_CANVAS_SIDE = 448
"""Side of the default canvas of a dynamic-resolution processor without tiles (Qwen2-VL)."""


def get_default_canvas_size(image_processor: Any) -> tuple[int, int] | None:
    """(height, width) of the canvas a task draws for a model: its native size where the processor has one,
    else a square of its tile, else (dynamic resolution: Qwen2-VL) QWEN_CANVAS_SIDE rounded down to a
    multiple of patch x merge size within the processor's pixel bounds; None when the processor gives no
    size (the user must choose one). See the module docstring."""
    native = get_native_image_size(image_processor)
    if native is not None:
        return native
    size = _size_fields(getattr(image_processor, "size", None))
    if getattr(image_processor, "image_grid_pinpoints", None):
        crop = _size_fields(getattr(image_processor, "crop_size", None))
        side = crop.get("height") or size.get("height") or size.get("shortest_edge")
    elif getattr(image_processor, "do_image_splitting", False):
        side = _size_fields(getattr(image_processor, "max_image_size", None)).get("longest_edge")
    elif getattr(image_processor, "patch_size", None) and getattr(image_processor, "merge_size", None):
        factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        low = getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or factor * factor
        high = getattr(image_processor, "max_pixels", None) or size.get("longest_edge") or QWEN_CANVAS_SIDE ** 2
        side = min(QWEN_CANVAS_SIDE, int(high ** 0.5)) // factor * factor
        side = max(side, -(-int(low ** 0.5) // factor) * factor)
    else:
        side = size.get("height") or size.get("shortest_edge") or size.get("longest_edge")
    return None if not side else (int(side), int(side))


def _size_fields(size: Any) -> dict[str, Any]:
    """The set fields of a processor size (a dict or a SizeDict)."""
    if size is None:
        return {}
    if isinstance(size, dict):
        return {k: v for k, v in size.items() if v is not None}
    return {k: getattr(size, k) for k in ("height", "width", "shortest_edge", "longest_edge")
            if getattr(size, k, None) is not None}


def _load_error(name: str, part: str, exc: Exception) -> Exception:
    """One-line error for a processor or model that failed to load."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "trust_remote_code" in str(exc):
        return ConfigError(f"model {name}: its {part} runs code from the repository; pass --trust-remote-code "
                           "if you trust it")
    return WeightsError(f"model {name}: cannot load its {part} ({text[:200]}); {_SUPPLY_HELP}")


def _to_pil(image: np.ndarray) -> Image.Image:
    """The canvas as an RGB PIL image, pixel for pixel (unambiguous channel layout for the processor)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] canvas, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


def _check_batch(images: Sequence[np.ndarray], questions: Sequence[str]) -> int:
    if len(images) != len(questions):
        raise ValueError(f"{len(images)} images but {len(questions)} questions")
    return len(images)


def _check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    return batch_size


def _accepts(model: Any, argument: str) -> bool:
    return argument in inspect.signature(model.forward).parameters


@contextlib.contextmanager
def _left_padding(tokenizer: Any) -> Iterator[None]:
    """Pad on the left while inside (the last prompt token then sits in the last column)."""
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = previous
