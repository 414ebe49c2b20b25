"""The `real` pipeline: photographs with real typographic attacks (SCAM, RTA-100, PAINT,
Disentangling, any labelled folder) classified zero-shot against their object labels and attack
words, under the union or the binary protocol.

Validate cheaply first (data format, templates, device, weights), then per model: load it, check
the defences against it, build the text classifier over the dataset's vocabulary (cached on disk
like eval's) with the classifiers and head sets of the defences, encode the images with the
model's own preprocessing in batches (once per image-side defence variant), and commit the
records per cell (model, shard of `chunk_size` images; `typoattack.running.real_cells`), so a
rerun of the same command resumes. The cells run on the configured executor (this process or
Ray); with `--shard K/N` only that shard's cells run and `typoattack merge` writes the tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from typoattack.analysis.real_tables import (
    CLEAN_VARIANT, PER_ATTACK_WORD_CSV, REAL_RECORD_COLUMNS, SUMMARY_CSV, write_real_tables,
)
from typoattack.analysis.report import RUN_FILE, SKIPPED_CSV, write_csv
from typoattack.config.loading import load_templates
from typoattack.config.real import (
    DEFAULT_TEMPLATES, LabelSet, Protocol, RealConfig, get_default_templates, get_prefix_prompt,
)
from typoattack.data.real_datasets import RealItem, RealSource, open_real_dataset, select_photos
from typoattack.defences.spec import get_defence_files_digest
from typoattack.errors import DataError, OutputError
from typoattack.running import rundir
from typoattack.running.progress import NullProgress, ProgressReporter

if TYPE_CHECKING:
    import torch

    from typoattack.running.real_cells import RealCellTask

    from typoattack.models.loading import LoadedModel
    from typoattack.running.evaluate import BatchEncoder

RUN_KIND = "real"
"""run.json `kind` of a real run (eval runs have none)."""


@dataclass
class RealResult:
    """What `run_real` produced."""

    out_dir: Path
    records: pd.DataFrame
    summary: pd.DataFrame
    info: dict[str, Any]


def resolve_templates(cfg: RealConfig) -> tuple[str, ...]:
    """The prompt templates of a run: the dataset's own (`dataset`), or `load_templates`'s."""
    if cfg.templates == DEFAULT_TEMPLATES:
        default = get_default_templates(cfg.dataset, cfg.protocol)
        return load_templates(default) if isinstance(default, str) else default
    return load_templates(cfg.templates)


def get_vocabulary(cfg: RealConfig, source: RealSource) -> list[str]:
    """The classes of the run's classifier, sorted: the dataset's labels and words, with its own
    class list (Disentangling's classes.json) unless `--labels annotations`."""
    return source.list_vocabulary(with_classes=cfg.labels is LabelSet.DATASET)


def get_real_fingerprint(cfg: RealConfig, templates: tuple[str, ...], vocabulary: list[str],
                         source: RealSource, indices: list[int]) -> str:
    """Hash of everything that determines the records: the settings, the templates, the
    vocabulary, the selected photos with their labels (an edited dataset never resumes) and the
    contents of the defences' prefix and templates files (with the prefix prompt)."""
    h = hashlib.sha256(cfg.fingerprint().encode())
    h.update(json.dumps([list(templates), vocabulary]).encode())
    for i in indices:
        item = source.items[i]
        h.update(json.dumps([item.image_id, item.object_label, item.attack_word, item.variant, item.photo_id]).encode())
    files = get_defence_files_digest(cfg.defences)
    if files:  # runs without file defences keep their earlier fingerprint
        h.update(json.dumps([files, get_prefix_prompt(cfg.dataset)]).encode())
    return h.hexdigest()


def get_unpaired_warning(source: RealSource, indices: list[int]) -> str | None:
    """A warning when the selection holds NoSCAM and attacked photos but no photo in both (the
    ids then follow a scheme typoattack does not pair, and the summary has no paired drop)."""
    by_variant: dict[str, set[str]] = {}
    for i in indices:
        by_variant.setdefault(source.items[i].variant, set()).add(source.items[i].photo_id)
    clean = by_variant.pop(CLEAN_VARIANT, set())
    attacked = set().union(*by_variant.values()) if by_variant else set()
    if clean and attacked and not clean & attacked:
        return (f"no {CLEAN_VARIANT} photo shares its `id` with a photo of another variant, so the summary has no "
                "paired drop; check the dataset's `id` column")
    return None


def _validate_before_loading(cfg: RealConfig) -> tuple[RealSource, tuple[str, ...]]:
    """Data format, templates, device, precision, model names and weights, cheapest first."""
    source = open_real_dataset(cfg.dataset, cfg.data, cfg.hf_split)
    templates = resolve_templates(cfg)
    from typoattack.models.loading import check_precision, check_weights_available, resolve_device

    check_precision(cfg.precision, resolve_device(cfg.device))
    for spec in cfg.models:
        check_weights_available(spec)
    return source, templates


def _build_run_info(cfg: RealConfig, source: RealSource, templates: tuple[str, ...], vocabulary: list[str],
                    fingerprint: str, device: torch.device, n_images: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "kind": RUN_KIND,
        "complete": False,
        "fingerprint": fingerprint,
        "config": cfg.to_dict(),
        "dataset": {"name": cfg.dataset.value, "source": source.description, "n_items": len(source.items),
                    "vocabulary_size": len(vocabulary), "labels": cfg.labels.value, "n_classes_file": len(source.classes),
                    "notes": source.notes},
        "templates": {"name": cfg.templates, "count": len(templates), "first": templates[0],
                      "prefix_prompt": get_prefix_prompt(cfg.dataset)},
        "versions": rundir.get_versions(),
        "device": rundir.get_device_name(device),
        "seed": cfg.seed,
        "n_images_selected": n_images,
        "started": (previous or {}).get("started") or rundir.get_timestamp(),
        "models": [],
        "chunks_total": 0,
        "chunks_done": 0,
    }


def run_real(cfg: RealConfig, progress: ProgressReporter | None = None, overwrite: bool = False) -> RealResult:
    """Evaluate the models of `cfg` on a real typographic-attack dataset and write the results.

    Writes records.parquet (REAL_RECORD_COLUMNS, one row per image x model x defence), summary.csv,
    per_attack_word.csv, skipped.csv and run.json (`kind: real`) to `cfg.out`. Work is committed
    per cell (model, shard of `chunk_size` images); rerunning the same config resumes, whichever
    executor computed the cells. With `cfg.shard`, only that shard's cells are evaluated and no
    summary tables are written (`typoattack merge` writes them from all the shards).

    Args:
        cfg: The resolved config (`out` must be set).
        progress: Progress display (nothing shown when None).
        overwrite: Replace a different run that `cfg.out` already holds.

    Raises:
        TypoAttackError: A user-fixable problem (config, data format, weights, output folder).
    """
    progress = progress or NullProgress()
    out = rundir.get_out_dir(cfg.out)
    t_start = time.perf_counter()
    from typoattack.running.executors import check_executor

    check_executor(cfg.executor)
    source, templates = _validate_before_loading(cfg)
    vocabulary = get_vocabulary(cfg, source)
    indices = select_photos(source.items, cfg.limit, cfg.seed)
    fingerprint = get_real_fingerprint(cfg, templates, vocabulary, source, indices)
    if overwrite and (out / RUN_FILE).is_file():
        for name in (SUMMARY_CSV, PER_ATTACK_WORD_CSV):
            (out / name).unlink(missing_ok=True)
    previous = rundir.prepare_out_dir(out, fingerprint, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    from typoattack.models.loading import resolve_device

    device = resolve_device(cfg.device)
    for warning in cfg.model_warnings:
        progress.log(f"[bold yellow]{warning}[/]")
    for note in source.notes:
        text = note.replace("[", r"\[")  # a note is text, not rich markup
        progress.log(f"[bold yellow]{text}[/]")
    unpaired = get_unpaired_warning(source, indices)
    if unpaired:
        progress.log(f"[bold yellow]{unpaired}[/]")
    shard_info = rundir.get_shard_info(cfg)
    if previous is not None and rundir.describe_shard(previous.get("shard")) != rundir.describe_shard(shard_info):
        raise OutputError(f"{out} holds {rundir.describe_shard(previous.get('shard'))} of this run, not "
                          f"{rundir.describe_shard(shard_info)}; choose another --out")
    info = _build_run_info(cfg, source, templates, vocabulary, fingerprint, device, len(indices), previous)
    from typoattack.running.real_cells import plan_real_cells

    tasks = plan_real_cells(cfg, indices)
    mine = rundir.select_shard(tasks, cfg.shard)
    info["executor"] = cfg.executor.value
    info["shard"] = None if shard_info is None else {**shard_info, "cells": [t.cell_id for t in mine]}
    info["cells"] = [t.cell_id for t in tasks]
    chunk_paths = [rundir.get_chunk_path(out, t.cell_id) for t in mine]
    pending = [t for t, path in zip(mine, chunk_paths) if not path.is_file()]
    info["chunks_total"], info["chunks_done"] = len(mine), len(mine) - len(pending)
    rundir.save_run_info(out, info)
    skipped: dict[str, str] = {}
    model_skipped = [0] * len(cfg.models)
    for task, path in zip(mine, chunk_paths):
        if path.is_file():
            done = set(pd.read_parquet(path, columns=["image_id"])["image_id"])
            earlier = {source.items[i].image_id for i in task.items} - done
            skipped.update({k: "could not be decoded (earlier session)" for k in earlier})
            model_skipped[task.model_index] += len(earlier)
    _evaluate_cells(cfg, out, pending, info, skipped, model_skipped, previous, progress)
    for m_index, entry in enumerate(info["models"]):
        entry["n_images"] = sum(t.n_jobs for t in mine if t.model_index == m_index) - model_skipped[m_index]
    records = rundir.merge_chunks(out, chunk_paths)
    if records.empty:
        raise DataError(f"none of the {len(indices)} images could be decoded (e.g. {next(iter(skipped.values()), '?')})")
    if cfg.shard is None:
        summary = write_real_tables(records, out)
    else:
        # A shard's tables would describe a part of the photos: only `typoattack merge` writes them.
        summary = pd.DataFrame()
    write_csv(pd.DataFrame(sorted(skipped.items()), columns=["image_id", "reason"]), out / SKIPPED_CSV)
    info.update({"complete": True, "n_records": len(records), "n_skipped": len(skipped), "finished": rundir.get_timestamp(),
                 "seconds_total_this_session": round(time.perf_counter() - t_start, 3)})
    rundir.save_run_info(out, info)
    return RealResult(out, records, summary, info)


def _evaluate_cells(cfg: RealConfig, out: Path, pending: list[RealCellTask], info: dict[str, Any],
                    skipped: dict[str, str], model_skipped: list[int], previous: dict[str, Any] | None,
                    progress: ProgressReporter) -> None:
    """Run the pending cells on the configured executor, committing each cell's chunk as its
    records arrive; then write each model's entry in run.json (`n_images` is filled by the caller)."""
    from typoattack.models.loading import get_canvas_transform, get_weights_id, resolve_device
    from typoattack.running.evaluate import resolve_batch_size
    from typoattack.running.executors import create_executor
    from typoattack.running.real_cells import REAL_CELLS, RealCellResult

    by_model: list[dict[str, Any]] = [{"encoded": 0, "seconds": 0.0, "info": {}} for _ in cfg.models]

    def commit(result: RealCellResult) -> None:
        rundir.save_chunk(result.records, rundir.get_chunk_path(out, result.cell_id))
        skipped.update(result.skipped)
        model_skipped[result.model_index] += len(result.skipped)
        stats = by_model[result.model_index]
        stats["encoded"] += len(result.records) // len(cfg.defences)  # records hold every defence
        stats["seconds"] += result.seconds
        seconds = {**stats["info"].get("seconds", {}), **result.model_info.get("seconds", {})}
        stats["info"] = {**stats["info"], **result.model_info, "seconds": seconds}
        info["chunks_done"] += 1
        rundir.save_run_info(out, info)

    if pending:
        create_executor(cfg, REAL_CELLS).run(pending, commit, progress)
    old_models = (previous or {}).get("models") or []
    for m_index, spec in enumerate(cfg.models):
        stats, old = by_model[m_index], (old_models[m_index] if m_index < len(old_models) else {})
        model_info, encoded, seconds = stats["info"], stats["encoded"], stats["seconds"]
        loaded = {k: model_info.get(k, old.get(k)) for k in ("weights_id", "input_size", "transform")}
        if None in loaded.values():  # every cell was committed before and run.json lacks the model
            _, key, size = get_canvas_transform(spec)
            loaded = {"weights_id": get_weights_id(spec), "input_size": list(size), "transform": key}
        info["models"].append({
            "name": spec.name, "pretrained": spec.pretrained, **loaded, "n_images": None,
            "n_skipped": model_skipped[m_index],
            "classifier_from_cache": model_info.get("classifier_from_cache", old.get("classifier_from_cache")),
            "defences": model_info.get("defences", old.get("defences", list(cfg.defences))),
            "batch_size": resolve_batch_size(cfg.batch_size, resolve_device(cfg.device)),
            "encoder_batch_size_final": model_info.get("encoder_batch_size_final", old.get("encoder_batch_size_final")),
            "seconds": {**model_info.get("seconds", {}), "evaluate": round(seconds, 3)},
            "images_encoded_this_session": encoded,
            "images_per_second": round(encoded / seconds, 1) if encoded and seconds > 0 else None,
        })
    rundir.save_run_info(out, info)


def _decode(source: RealSource, index: int, transform: Callable[[Any], Any]) -> np.ndarray | str:
    """The model input of image `index`, uint8 [H, W, 3], or why it could not be read."""
    try:
        return np.asarray(transform(source.open_image(index)), dtype=np.uint8)
    except DataError as e:
        return str(e)
    except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on broken files
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def evaluate_photos(cfg: RealConfig, source: RealSource, shard: list[int], loaded: LoadedModel,
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
        decoded = list(pool.map(lambda i: _decode(source, i, loaded.canvas_transform), batch))
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


def _build_record(cfg: RealConfig, loaded: LoadedModel, vocabulary: list[str], it: RealItem, defence: str,
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

