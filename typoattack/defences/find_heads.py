"""`typoattack find-heads`: choose the attention heads to ablate, knowing where the text is.

Procedure (Dyslexify's greedy search with the text's own patches instead of fixed rows):

1. The valid images are split by the run seed into a selection half and a held-out half.
2. On the selection half, each head of the vision tower is scored by the share of its
   class-token attention that falls on the text: sum over patches of attention x the share of the
   patch's pixels the attack changed (typoattack draws the text, so it knows the mask), averaged
   over every attacked canvas.
3. Going down the heads by score, a head is kept when the typographic accuracy (attacked top-1
   on the true class) on the selection half rises by at least MIN_GAIN over the best so far.
   The search stops once the clean top-1 of the kept set has dropped more than MAX_CLEAN_DROP
   from the baseline (the head that crossed the line stays, as in Dyslexify's procedure), after
   more than MAX_REJECTED rejected heads in a row, or when every head was tried.
4. Accuracy on the held-out half is measured for the baseline and after each kept head, for the
   report only: no decision reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from typoattack.backends.base import ZeroShotModel
from typoattack.constants import CLEAN_WORD
from typoattack.errors import ConfigError, DataError
from typoattack.files import write_text_atomic

MIN_GAIN = 0.001
MAX_CLEAN_DROP = 0.01
MAX_REJECTED = 10
Head = tuple[int, int]


@dataclass(frozen=True)
class Accuracy:
    """Clean and typographic (attacked) top-1 on the true class over a set of images, in [0, 1]."""

    clean_top1: float
    attacked_top1: float

    def to_dict(self) -> dict[str, float]:
        return {"clean_top1": round(self.clean_top1, 6), "attacked_top1": round(self.attacked_top1, 6)}


@dataclass
class HeadSearch:
    """What `search_heads` found.

    Attributes:
        heads: The kept heads, in the order they were kept.
        scores: float [layers, heads] text-attention share of each head (selection half).
        baseline: Accuracy without ablation on (selection, held-out).
        steps: Per kept head: (head, accuracy on selection, accuracy on held-out) with the heads so far.
        tried: Heads evaluated, in score order, with their selection accuracy and whether kept.
        stopped: Why the search ended.
    """

    heads: list[Head]
    scores: np.ndarray
    baseline: tuple[Accuracy, Accuracy]
    steps: list[tuple[Head, Accuracy, Accuracy]] = field(default_factory=list)
    tried: list[tuple[Head, Accuracy, bool]] = field(default_factory=list)
    stopped: str = ""


def split_images(rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection rows, held-out rows): a seeded half each (sorted), disjoint, together `rows`.

    Raises:
        DataError: Fewer than 2 rows.
    """
    if len(rows) < 2:
        raise DataError(f"find-heads needs at least 2 images (one to select on, one to report on), got {len(rows)}")
    perm = np.random.default_rng(seed).permutation(len(rows))
    half = len(rows) // 2
    return np.sort(rows[perm[:half]]), np.sort(rows[perm[half:]])


def rank_heads(scores: np.ndarray) -> list[Head]:
    """Every head of a float [layers, heads] score grid in the order the search tries them: highest
    score first, ties by (layer, head)."""
    return sorted(((int(l), int(h)) for l, h in np.ndindex(*scores.shape)), key=lambda lh: (-scores[lh], lh))


def search_heads(scores: np.ndarray, evaluate: Callable[[str, Sequence[Head]], Accuracy],
                 progress_log: Callable[[str], None] = lambda _: None) -> HeadSearch:
    """The greedy search of the module docstring, given head scores and an accuracy function.

    Args:
        scores: float [layers, heads] text-attention share per head (higher: ablated first).
        evaluate: evaluate(half, heads) -> Accuracy with `heads` ablated on half "selection" or "heldout".
        progress_log: Called with a line per kept head.

    Returns:
        The search, with held-out accuracy only for the baseline and the kept steps.
    """
    order = rank_heads(scores)
    base_sel, base_held = evaluate("selection", []), evaluate("heldout", [])
    search = HeadSearch([], scores, (base_sel, base_held))
    best, rejected = base_sel.attacked_top1, 0
    for head in order:
        acc = evaluate("selection", [*search.heads, head])
        gains = acc.attacked_top1 >= best + MIN_GAIN - 1e-12
        search.tried.append((head, acc, gains))
        if gains:
            search.heads.append(head)
            best, rejected = acc.attacked_top1, 0
            held = evaluate("heldout", search.heads)
            search.steps.append((head, acc, held))
            progress_log(f"kept head {head[0]}.{head[1]}: typographic top-1 {acc.attacked_top1:.4f} (selection), "
                         f"{held.attacked_top1:.4f} (held-out)")
            drop = base_sel.clean_top1 - acc.clean_top1
            if drop > MAX_CLEAN_DROP:
                search.stopped = (f"clean top-1 dropped {drop:.4f} from the baseline (more than {MAX_CLEAN_DROP}) "
                                  f"with head {head[0]}.{head[1]}")
                break
            continue
        rejected += 1
        if rejected > MAX_REJECTED:
            search.stopped = f"more than {MAX_REJECTED} rejected heads in a row"
            break
    else:
        search.stopped = "every head was tried"
    return search


