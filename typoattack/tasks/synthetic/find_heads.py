"""The find-heads pipeline: load one model and the run's images and words, score and choose
heads to ablate (`typoattack.defences.find_heads`), and write heads.yaml."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from typoattack.backends.base import get_classifier
from typoattack.data.canvases import prepare_canvases
from typoattack.data.classes import list_class_names
from typoattack.data.sources import open_image_source, select_subset
from typoattack.data.vocab import load_vocab
from typoattack.defences.find_heads import (MAX_CLEAN_DROP, MAX_REJECTED, MIN_GAIN, Accuracy, HeadSearch,
                                            measure_accuracy, score_heads, search_heads, split_images,
                                            write_heads_yaml)
from typoattack.errors import ConfigError, OutputError
from typoattack.records import list_conditions
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.tasks.shared import check_models, get_templates, load_model
from typoattack.tasks.synthetic.config import SyntheticConfig
from typoattack.tasks.synthetic.task import solve_masks


def run_find_heads(cfg: SyntheticConfig, out: str | Path, progress: ProgressReporter | None = None) -> HeadSearch:
    """Choose heads for `--defence heads:@OUT` on the config's model, images and words.

    Args:
        cfg: The run config (one model; its fractions, placements and styles make the attacked set;
            its `defences` are ignored).
        out: The heads.yaml to write.
        progress: Progress display.

    Returns:
        The search (heads, scores, selection and held-out accuracy per step).

    Raises:
        TypoAttackError: Several models, a model without a supported ViT tower, too few images,
            or an output path that is a folder.
    """
    from typoattack.attack.compose import upload_mask
    from typoattack.defences.apply import BatchEncoder, DefenceSet, ImageVariant, resolve_batch_size
    from typoattack.tasks.synthetic.evaluate import evaluate_shard

    progress = progress or NullProgress()
    out = Path(out)
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give the heads.yaml file to write")
    if len(cfg.models) != 1:
        raise ConfigError(f"find-heads chooses heads for one model; the config lists {len(cfg.models)}")
    spec = cfg.models[0]
    source = open_image_source(cfg.data)
    vocab = load_vocab(cfg.vocab)
    templates = get_templates(cfg.templates, spec)
    device = check_models(cfg)
    loaded, _ = load_model(cfg, 0, progress)
    layers, heads = loaded.get_head_grid()  # fails early for towers that cannot be split per head
    conditions = list_conditions(cfg, vocab)
    masks = solve_masks(cfg, conditions, loaded.canvas_size, progress)
    device_masks = [upload_mask(masks[c], device) for c in conditions]
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    g = loaded.geometry
    canvases = prepare_canvases(source, indices, g.transform, g.key, g.size, cfg.cache_dir, workers=cfg.workers,
                                progress=progress.start("Canvases", len(indices), "images"))
    rows = np.flatnonzero(canvases.valid)
    selection, heldout = split_images(rows, cfg.seed)
    classifier, _ = get_classifier(loaded, list_class_names(), templates, cfg.cache_dir,
                                   progress=progress.start("Classifier", len(list_class_names()), "classes"))
    batch_size = resolve_batch_size(cfg.batch_size, device)
    t0 = time.perf_counter()
    scores = score_heads(loaded, canvases, selection, device_masks, cfg.seed, min(batch_size, 64))
    halves = {"selection": selection, "heldout": heldout}
    advance = progress.start("Greedy search", layers * heads, "heads")

    def evaluate(half: str, chosen: list[tuple[int, int]]) -> Accuracy:
        encoder = BatchEncoder(loaded, DefenceSet(("search",), (ImageVariant(tuple(chosen), (classifier,), (0,)),),
                                                  int(classifier.shape[1])), batch_size, progress)
        records = evaluate_shard(loaded, encoder, canvases, halves[half], conditions, device_masks, cfg.seed,
                                 batch_size, lambda n: None)
        if half == "selection" and chosen:
            advance(1)
        return measure_accuracy(records)

    search = search_heads(scores, evaluate, progress.log)
    advance(layers * heads - len(search.tried))  # a search that stops early leaves no bar standing short
    info: dict[str, Any] = {
        "model": spec.name, "pretrained": spec.pretrained, "weights_id": loaded.weights_id,
        "score": "class-token attention share on the patches the text covers (selection half)",
        "rule": {"min_gain": MIN_GAIN, "max_clean_drop": MAX_CLEAN_DROP, "max_rejected_in_a_row": MAX_REJECTED},
        "seed": cfg.seed, "n_selection": int(selection.size), "n_heldout": int(heldout.size),
        "n_conditions": len(conditions), "vocab": vocab.name, "fractions": list(cfg.fractions),
        "placements": [p.value for p in cfg.placements], "templates": cfg.templates,
        "seconds": round(time.perf_counter() - t0, 1),
        "heldout_images": [canvases.items[int(r)].image_id for r in heldout],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    write_heads_yaml(out, search, info)
    return search
