"""The Hugging Face `transformers` backend: CLIP, SigLIP, SigLIP 2 (NaFlex too) and other
image-text models with `get_image_features` / `get_text_features`, from the Hub cache or a folder;
and its chat backend (`chat.TransformersChatBackend`, imported on first use by the registry): the
vision-language chat models of the vlm task."""

from typoattack.backends.transformers.backend import TransformersBackend
from typoattack.backends.transformers.model import TransformersModel

__all__ = ["TransformersBackend", "TransformersModel"]
