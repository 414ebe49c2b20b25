"""A loaded transformers image-text model as a `ZeroShotModel`: canvases through the model's own
rescale and normalisation into `get_image_features`, texts through its tokenizer with the family's
padding into `get_text_features`, logits with the model's own scale and bias."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from typoattack.backends.base import Head, HeadRecord, InputGeometry, ZeroShotModel, get_autocast
from typoattack.backends.transformers import heads as tower_heads
from typoattack.backends.transformers import prefix as text_prefix
from typoattack.backends.transformers.families import Family, get_pooled
from typoattack.backends.transformers.geometry import NaflexCanvas
from typoattack.backends.transformers.library import get_transformers_version
from typoattack.backends.transformers.weights import ModelFolder
from typoattack.config.types import ModelSpec, Precision
from typoattack.errors import ConfigError, WeightsError

BACKEND_NAME = "transformers"
_TEXTS_PER_CALL = 256


class TransformersModel(ZeroShotModel):
    """A transformers image-text model ready to classify canvases.

    Attributes (beyond ZeroShotModel's):
        folder: Where its files are (repo id and commit, or a local folder).
        model_family: Its family (text settings, vision pooling, NaFlex).
        text_kwargs: Tokenizer keyword arguments used for every text.
    """

    def __init__(self, spec: ModelSpec, folder: ModelFolder, family: Family, model: torch.nn.Module,
                 geometry: InputGeometry, device: torch.device, precision: Precision, weights_id: str,
                 compile: bool = False) -> None:
        self.spec, self.backend, self.folder, self.model_family = spec, BACKEND_NAME, folder, family
        self.model, self.geometry, self.device, self.precision = model, geometry, device, precision
        self.weights_id = weights_id
        self.logit_scale, self.logit_bias = get_logit_scale(model)
        self.library_version = get_transformers_version()
        self.text_kwargs = get_text_kwargs(family, model)
        self._tokenizer: Any = None
        self._text_args = _get_named_parameters(model.get_text_features)
        self._mean = torch.tensor(geometry.mean, device=device)
        self._std = torch.tensor(geometry.std, device=device)
        self._encode: Callable[..., torch.Tensor] = self._encode_pixels
        if compile:
            self._encode = torch.compile(self._encode_pixels)

    @property
    def default_templates(self) -> tuple[str, ...]:
        """The family's recommended prompt templates (SigLIP: "This is a photo of {}."); empty when
        the family has none and the task's default applies."""
        return self.model_family.default_templates

    @property
    def is_naflex(self) -> bool:
        """True for SigLIP 2 NaFlex (patch sequences with a size per image)."""
        return isinstance(self.geometry.transform, NaflexCanvas)

    @property
    def tokenizer(self) -> Any:
        """The folder's tokenizer (AutoTokenizer), loaded on first use: a run whose classifier is
        cached never needs it.

        Raises:
            WeightsError: No tokenizer files, or a tokenizer that needs a missing package.
        """
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.folder)
        return self._tokenizer

    def encode_images(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Image features of a batch of canvases.

        Args:
            x: uint8 or float32 [B, H, W, 3] RGB canvases, values 0-255, on `device`.
            sizes: NaFlex only: int [B, 2] (height, width) of each image's content, at the top left
                of its canvas, whole patches within the patch budget (None: the whole canvas).

        Returns:
            float [B, D] L2-normalised features (computed under the precision's autocast).
        """
        with torch.inference_mode():
            pixels = x.float().div(255).sub_(self._mean).div_(self._std)
            with get_autocast(self.precision, self.device):
                features = self._encode(pixels, sizes)
            return F.normalize(features.float(), dim=-1)

    def _encode_pixels(self, pixels: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
        if self.is_naflex:
            canvas = self.geometry.transform
            assert isinstance(canvas, NaflexCanvas)
            values, mask, shapes = build_naflex_inputs(pixels, canvas.patch_size, canvas.max_num_patches, sizes)
            out = self.model.get_image_features(pixel_values=values, pixel_attention_mask=mask, spatial_shapes=shapes)
        else:
            if sizes is not None:
                raise ConfigError(f"{self.spec.label}: image sizes are only for NaFlex models")
            out = self.model.get_image_features(pixel_values=pixels.permute(0, 3, 1, 2))
        return get_pooled(out)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """float32 [N, D] L2-normalised text features, tokenised with `text_kwargs` (SigLIP:
        padded to 64 tokens; CLIP: to the longest text), in fp32."""
        parts = []
        with torch.inference_mode():
            for start in range(0, len(texts), _TEXTS_PER_CALL):
                inputs = self.tokenize(texts[start:start + _TEXTS_PER_CALL])
                parts.append(F.normalize(get_pooled(self.model.get_text_features(**inputs)).float(), dim=-1))
        return torch.cat(parts) if parts else torch.zeros(0, 0, device=self.device)

    def build_classifier(self, classnames: Sequence[str], templates: Sequence[str],
                         progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """The zero-shot classifier: per class, the templates' features averaged and
        L2-normalised (as the base class), with the texts of several classes encoded per call
        (four times faster than one call per class on a CPU).

        Returns:
            float32 [D, n_classes] on `device`.
        """
        per_call = max(1, _TEXTS_PER_CALL // max(1, len(templates)))
        columns = []
        for start in range(0, len(classnames), per_call):
            chunk = classnames[start:start + per_call]
            features = self.encode_texts([t.format(name) for name in chunk for t in templates])
            columns.append(F.normalize(features.view(len(chunk), len(templates), -1).mean(dim=1), dim=-1))
            if progress:
                progress(len(chunk))
        return torch.cat(columns).T.contiguous()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The text model's inputs for `texts` on `device` (the tokenizer's outputs that
        `get_text_features` takes)."""
        encoded = self.tokenizer(list(texts), return_tensors="pt", **self.text_kwargs)
        return {k: v.to(self.device) for k, v in encoded.items() if k in self._text_args}

    # --- defences ---------------------------------------------------------------------------

    def get_head_grid(self) -> tuple[int, int]:
        """(layers, heads per layer) of the vision tower (CLIP and SigLIP towers)."""
        return tower_heads.get_head_grid(self)

    def ablate_heads(self, heads: Sequence[Head], record: bool = False
                     ) -> contextlib.AbstractContextManager[list[HeadRecord]]:
        """See `typoattack.backends.transformers.heads.ablate_heads` (CLIP: the class token's output
        of each head; SigLIP: the head's output at every position)."""
        return tower_heads.ablate_heads(self, heads, record)

    def get_patch_size(self) -> int:
        """Side in canvas pixels of one vision patch."""
        return tower_heads.get_patch_size(self)

    def get_text_width(self) -> int:
        """Width of the text tower's token embeddings (Defense-Prefix)."""
        return text_prefix.get_text_width(self)

    def build_prefix_classifier(self, classnames: Sequence[str], vector: torch.Tensor, prompt: str,
                                progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """See `typoattack.backends.transformers.prefix.build_prefix_classifier`."""
        return text_prefix.build_prefix_classifier(self, classnames, vector, prompt, progress)


def build_naflex_inputs(pixels: torch.Tensor, patch_size: int, max_num_patches: int,
                        sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SigLIP 2 NaFlex inputs of normalised canvases, laid out as its processor lays them out.

    Args:
        pixels: float [B, H, W, 3] normalised pixels.
        patch_size: Pixels per patch side.
        max_num_patches: Patch sequence length (the processor's budget).
        sizes: int [B, 2] (height, width) of each image's content at the top left, or None (all
            of H x W).

    Returns:
        pixel_values float [B, max_num_patches, p*p*3] (patches row by row, each flattened as
        (row, column, channel), zero after the last), pixel_attention_mask int32
        [B, max_num_patches], spatial_shapes int64 [B, 2] (patch rows, patch columns).
    """
    b, height, width, channels = pixels.shape
    p = patch_size
    if sizes is None:
        sizes = torch.tensor([[height, width]] * b)
    sizes = sizes.to("cpu", torch.int64)
    if bool((sizes % p).any()) or bool(((sizes[:, 0] // p) * (sizes[:, 1] // p) > max_num_patches).any()) \
            or bool((sizes[:, 0] > height).any()) or bool((sizes[:, 1] > width).any()):
        raise ConfigError(f"NaFlex image sizes must be whole {p}-pixel patches within the canvas and at most "
                          f"{max_num_patches} patches")
    values = pixels.new_zeros(b, max_num_patches, p * p * channels)
    mask = torch.zeros(b, max_num_patches, dtype=torch.int32, device=pixels.device)
    for i, (h, w) in enumerate(sizes.tolist()):
        rows, cols = h // p, w // p
        patches = pixels[i, :h, :w].reshape(rows, p, cols, p, channels).permute(0, 2, 1, 3, 4)
        values[i, :rows * cols] = patches.reshape(rows * cols, p * p * channels)
        mask[i, :rows * cols] = 1
    return values, mask, (sizes // p).to(pixels.device)


def get_logit_scale(model: torch.nn.Module) -> tuple[float, float]:
    """(scale, bias) such that logits = scale * cos + bias, as the model's own forward computes
    them: exp(logit_scale) (CLIP, SigLIP), 1 / temperature (ALIGN), and SigLIP's logit_bias."""
    if isinstance(getattr(model, "logit_scale", None), torch.Tensor):
        scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
    elif isinstance(getattr(model, "temperature", None), torch.Tensor):
        scale = 1.0 / float(model.temperature.detach().float().reshape(-1)[0])
    else:
        raise WeightsError(f"{type(model).__name__} has neither logit_scale nor temperature; cannot scale its logits")
    bias = model.logit_bias if isinstance(getattr(model, "logit_bias", None), torch.Tensor) else None
    return scale, (float(bias.detach().float().reshape(-1)[0]) if bias is not None else 0.0)


def get_text_kwargs(family: Family, model: torch.nn.Module) -> dict[str, Any]:
    """The family's tokenizer arguments; texts padded to the longest are truncated at the text
    tower's context (CLIP: 77 tokens)."""
    kwargs = dict(family.text_kwargs)
    if kwargs.get("padding") is True and "max_length" not in kwargs:
        context = getattr(getattr(model.config, "text_config", None), "max_position_embeddings", None)
        if isinstance(context, int):
            kwargs["max_length"] = context
    return kwargs


def load_tokenizer(folder: ModelFolder) -> Any:
    """The folder's tokenizer (AutoTokenizer, local files only).

    Raises:
        WeightsError: No tokenizer files, or the tokenizer needs a package that is not installed.
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder.path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "sentencepiece" in str(e).lower() or "protobuf" in str(e).lower():
            raise WeightsError(f"the tokenizer of {folder.where} needs the sentencepiece and protobuf packages: "
                               "pip install sentencepiece protobuf") from None
        raise WeightsError(f"cannot load the tokenizer of {folder.where}: {first[:300]}") from None


def _get_named_parameters(fn: Callable[..., Any]) -> frozenset[str]:
    return frozenset(name for name, p in inspect.signature(fn).parameters.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
