"""The evaluation of real typographic-attack photos: decode with the model's own geometry, encode
under every defence, score under the union or the binary protocol, one record per photo and defence."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from typoattack.backends.base import ZeroShotModel
from typoattack.data.real_datasets import RealItem, RealSource
from typoattack.defences.apply import BatchEncoder
from typoattack.errors import DataError
from typoattack.tasks.real.config import Protocol, RealConfig
from typoattack.tasks.real.tables import REAL_RECORD_COLUMNS

if TYPE_CHECKING:
    import torch


def _decode(source: RealSource, index: int, transform: Callable[[Any], Any]) -> np.ndarray | str:
    """The model input of image `index`, uint8 [H, W, 3], or why it could not be read."""
    try:
        return np.asarray(transform(source.open_image(index)), dtype=np.uint8)
    except DataError as e:
        return str(e)
    except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on broken files
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def evaluate_photos(cfg: RealConfig, source: RealSource, shard: list[int], loaded: ZeroShotModel,
                    encoder: BatchEncoder, vocabulary: list[str], batch_size: int, pool: ThreadPoolExecutor,
                    advance: Callable[[int], None]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Classify the photos `shard` (indices into `source.items`) under every defence of `encoder`
    (in inference mode); return their records
    (image by image, then defence by defence in config order) and the images that were skipped."""
    import torch

    label_index = {label: i for i, label in enumerate(vocabulary)}

    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for start in range(0, len(shard), batch_size):
        batch = shard[start:start + batch_size]
        decoded = list(pool.map(lambda i: _decode(source, i, loaded.geometry.transform), batch))
        good = [(i, x) for i, x in zip(batch, decoded) if isinstance(x, np.ndarray)]
        skipped.update({source.items[i].image_id: x for i, x in zip(batch, decoded) if isinstance(x, str)})
        if good:
            x = torch.from_numpy(np.stack([a for _, a in good])).to(loaded.device)
            items = [source.items[i] for i, _ in good]
            obj = np.array([label_index[it.object_label] for it in items], dtype=np.int64)
            atk = np.array([label_index[it.attack_word] for it in items], dtype=np.int64)
            logits = encoder.encode(x)  # [n_defences, B, V]
            labels = encoder.defences.labels
            scores = [score_logits(logits[d], obj, atk, cfg.protocol) for d in range(len(labels))]
            for k, it in enumerate(items):
                for defence, score in zip(labels, scores):
                    rows.append(_build_record(cfg, loaded, vocabulary, it, defence, score, k))
        advance(len(batch))
    frame = pd.DataFrame(rows, columns=REAL_RECORD_COLUMNS)
    return frame.astype({"p_object": np.float32, "p_attack": np.float32, "n_classes": np.int64,
                         "postit_area_pct": np.float64}), skipped


def _build_record(cfg: RealConfig, loaded: ZeroShotModel, vocabulary: list[str], it: RealItem, defence: str,
                  scores: dict[str, np.ndarray], k: int) -> dict[str, Any]:
    """The record of item `it` under one defence, from the `score_logits` of its batch (row `k`)."""
    binary = cfg.protocol is Protocol.BINARY
    return {
        "image_id": it.image_id, "photo_id": it.photo_id, "model": loaded.spec.name,
        "pretrained": loaded.spec.pretrained or "", "defence": defence, "dataset": cfg.dataset.value,
        "variant": it.variant, "protocol": cfg.protocol.value, "object_label": it.object_label,
        "attack_word": it.attack_word,
        "pred_label": (it.object_label if scores["pred_is_object"][k] else it.attack_word)
        if binary else vocabulary[int(scores["pred_index"][k])],
        "p_object": float(scores["p_object"][k]), "p_attack": float(scores["p_attack"][k]),
        "n_classes": 2 if binary else len(vocabulary), "postit_area_pct": it.postit_area_pct,
    }


def score_logits(logits: torch.Tensor, object_index: np.ndarray, attack_index: np.ndarray, protocol: Protocol) -> dict[str, np.ndarray]:
    """Scores of a batch under a protocol.

    Args:
        logits: float32 [B, V] zero-shot logits (LOGIT_SCALE x cosine similarity) over the
            dataset's vocabulary, on any device.
        object_index: int [B], each image's object label in the vocabulary.
        attack_index: int [B], each image's attack word in the vocabulary.
        protocol: UNION: softmax and argmax over all V labels. BINARY: softmax over the two
            columns (object, attack word) only; the object wins ties.

    Returns:
        p_object, p_attack float32 [B] in [0, 1]; pred_index int64 [B] (argmax over V, union);
        pred_is_object bool [B] (binary).
    """
    import torch

    logits = logits.float()
    rows = torch.arange(len(logits), device=logits.device)
    obj = torch.as_tensor(object_index, device=logits.device)
    atk = torch.as_tensor(attack_index, device=logits.device)
    if protocol is Protocol.BINARY:
        pair = torch.softmax(torch.stack([logits[rows, obj], logits[rows, atk]], dim=1), dim=1).cpu().numpy()
        return {"p_object": pair[:, 0], "p_attack": pair[:, 1], "pred_is_object": pair[:, 0] >= pair[:, 1],
                "pred_index": np.where(pair[:, 0] >= pair[:, 1], object_index, attack_index)}
    probs = torch.softmax(logits, dim=1)
    return {"p_object": probs[rows, obj].cpu().numpy(), "p_attack": probs[rows, atk].cpu().numpy(),
            "pred_index": logits.argmax(dim=1).cpu().numpy().astype(np.int64),
            "pred_is_object": (logits.argmax(dim=1) == obj).cpu().numpy()}

