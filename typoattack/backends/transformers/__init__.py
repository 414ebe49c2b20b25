"""The Hugging Face `transformers` backend: CLIP, SigLIP, SigLIP 2 (NaFlex too) and other
image-text models with `get_image_features` / `get_text_features`, from the Hub cache or a folder."""

from typoattack.backends.transformers.backend import TransformersBackend
from typoattack.backends.transformers.model import TransformersModel

__all__ = ["TransformersBackend", "TransformersModel"]
