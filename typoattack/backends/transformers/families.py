"""The model families the transformers backend knows: which class a folder holds, how its text is
tokenised, which prompt templates it recommends, and whether its towers take defences."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from typoattack.errors import WeightsError

# The prompt SigLIP's authors and transformers' zero-shot pipeline use.
SIGLIP_TEMPLATES = ("This is a photo of {}.",)


class VisionKind(str, Enum):
    """How a family's vision tower pools its tokens (what head ablation and find-heads act on)."""

    CLASS_TOKEN = "class-token"  # a class token at position 0 is the pooled output (CLIP)
    MAP_HEAD = "map-head"        # attention pooling (a learned probe) over all patch tokens (SigLIP)
    OTHER = "other"              # no per-head hooks (a CNN tower, or attention we do not split)


@dataclass(frozen=True)
class Family:
    """A model class the backend loads.

    Attributes:
        class_name: The transformers class (config.json `architectures[0]`).
        model_type: config.json `model_type`.
        vision: How the vision tower pools.
        naflex: The processor keeps the aspect ratio within a patch budget (SigLIP 2 NaFlex).
        text_kwargs: Tokenizer keyword arguments of the family (padding, truncation, max_length).
        default_templates: The family's recommended prompts; empty for the task's default.
        tested: What the test suite checks for this family (shown by `typoattack models`).
    """

    class_name: str
    model_type: str
    vision: VisionKind
    naflex: bool = False
    text_kwargs: dict[str, Any] = field(default_factory=dict)
    default_templates: tuple[str, ...] = ()
    tested: str = ""

    @property
    def is_siglip(self) -> bool:
        """True for the sigmoid-loss families (SigLIP, SigLIP 2)."""
        return "siglip" in self.model_type


# SigLIP was trained with every text padded to 64 tokens and pools the last position, so other
# padding changes its text features; CLIP pools the end token under a causal mask, so padding to the
# longest text is exact. These are the settings of transformers' zero-shot pipeline.
_CLIP_TEXT = {"padding": True, "truncation": True}
_SIGLIP_TEXT = {"padding": "max_length", "max_length": 64, "truncation": True}

FAMILIES: dict[str, Family] = {f.class_name: f for f in (
    Family("CLIPModel", "clip", VisionKind.CLASS_TOKEN, text_kwargs=_CLIP_TEXT,
           tested="zero-shot parity, canvas, heads, prefix, open_clip checkpoint round trip"),
    Family("SiglipModel", "siglip", VisionKind.MAP_HEAD, text_kwargs=_SIGLIP_TEXT, default_templates=SIGLIP_TEMPLATES,
           tested="zero-shot parity, canvas, heads, prefix (with SigLIP 2's Gemma tokenizer)"),
    Family("Siglip2Model", "siglip2", VisionKind.MAP_HEAD, naflex=True, text_kwargs=_SIGLIP_TEXT,
           default_templates=SIGLIP_TEMPLATES,
           tested="zero-shot parity (square canvas; any aspect ratio via sizes), canvas, heads, prefix"),
    Family("MetaClip2Model", "metaclip_2", VisionKind.CLASS_TOKEN, text_kwargs=_CLIP_TEXT,
           tested="forward parity, canvas, heads, prefix"),
    Family("AltCLIPModel", "altclip", VisionKind.CLASS_TOKEN, text_kwargs=_CLIP_TEXT,
           tested="forward parity, canvas, heads"),
    Family("ChineseCLIPModel", "chinese_clip", VisionKind.CLASS_TOKEN, text_kwargs=_CLIP_TEXT,
           tested="forward parity, canvas, heads"),
    # ALIGN's processor pads to 64 tokens (AlignProcessor's defaults); its tower is an EfficientNet.
    Family("AlignModel", "align", VisionKind.OTHER,
           text_kwargs={"padding": "max_length", "max_length": 64, "truncation": True},
           tested="forward parity, canvas (EfficientNet tower: no heads)"),
)}


def list_family_names() -> list[str]:
    """The transformers classes the backend supports, in the order of FAMILIES."""
    return list(FAMILIES)


def read_model_config(folder: Path) -> dict[str, Any]:
    """config.json of a model folder as a dict.

    Raises:
        WeightsError: The file is missing or not JSON.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise WeightsError(f"{folder} holds no config.json; give a folder written by save_pretrained "
                           "(config.json, the weights, the processor and tokenizer files)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not valid JSON: {str(e).splitlines()[0]}") from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path} does not hold a JSON object")
    return config


def get_family(config: dict[str, Any], where: str) -> Family:
    """The family of a model config (config.json as a dict).

    Classes outside FAMILIES that still have `get_image_features` and `get_text_features` are
    accepted as a generic family (no defences, the CLIP text settings).

    Args:
        config: The parsed config.json.
        where: The folder or repo id, for messages.

    Raises:
        WeightsError: The class is not an image-text model this backend can classify with.
    """
    architectures = config.get("architectures") or []
    class_name = str(architectures[0]) if architectures else _get_auto_class_name(config.get("model_type"))
    if class_name in FAMILIES:
        return FAMILIES[class_name]
    import transformers

    cls = getattr(transformers, class_name, None) if class_name else None
    if cls is not None and callable(getattr(cls, "get_image_features", None)) \
            and callable(getattr(cls, "get_text_features", None)):
        return Family(class_name, str(config.get("model_type", "")), VisionKind.OTHER, text_kwargs=_CLIP_TEXT)
    shown = class_name or f"model_type {config.get('model_type')!r}"
    raise WeightsError(f"{where} holds a {shown}, which the transformers backend does not support: it needs an "
                       f"image-text model with get_image_features and get_text_features "
                       f"({', '.join(FAMILIES)})")


def _get_auto_class_name(model_type: Any) -> str:
    """AutoModel's class for a model_type ('' when unknown)."""
    if not isinstance(model_type, str):
        return ""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(model_type, "")
    return name if isinstance(name, str) else ""


def get_pooled(output: Any) -> torch.Tensor:
    """The features of a `get_image_features` / `get_text_features` result: the tensor itself,
    or `pooler_output` (transformers 5 returns the output object with the projected features there)."""
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if not isinstance(pooled, torch.Tensor):
        raise WeightsError(f"{type(output).__name__} holds no pooled features (pooler_output)")
    return pooled
