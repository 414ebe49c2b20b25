"""Vision-language chat models on `transformers` (AutoModelForImageTextToText + AutoProcessor + chat
template) behind the `ChatBackend` protocol (`TransformersChatBackend`, the vlm task's models): loading
from a save_pretrained folder or the Hugging Face cache (`chat_files`), option log-likelihoods from one
forward pass over the shared prompt, and greedy answers. The canvas handed to a processor is drawn
with open_clip's default eval transform at the canvas size (`get_canvas_geometry`), so that eval and
vlm share the canvas cache; each processor's own resizing is described in `chat_files`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from typoattack.backends.base import ChatBackend, ChatModelFacts, InputGeometry, check_precision
from typoattack.backends.transformers.chat_files import (
    VLM_FEATURE, check_vision_language_model, describe_load_error, get_native_image_size, load_processor,
)
from typoattack.backends.transformers.library import get_transformers_version, quiet_loading, require_transformers
from typoattack.config.types import Precision
from typoattack.errors import ConfigError

CHAT_BACKEND_NAME = "transformers"
CANVAS_BACKEND = "open_clip"
"""The zero-shot backend whose default eval transform (bicubic resize of the shortest side, centre crop) draws the
canvases: eval's canvases of an open_clip model of that input size."""
_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


@dataclass(frozen=True, eq=False)
class VisionLanguageModel:
    """A loaded vision-language chat model with what scoring needs.

    Attributes:
        name: What the user asked for (folder path or Hub id).
        family: The config's model_type (`llava`, `qwen2_vl`, `idefics3`, ...).
        weights_id: `ORG/NAME@COMMIT` for a Hub model, `folder:SHA256` (content hash of the folder's files) for a
            folder; changes whenever the weights, config or processor change.
        native_image_size: (height, width) of the model's own fixed input, or None when its processor keeps the
            aspect ratio (tiles, dynamic resolution); see `chat_files`.
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
            `--trust-remote-code`, fp16 is asked for on a CPU, or transformers is not installed
            (MissingExtraError).
    """
    require_transformers(VLM_FEATURE)
    from transformers import AutoModelForImageTextToText

    check_precision(precision, device)
    folder, weights_id, family, processor = load_processor(name, trust_remote_code)
    try:
        with quiet_loading():  # no "Loading weights" bar: the CLI shows its own progress
            model = AutoModelForImageTextToText.from_pretrained(folder, dtype=_DTYPES[precision],
                                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise describe_load_error(name, "weights", exc) from None
    model = model.to(device).eval()
    return VisionLanguageModel(name=name, family=family, weights_id=weights_id,
                               native_image_size=get_native_image_size(processor.image_processor), device=device,
                               precision=precision, model=model, processor=processor)


class TransformersChatBackend(ChatBackend):
    """The vlm task's models: any AutoModelForImageTextToText model with a processor and chat template (the
    families of `chat_files.TESTED_FAMILIES` are the ones written and tested for), from a save_pretrained
    folder or the Hugging Face cache, offline."""

    name = CHAT_BACKEND_NAME

    def check_model(self, name: str, trust_remote_code: bool = False) -> ChatModelFacts:
        """See `chat_files.check_vision_language_model`."""
        return check_vision_language_model(name, trust_remote_code)

    def load(self, name: str, device: torch.device, precision: Precision,
             trust_remote_code: bool = False) -> VisionLanguageModel:
        """See `create_vision_language_model`."""
        return create_vision_language_model(name, device, precision, trust_remote_code)

    def get_canvas_geometry(self, size: int) -> InputGeometry:
        """open_clip's default eval transform at `size` (bicubic resize of the shortest side, centre crop): the
        canvases of eval for an open_clip model of that input size, shared with it through the canvas cache."""
        from typoattack.backends.registry import get_backend

        return get_backend(CANVAS_BACKEND).get_default_geometry(size)

    def get_version(self) -> str:
        """transformers' version ("" when it is not installed)."""
        return get_transformers_version()


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
