"""Zero-shot classification: the text classifier (built with open_clip, cached on disk) and the
image loop, which returns raw logits; reductions to predictions are small pure functions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch

from typoattack.files import expand_path, get_label_slug, write_atomic
from typoattack.constants import LOGIT_SCALE, TOP_K
from typoattack.models.loading import LoadedModel, get_autocast

# Classes encoded per open_clip builder call; progress is reported between calls.
_CLASSES_PER_CALL = 50


def get_classifier_cache_path(loaded: LoadedModel, classnames: Sequence[str], templates: Sequence[str],
                              cache_dir: str | Path) -> Path:
    """Path of the cached classifier for (model, weights, class names, templates)."""
    key = json.dumps({"weights": loaded.weights_id, "classnames": list(classnames),
                      "templates": list(templates), "open_clip": open_clip.__version__})
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return expand_path(cache_dir) / "classifiers" / f"{get_label_slug(loaded.spec.label)}-{digest}.pt"


def build_classifier(loaded: LoadedModel, classnames: Sequence[str], templates: Sequence[str],
                     cache_dir: str | Path, progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, bool]:
    """Build (or load from the disk cache) the zero-shot classifier.

    Per class, the templates are encoded, averaged and L2-normalised by open_clip's
    `build_zero_shot_classifier`.

    Args:
        loaded: The model.
        classnames: Class names, in class-index order.
        templates: Format strings with one `{}`.
        cache_dir: Cache folder (a `classifiers/` sub-folder is used).
        progress: Called with the number of classes encoded since the last call.

    Returns:
        (weights float32 [embed_dim, n_classes] on the model's device, loaded_from_cache).
    """
    path = get_classifier_cache_path(loaded, classnames, templates, cache_dir)
    if path.is_file():
        weights = torch.load(path, map_location=loaded.device, weights_only=True)
        if progress:
            progress(len(classnames))
        return weights, True
    parts = []
    # Always fp32: the classifier is cached without regard to the encoder's precision.
    with torch.inference_mode():
        for start in range(0, len(classnames), _CLASSES_PER_CALL):
            chunk = list(classnames[start:start + _CLASSES_PER_CALL])
            parts.append(open_clip.build_zero_shot_classifier(
                loaded.model, loaded.tokenizer, chunk, list(templates),
                num_classes_per_batch=10, device=loaded.device,
            ).float())
            if progress:
                progress(len(chunk))
    weights = torch.cat(parts, dim=1)
    write_atomic(path, lambda tmp: torch.save(weights.cpu(), tmp))
    return weights, False


def encode_images(loaded: LoadedModel, classifier: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits of a batch of canvases already on the model's device.

    Args:
        loaded: The model.
        classifier: float32 [embed_dim, n_classes] from `build_classifier`.
        x: [B, H, W, 3] RGB canvases with values 0-255 (uint8 or float32 holding integers).

    Returns:
        float32 [B, n_classes] logits on the device: 100 * normalised image features @ classifier.
    """
    mean = torch.tensor(loaded.mean, device=x.device)
    std = torch.tensor(loaded.std, device=x.device)
    # The same operations as ToTensor + Normalize, run on the contiguous NHWC layout (fast);
    # permuted to NCHW the result is channels_last in memory: ResNets prefer it, and measured
    # here ViT patch embedding is no slower than on a contiguous copy.
    x = x.float().div(255).sub_(mean).div_(std).permute(0, 3, 1, 2)
    with torch.inference_mode():
        with get_autocast(loaded.precision, loaded.device):
            features = loaded.encode_image(x)
        # Outside autocast: the cosine similarities stay fp32 whatever the encoder's precision.
        logits = LOGIT_SCALE * features.float() @ classifier
    return logits


def encode_canvases(loaded: LoadedModel, classifier: torch.Tensor, canvases: np.ndarray) -> torch.Tensor:
    """Zero-shot logits of a batch of uint8 canvases held on the host.

    Args:
        loaded: The model.
        classifier: float32 [embed_dim, n_classes] from `build_classifier`.
        canvases: uint8 [B, H, W, 3] RGB model-input canvases.

    Returns:
        float32 [B, n_classes] logits on the CPU.
    """
    canvases = np.ascontiguousarray(canvases)
    if not canvases.flags.writeable:  # read-only memmap rows; torch wants a writable buffer
        canvases = canvases.copy()
    return encode_images(loaded, classifier, torch.from_numpy(canvases).to(loaded.device)).cpu()


def summarize_logits(logits: torch.Tensor, target_index: np.ndarray, true_index: np.ndarray) -> dict[str, np.ndarray]:
    """Reduce logits to what a record keeps.

    Args:
        logits: float32 [B, C], on any device (the reduction runs there; small results come back).
        target_index: int [B], the attack's class (-1 for the clean condition).
        true_index: int [B], the ground-truth class.

    Returns:
        pred_index int64 [B]; pred_top5 int64 [B, 5]; p_target float32 [B] (softmax probability
        of the target, NaN where there is none); p_true float32 [B].
    """
    device = logits.device
    probs = torch.softmax(logits.float(), dim=1)
    top = torch.topk(logits, k=min(TOP_K, logits.shape[1]), dim=1).indices
    rows = torch.arange(len(logits), device=device)
    target = torch.as_tensor(np.asarray(target_index, dtype=np.int64), device=device)
    true = torch.as_tensor(np.asarray(true_index, dtype=np.int64), device=device)
    p_target = probs[rows, target.clamp(min=0)].float().cpu().numpy()
    p_target[np.asarray(target_index) < 0] = np.nan
    p_true = probs[rows, true].float().cpu().numpy()
    top = top.cpu().numpy().astype(np.int64)
    return {"pred_index": top[:, 0].copy(), "pred_top5": top, "p_target": p_target, "p_true": p_true}