def score_heads(loaded: ZeroShotModel, canvases: Any, rows: np.ndarray, device_masks: Sequence[Any], seed: int,
                batch_size: int) -> np.ndarray:
    """Share of each head's class-token attention on the text, averaged over attacked canvases.

    For each attacked canvas, the changed pixels (the drawn text) are pooled to the model's patch
    grid, giving the share of each patch the text covers, c [n_patches] in [0, 1]; a head's score
    is sum_p attention(class token -> patch p) * c_p.

    Args:
        loaded: The model (its backend must support head ablation).
        canvases: The canvas cache; `rows` index it.
        rows: int [n] rows to score on.
        device_masks: One uploaded mask per attack condition.
        seed: Run seed (random placements).
        batch_size: Canvases per forward pass.

    Returns:
        float64 [layers, heads] scores in [0, 1].
    """
    from typoattack.attack.compose import composite_batch, get_offsets

    layers, heads = loaded.get_head_grid()
    patch = loaded.get_patch_size()
    total = torch.zeros(layers, heads, dtype=torch.float64)
    count = 0
    ids = [canvases.items[int(r)].image_id for r in rows]
    for dm in device_masks:
        offsets = get_offsets(dm.mask, ids, seed)
        for start in range(0, len(rows), batch_size):
            stop = min(start + batch_size, len(rows))
            clean = torch.from_numpy(np.ascontiguousarray(canvases.canvases[rows[start:stop]])).to(loaded.device).float()
            x = clean.clone()
            composite_batch(x, dm, None if offsets is None else offsets[start:stop])
            changed = (x != clean).any(-1).float()[:, None]  # [b, 1, H, W]
            cover = F.avg_pool2d(changed, patch, stride=patch).flatten(1)  # [b, n_patches]
            with torch.inference_mode(), loaded.ablate_heads([], record=True) as wrappers:
                loaded.encode_images(x)
                for layer, w in enumerate(wrappers):
                    attn = w.weights[:, :, w.first_patch:]  # [b, heads, n_patches]: class token -> patches
                    if attn.shape[-1] != cover.shape[1]:
                        raise ConfigError(f"find-heads: the tower has {attn.shape[-1]} patch tokens but the canvas "
                                          f"gives {cover.shape[1]} patches")
                    total[layer] += (attn * cover[:, None, :].to(attn)).sum((0, 2)).double().cpu()
            count += stop - start
    return (total / max(count, 1)).numpy()


def measure_accuracy(records: Any) -> Accuracy:
    """Clean and typographic top-1 of a records table (RECORD_COLUMNS)."""
    correct = records["pred_index"] == records["true_index"]
    is_clean = records["word"] == CLEAN_WORD
    return Accuracy(float(correct[is_clean].mean()), float(correct[~is_clean].mean()))


def format_heads_yaml(search: HeadSearch, info: dict[str, Any]) -> str:
    """heads.yaml: `heads` (readable by `--defence heads:@FILE`), then the steps and settings."""

    def name(head: Head) -> str:
        return f"{head[0]}.{head[1]}"

    doc = {
        "heads": [name(h) for h in search.heads],
        **info,
        "baseline": {"selection": search.baseline[0].to_dict(), "heldout": search.baseline[1].to_dict()},
        "steps": [{"head": name(h), "heads": [name(x) for x in search.heads[:i + 1]], "selection": s.to_dict(),
                   "heldout": held.to_dict()} for i, (h, s, held) in enumerate(search.steps)],
        "stopped": search.stopped,
        "tried": [{"head": name(h), "selection": a.to_dict(), "kept": kept} for h, a, kept in search.tried],
        "scores": {name((int(l), int(h))): round(float(search.scores[l, h]), 6) for l, h in np.ndindex(*search.scores.shape)},
    }
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


def write_heads_yaml(path: Path, search: HeadSearch, info: dict[str, Any]) -> None:
    """Write heads.yaml atomically."""
    write_text_atomic(path, format_heads_yaml(search, info))
