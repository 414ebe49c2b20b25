"""The Backend protocol: what every task needs from a family of contrastive image-text models.

A backend (open_clip, transformers, ...) turns a `ModelSpec` into a `ZeroShotModel`: a loaded model
with the geometry of its input (the canvas the attack is drawn on and the normalisation after it),
an image encoder over canvases, a text encoder, and the hooks defences need (attention heads, a
learned prompt token). Device, precision and the on-disk classifier cache are resolved here, once,
for every backend.

A chat backend (`ChatBackend`) does the same for vision-language chat models (the `vlm` task): it
checks a model's files without its weights (`ChatModelFacts`), loads it as a `ChatModel` (option
log-likelihoods, greedy answers), and gives the canvas geometry the task draws its images with.

Tasks import this module and `typoattack.backends.registry`, never a family's module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from typoattack.config.types import ModelSpec, Precision
from typoattack.errors import ConfigError
from typoattack.files import expand_path, get_label_slug, write_atomic

CanvasTransform = Callable[[Image.Image], Image.Image]
Head = tuple[int, int]


@dataclass(frozen=True)
class InputGeometry:
    """How a model sees an image: the canvas the attack is drawn on, then the normalisation.

    Attributes:
        size: (height, width) of the canvas, the model's input.
        transform: PIL -> PIL RGB image of `size`: the model's own resize and crop, no normalisation.
        key: Identifies `transform` (it keys the canvas cache: two models with the same key share it).
        mean: Per-channel normalisation mean for pixel values in [0, 1] (RGB).
        std: Per-channel normalisation std.
    """

    size: tuple[int, int]
    transform: CanvasTransform
    key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class HeadRecord:
    """What an attention-head hook yields per vision block while recording.

    Attributes:
        weights: float32 [B, n_heads, L] attention over all L tokens of the last forward pass: the
            class token's where the tower has one (token 0, then the patches row by row), else the
            average over the queries; None before a pass.
        first_patch: Index of the first patch token along the last axis of `weights`.
    """

    weights: torch.Tensor | None = None
    first_patch: int = 1


class ZeroShotModel(ABC):
    """A loaded contrastive image-text model, ready to classify canvases zero-shot.

    Attributes:
        spec: What was asked for.
        backend: The backend's name (ModelSpec.backend).
        device: Where the model runs.
        precision: Encoder precision (weights stay fp32; bf16/fp16 run under autocast).
        weights_id: Changes whenever the weights change (keys the classifier cache).
        geometry: The canvas and normalisation of the model's input.
        logit_scale: Logits are `logit_scale * cos(image, class) + logit_bias`.
        logit_bias: See `logit_scale` (0 for CLIP; SigLIP's learned bias).
        model: The underlying torch module, in eval mode on `device`.
        library_version: The version of the family's library (keys the classifier cache).
    """

    spec: ModelSpec
    backend: str
    device: torch.device
    precision: Precision
    weights_id: str
    geometry: InputGeometry
    logit_scale: float = 100.0
    logit_bias: float = 0.0
    model: torch.nn.Module
    library_version: str = ""

    @property
    def canvas_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.geometry.size

    @property
    def family(self) -> str:
        """A short description of the architecture for messages (e.g. `open_clip VisionTransformer`)."""
        return f"{self.backend} {type(self.model).__name__}"

    @abstractmethod
    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Image features of a batch of canvases.

        Args:
            x: uint8 or float32 [B, H, W, 3] RGB canvases with values 0-255 on `device`, (H, W) =
                `geometry.size`.

        Returns:
            float [B, D] L2-normalised features (the encoder runs under the precision's autocast).
        """

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """float32 [N, D] L2-normalised text features of `texts`, with the family's own text settings
        (tokenizer, padding, context length), in fp32."""

    def build_classifier(self, classnames: Sequence[str], templates: Sequence[str],
                         progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """The zero-shot classifier: per class, the templates' features averaged and L2-normalised
        (as open_clip's `build_zero_shot_classifier`).

        Args:
            classnames: Class names, in class-index order.
            templates: Format strings with one `{}`.
            progress: Called with the number of classes done since the last call.

        Returns:
            float32 [D, n_classes] on `device`.
        """
        columns = []
        with torch.inference_mode():
            for name in classnames:
                features = self.encode_texts([t.format(name) for t in templates]).float()
                mean = features.mean(dim=0)
                columns.append(mean / mean.norm())
                if progress:
                    progress(1)
        return torch.stack(columns, dim=1)

    # --- what defences need; a family without the hook says so in one line -------------------

    def get_head_grid(self) -> tuple[int, int]:
        """(layers, heads per layer) of the vision tower's attention.

        Raises:
            ConfigError: The family's vision tower cannot be split per head.
        """
        raise ConfigError(f"head ablation is not supported for {self.family} ({self.spec.label})")

    def ablate_heads(self, heads: Sequence[Head], record: bool = False
                     ) -> contextlib.AbstractContextManager[list[HeadRecord]]:
        """A context within which the vision tower runs with the class-token output of `heads`
        ((layer, head) pairs) zeroed. With `record`, every block is hooked and the yielded list (one
        per layer) holds the class-token attention of the last forward pass; otherwise it holds the
        hooked blocks only.

        Raises:
            ConfigError: Unsupported tower, or a head out of range.
        """
        raise ConfigError(f"head ablation is not supported for {self.family} ({self.spec.label})")

    def get_patch_size(self) -> int:
        """Side in canvas pixels of one vision patch (square), for pooling pixel masks to tokens.

        Raises:
            ConfigError: The tower has no patch grid (a CNN).
        """
        raise ConfigError(f"{self.family} ({self.spec.label}) has no patch grid")

    def get_text_width(self) -> int:
        """D, the width of the text tower's token embeddings (a Defense-Prefix vector's length).

        Raises:
            ConfigError: The family's text tower cannot take a learned token.
        """
        raise ConfigError(f"Defense-Prefix is not supported for {self.family} ({self.spec.label})")

    def build_prefix_classifier(self, classnames: Sequence[str], vector: torch.Tensor, prompt: str,
                                progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """The zero-shot classifier of Defense-Prefix prompts: `prompt.format(name)` holds one `*`,
        whose token embedding is replaced by `vector` (float32 [D]); one prompt per class.

        Returns:
            float32 [D_embed, n_classes] on `device`.

        Raises:
            ConfigError: Unsupported text tower, or a tokenizer that splits `*`.
        """
        raise ConfigError(f"Defense-Prefix is not supported for {self.family} ({self.spec.label})")


class Backend(ABC):
    """A family of models: names, weights, geometry and loading.

    Attributes:
        name: The `--backend` value.
    """

    name: str

    @abstractmethod
    def check_model(self, spec: ModelSpec, cache_dir: str | None = None) -> None:
        """Fail before any run starts when the model cannot be had: unknown name, bad pretrained
        value, or weights neither local nor reachable (the message says how to supply them).

        Raises:
            WeightsError: As above.
        """

    @abstractmethod
    def get_input_size(self, spec: ModelSpec) -> tuple[int, int] | None:
        """(height, width) of the model input from its config alone, or None when only loading
        tells (then masks are solved when the model loads)."""

    @abstractmethod
    def get_geometry(self, spec: ModelSpec) -> InputGeometry:
        """The model's input geometry without loading its weights (to prepare canvases).

        Raises:
            WeightsError: The model is unknown, or its preprocessing cannot be known offline.
        """

    def get_default_geometry(self, size: int) -> InputGeometry:
        """The family's usual input geometry for a square input of `size` pixels (to preview an
        attack without a model).

        Raises:
            ConfigError: The family has no such default.
        """
        raise ConfigError(f"the {self.name} backend has no default input geometry")

    @abstractmethod
    def get_weights_id(self, spec: ModelSpec) -> str:
        """A string that changes whenever the weights the spec loads change."""

    @abstractmethod
    def load(self, spec: ModelSpec, device: torch.device, precision: Precision,
             compile: bool = False) -> ZeroShotModel:
        """Load the model on `device` (eval mode; `compile` wraps the image encoder in torch.compile).

        Raises:
            WeightsError: The weights cannot be found or loaded.
        """

    @abstractmethod
    def list_models(self) -> list[str]:
        """The model names this backend knows without a download."""

    def list_pretrained(self, name: str) -> list[str]:
        """The pretrained values known for model `name` (empty when weights are given otherwise)."""
        return []

    def get_version(self) -> str:
        """The version of the backend's library (keys caches and run.json)."""
        return ""

    def get_default_templates(self, spec: ModelSpec) -> tuple[str, ...]:
        """The zero-shot templates the model's family recommends (`--templates family`); empty when
        it recommends none."""
        return ()



@dataclass(frozen=True)
class ChatModelFacts:
    """What a vision-language chat model's files say before its weights load (`ChatBackend.check_model`).

    Attributes:
        weights_id: Changes whenever the weights, config or processor change (as `ChatModel.weights_id`).
        family: The architecture (e.g. transformers' config model_type: `llava`, `qwen2_vl`).
        native_image_size: (height, width) of the model's own fixed input, or None when its processor keeps
            the aspect ratio (tiles, dynamic resolution).
        canvas_size: (height, width) of the default canvas the task draws for the model, or None when the
            processor gives no size to go by (the user must choose one).
    """

    weights_id: str
    family: str
    native_image_size: tuple[int, int] | None
    canvas_size: tuple[int, int] | None


class ChatModel(Protocol):
    """A loaded vision-language chat model, as the vlm task asks it questions.

    Attributes:
        name: What the user asked for (folder path or Hub id).
        family: The architecture (`ChatModelFacts.family`).
        weights_id: As `ChatModelFacts.weights_id`.
    """

    name: str
    family: str
    weights_id: str

    def score_options(self, images: Sequence[np.ndarray], questions: Sequence[str],
                      options: Sequence[Sequence[str]], batch_size: int = 8) -> np.ndarray:
        """float64 [N, K]: log p(option's answer text | the item's prompt) of each item's K options (<= 0).

        Args:
            images: N uint8 canvases [H, W, 3] (RGB).
            questions: N user messages.
            options: N sequences of K answer texts.
            batch_size: Items per forward pass.
        """
        ...

    def generate_answers(self, images: Sequence[np.ndarray], questions: Sequence[str], max_new_tokens: int = 16,
                         batch_size: int = 8) -> list[str]:
        """Greedy answers of at most `max_new_tokens` tokens (whitespace stripped), one per item."""
        ...


class ChatBackend(ABC):
    """A family of vision-language chat models: checks without weights, loading, and the canvas geometry.

    Attributes:
        name: The backend's name (the `backend` of the vlm task's model specs).
    """

    name: str

    @abstractmethod
    def check_model(self, name: str, trust_remote_code: bool = False) -> ChatModelFacts:
        """Check that a model can be loaded and read its input sizes, without loading its weights.

        Raises:
            WeightsError: The model's files are missing or unreadable (the message says how to supply them).
            ConfigError: The model is not one this backend runs, needs `--trust-remote-code`, or the backend's
                library is not installed.
        """

    @abstractmethod
    def load(self, name: str, device: torch.device, precision: Precision,
             trust_remote_code: bool = False) -> ChatModel:
        """Load the model on `device` in `precision` (eval mode).

        Raises:
            WeightsError, ConfigError: As `check_model`; also fp16 on a CPU.
        """

    @abstractmethod
    def get_canvas_geometry(self, size: int) -> InputGeometry:
        """How an image becomes the square canvas of `size` pixels handed to the family's models (their
        processor does the rest); its `key` keys the canvas cache."""

    def get_version(self) -> str:
        """The version of the backend's library (run.json)."""
        return ""

def resolve_device(name: str) -> torch.device:
    """Turn 'auto', 'cpu', 'cuda' or 'cuda:N' into a device that exists.

    Raises:
        ConfigError: The name is unknown, or CUDA is asked for and not available.
    """
    text = name.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} asked for, but no CUDA GPU is visible; use --device cpu or auto")
        index = text.partition(":")[2]
        if index and (not (index.isascii() and index.isdigit()) or int(index) >= torch.cuda.device_count()):
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device(text)
    raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def describe_device(device: torch.device) -> str:
    """A description of a device for run.json (GPU name, or CPU, cores and threads)."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def check_precision(precision: Precision, device: torch.device) -> None:
    """Raise ConfigError for a precision the device cannot run (fp16 on CPU)."""
    if precision is Precision.FP16 and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 (or bf16) on CPU")


def get_autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of a precision (a no-op context for fp32)."""
    if precision is Precision.FP32:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision is Precision.BF16 else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def encode_features(model: ZeroShotModel, x: torch.Tensor) -> torch.Tensor:
    """float32 [B, D] L2-normalised image features of uint8 or float32 [B, H, W, 3] canvases (values
    0-255) on the model's device, in inference mode (the encoder runs in the model's precision)."""
    with torch.inference_mode():
        return model.encode_images(x).float()


def get_logits(model: ZeroShotModel, features: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """float32 [B, n_classes] zero-shot logits `logit_scale * features @ classifier + logit_bias` of
    float32 [B, D] features and a float32 [D, n_classes] classifier, in fp32."""
    with torch.inference_mode():
        logits = model.logit_scale * features @ classifier
        if model.logit_bias:
            logits = logits + model.logit_bias
    return logits


def build_logits(model: ZeroShotModel, classifier: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits of a batch of canvases on the model's device.

    Args:
        model: The model.
        classifier: float32 [D, n_classes] (from `get_classifier` or a defence).
        x: uint8 or float32 [B, H, W, 3] RGB canvases, values 0-255.

    Returns:
        float32 [B, n_classes] (see `get_logits`), computed in fp32 whatever the encoder's precision.
    """
    return get_logits(model, encode_features(model, x), classifier)


def get_classifier_cache_path(model: ZeroShotModel, classnames: Sequence[str], templates: Sequence[str],
                              cache_dir: str | Path, kind: str = "templates", extra: str = "") -> Path:
    """Where the classifier of (backend, weights, class names, prompts) is cached.

    Args:
        kind: What the prompts are (`templates`, `prefix`): part of the file name and the key.
        extra: More that determines the classifier (e.g. the hash of a prefix vector).
    """
    key = json.dumps({"backend": model.backend, "weights": model.weights_id, "classnames": list(classnames),
                      "templates": list(templates), "kind": kind, "extra": extra,
                      "version": model.library_version})
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    suffix = "" if kind == "templates" else f"-{kind}"
    return expand_path(cache_dir) / "classifiers" / f"{get_label_slug(model.spec.label)}{suffix}-{digest}.pt"


def load_or_build_classifier(path: Path, device: torch.device, n_classes: int, build: Callable[[], torch.Tensor],
                             progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """A classifier from the disk cache at `path`, or `build()` it and cache it (atomically).

    Returns:
        (float32 [D, n_classes] on `device`, loaded_from_cache).
    """
    if path.is_file():
        weights = torch.load(path, map_location=device, weights_only=True)
        if progress:
            progress(n_classes)
        return weights, True
    weights = build().float()
    write_atomic(path, lambda tmp: torch.save(weights.cpu(), tmp))
    return weights, False


def get_classifier(model: ZeroShotModel, classnames: Sequence[str], templates: Sequence[str],
                   cache_dir: str | Path, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """The zero-shot classifier of the model over `classnames` with `templates`, from the disk
    cache (keyed by backend, weights, class names and templates) or built and cached.

    Returns:
        (float32 [D, n_classes] on the model's device, loaded_from_cache).
    """
    path = get_classifier_cache_path(model, classnames, templates, cache_dir)
    return load_or_build_classifier(path, model.device, len(classnames),
                                    lambda: model.build_classifier(classnames, templates, progress), progress)


@contextlib.contextmanager
def no_heads() -> Iterator[list[HeadRecord]]:
    """The context of an empty head set (nothing ablated, nothing recorded)."""
    yield []
