"""Independent reference numbers for the probe tests: zero-shot probabilities of real-dataset
records computed with open_clip's own preprocessing and `encode_text`, a Defense-Prefix vector put
in place of the `*` token by overwriting that token's row of the embedding table (not typoattack's
`embed_prompts`)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import open_clip
import pandas as pd
import torch

from typoattack.data.sources import load_rgb
from typoattack.backends.open_clip.model import TINY_MODEL


def hand_p_object(loaded, images: Path, records: pd.DataFrame, vocabulary: list[str], prompt: str,
                  prefix: torch.Tensor | None = None) -> np.ndarray:
    """p_object of each record (union protocol over `vocabulary`, one prompt per class).

    Args:
        loaded: typoattack's LoadedModel of the tiny model (only its open_clip model and tokenizer are used).
        images: Folder the records' image_id values are relative to.
        records: Rows with image_id and object_label.
        vocabulary: The classes, in classifier order.
        prompt: The class prompt with `{}` (and `*` when `prefix` is given).
        prefix: float [D]: the embedding put at the `*` token, or None.
    """
    model = copy.deepcopy(loaded.model).eval()
    tokenizer = loaded.tokenizer
    if prefix is not None:
        star = int(tokenizer(["*"])[0][1])
        with torch.no_grad():
            model.token_embedding.weight[star] = prefix.to(model.token_embedding.weight.dtype)
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=None)
    with torch.no_grad():
        text = model.encode_text(tokenizer([prompt.format(c) for c in vocabulary]), normalize=True)
        x = torch.stack([preprocess(load_rgb(images / image_id)) for image_id in records["image_id"]])
        features = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
        probs = (100 * features @ text.T).softmax(dim=1)
    obj = torch.tensor([vocabulary.index(v) for v in records["object_label"]])
    return probs[torch.arange(len(records)), obj].numpy()
