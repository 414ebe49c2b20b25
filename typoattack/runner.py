"""The eval pipeline: validate, prepare canvases, classify clean and attacked canvases in chunks
that are committed atomically (so an interrupted run resumes), then write the tables."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

import typoattack
from typoattack.classes import IMAGENET_CLASSNAMES
from typoattack.config import Placement, RunConfig, Vocabulary, load_templates, load_vocab
from typoattack.constants import CLEAN_PLACEMENT, CLEAN_WORD, RECORD_COLUMNS
from typoattack.data import CanvasSet, open_image_source, prepare_canvases, select_subset
from typoattack.errors import ConfigError, DataError, OutputError
from typoattack.render import AttackMask, apply_attack, check_glyphs, create_attack_mask
from typoattack.report import (
    CONFUSION_CSV, PER_WORD_CSV, PER_WORD_MD, RECORDS_FILE, RUN_FILE, SKIPPED_CSV,
    summarize_clean, write_atomic, write_csv, write_tables,
)

CHUNKS_DIR = "chunks"
RUN_FILES = (RECORDS_FILE, RUN_FILE, PER_WORD_CSV, PER_WORD_MD, CONFUSION_CSV, SKIPPED_CSV)


class ProgressReporter(Protocol):
    """What the runner needs from a progress display."""

    def start(self, description: str, total: int) -> Callable[[int], None]:
        """Start a task of `total` steps; return a function that advances it."""
        ...

    def log(self, message: str) -> None:
        """Show a message."""
        ...


class NullProgress:
    """A progress reporter that shows nothing."""

    def start(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None

    def log(self, message: str) -> None:
        pass


@dataclass(frozen=True)
class Condition:
    """One attack condition: a word drawn at a fraction with a placement."""

    word: str
    target_index: int
    fraction: float
    placement: Placement


@dataclass
class RunResult:
    """What `run_eval` produced."""

    out_dir: Path
    records: pd.DataFrame
    per_word: pd.DataFrame
    info: dict[str, Any]


def list_conditions(cfg: RunConfig, vocab: Vocabulary) -> list[Condition]:
    """The product of words x fractions x placements, in a fixed order."""
    return [Condition(w.text, w.target_index, f, p)
            for p, f, w in itertools.product(cfg.placements, cfg.fractions, vocab.words)]


def is_untrained(cfg: RunConfig) -> bool:
    """True when a model of the run has random weights (seed:N)."""
    return any((m.pretrained or "").startswith("seed:") for m in cfg.models)


def _versions() -> dict[str, str]:
    import open_clip
    import PIL
    import torch

    return {"typoattack": typoattack.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def _device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _prepare_out_dir(cfg: RunConfig, out: Path, overwrite: bool) -> dict[str, Any] | None:
    """Check the output folder; return the earlier run.json when resuming the same run."""
    run_json = out / RUN_FILE
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    if run_json.is_file():
        try:
            previous = json.loads(run_json.read_text())
        except json.JSONDecodeError:
            previous = {}
        if overwrite:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / CHUNKS_DIR, ignore_errors=True)
            return None
        if previous.get("fingerprint") != cfg.fingerprint():
            raise OutputError(
                f"{out} holds a different run (another config or seed); choose another --out or pass --overwrite"
            )
        return previous
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} is not empty and holds no typoattack run; choose another --out or pass --overwrite")
    return None


def _validate_before_loading(cfg: RunConfig) -> tuple[Vocabulary, tuple[str, ...]]:
    """Everything that can be checked without loading a model or decoding an image."""
    from typoattack.models import _check_spec, check_precision, get_canvas_size, resolve_device

    vocab = load_vocab(cfg.vocab)
    templates = load_templates(cfg.templates)
    for word in vocab.words:
        check_glyphs(word.text, cfg.style.font)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    for spec in cfg.models:
        _check_spec(spec)
        size = get_canvas_size(spec)
        if size is not None:
            for cond in list_conditions(cfg, vocab):
                create_attack_mask(cond.word, cond.fraction, cond.placement, cfg.style, size)
    return vocab, templates


def _evaluate_shard(loaded: Any, classifier: Any, canvases: CanvasSet, rows: np.ndarray,
                    conditions: list[Condition], masks: dict[Condition, AttackMask], cfg: RunConfig,
                    advance: Callable[[int], None]) -> pd.DataFrame:
    """Classify the clean canvas and every attacked canvas of the given rows."""
    from typoattack.classify import encode_canvases, summarize_logits

    jobs = [(int(r), c) for r in rows for c in [None, *conditions]]
    H, W = loaded.canvas_size
    columns: dict[str, list[Any]] = {k: [] for k in RECORD_COLUMNS}
    font_name = Path(cfg.style.font).name
    for start in range(0, len(jobs), cfg.batch_size):
        batch_jobs = jobs[start:start + cfg.batch_size]
        batch = np.empty((len(batch_jobs), H, W, 3), np.uint8)
        covers = np.zeros(len(batch_jobs), np.float64)
        for k, (row, cond) in enumerate(batch_jobs):
            canvas = np.asarray(canvases.canvases[row])
            if cond is None:
                batch[k] = canvas
            else:
                batch[k], covers[k] = apply_attack(canvas, masks[cond], canvases.items[row].image_id, cfg.seed)
        logits = encode_canvases(loaded, classifier, batch)
        targets = np.array([-1 if c is None else c.target_index for _, c in batch_jobs])
        trues = np.array([canvases.items[r].true_index for r, _ in batch_jobs])
        summary = summarize_logits(logits, targets, trues)
        for k, (row, cond) in enumerate(batch_jobs):
            columns["image_id"].append(canvases.items[row].image_id)
            columns["true_index"].append(int(trues[k]))
            columns["model"].append(loaded.spec.name)
            columns["pretrained"].append(loaded.spec.pretrained or "")
            columns["word"].append(CLEAN_WORD if cond is None else cond.word)
            columns["target_index"].append(-1 if cond is None else cond.target_index)
            columns["fraction"].append(0.0 if cond is None else cond.fraction)
            columns["placement"].append(CLEAN_PLACEMENT if cond is None else cond.placement.value)
            columns["font"].append("" if cond is None else font_name)
            columns["pixel_cover"].append(float(covers[k]))
        columns["pred_index"].extend(summary["pred_index"].tolist())
        columns["pred_top5"].extend(summary["pred_top5"].tolist())
        columns["p_target"].extend(summary["p_target"].tolist())
        columns["p_true"].extend(summary["p_true"].tolist())
        advance(len(batch_jobs))
    frame = pd.DataFrame(columns)
    for col in ("true_index", "target_index", "pred_index"):
        frame[col] = frame[col].astype(np.int64)
    for col in ("p_target", "p_true"):
        frame[col] = frame[col].astype(np.float32)
    return frame


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _model_slug(index: int, label: str) -> str:
    return f"{index:02d}-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]


def run_eval(cfg: RunConfig, progress: ProgressReporter | None = None, overwrite: bool = False) -> RunResult:
    """Run the benchmark described by `cfg` and write its results to `cfg.out`.

    Work is committed per (model, shard of `chunk_size` images); rerunning the same config on
    the same folder resumes and gives the same files as an uninterrupted run.

    Args:
        cfg: The resolved run config (`out` must be set).
        progress: Progress display (nothing shown when None).
        overwrite: Replace a different run that `cfg.out` already holds.

    Returns:
        The records, the per-word table and the run.json contents.

    Raises:
        TypoAttackError: A user-fixable problem (config, data, weights, font, output folder).
    """
    import torch

    from typoattack.classify import build_classifier
    from typoattack.models import create_model, resolve_device

    progress = progress or NullProgress()
    if not cfg.out:
        raise ConfigError("no output folder; pass --out DIR or set `out` in the config")
    out = Path(cfg.out)
    t_start = time.perf_counter()
    vocab, templates = _validate_before_loading(cfg)
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    previous = _prepare_out_dir(cfg, out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    conditions = list_conditions(cfg, vocab)
    if is_untrained(cfg):
        progress.log("[bold yellow]UNTRAINED MODEL: weights are random (seed:N); these numbers only check the pipeline, "
                     "they say nothing about CLIP.[/]")

    info: dict[str, Any] = {
        "complete": False,
        "fingerprint": cfg.fingerprint(),
        "config": cfg.to_dict(),
        "vocab": {"name": vocab.name, "path": vocab.path,
                  "words": [{"text": w.text, "target_index": w.target_index,
                             "target_name": IMAGENET_CLASSNAMES[w.target_index]} for w in vocab.words]},
        "templates": {"name": cfg.templates, "count": len(templates)},
        "versions": _versions(),
        "device": _device_name(device),
        "seed": cfg.seed,
        "n_images_selected": len(indices),
        "started": (previous or {}).get("started") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "models": [],
        "chunks_total": 0,
        "chunks_done": 0,
    }

    def save_info() -> None:
        write_atomic(out / RUN_FILE, json.dumps(info, indent=2, default=str) + "\n")

    save_info()
    chunk_paths: list[Path] = []
    skipped_all: dict[str, str] = {}
    encoded = 0
    encode_seconds = 0.0
    for m_index, spec in enumerate(cfg.models):
        t0 = time.perf_counter()
        progress.log(f"Loading {spec.label} on {device}")
        loaded = create_model(spec, device, cfg.precision)
        t_model = time.perf_counter() - t0
        masks = {c: create_attack_mask(c.word, c.fraction, c.placement, cfg.style, loaded.canvas_size)
                 for c in conditions}

        t0 = time.perf_counter()
        canvases = prepare_canvases(
            source, indices, loaded.canvas_transform, loaded.transform_key, loaded.canvas_size,
            cfg.cache_dir, workers=cfg.workers,
            progress=progress.start(f"Canvases {loaded.canvas_size[0]}x{loaded.canvas_size[1]}", len(indices)),
        )
        t_canvas = time.perf_counter() - t0
        skipped_all.update(dict(canvases.skipped))
        rows = np.flatnonzero(canvases.valid)
        if rows.size == 0:
            raise DataError(f"none of the {len(indices)} images could be decoded (see {SKIPPED_CSV} reasons: "
                            f"{canvases.skipped[0][1] if canvases.skipped else 'unknown'})")

        t0 = time.perf_counter()
        classifier, cached = build_classifier(
            loaded, IMAGENET_CLASSNAMES, templates, cfg.cache_dir,
            progress=progress.start(f"Classifier {spec.label} ({len(templates)} templates)", len(IMAGENET_CLASSNAMES)),
        )
        t_classifier = time.perf_counter() - t0

        shards = [rows[i:i + cfg.chunk_size] for i in range(0, rows.size, cfg.chunk_size)]
        info["chunks_total"] += len(shards)
        slug = _model_slug(m_index, spec.label)
        per_image = 1 + len(conditions)
        advance = progress.start(f"Evaluating {spec.label}", rows.size * per_image)
        t0 = time.perf_counter()
        model_encoded = 0
        with torch.inference_mode():
            for s_index, shard in enumerate(shards):
                path = out / CHUNKS_DIR / slug / f"{s_index:05d}.parquet"
                chunk_paths.append(path)
                if path.is_file():
                    advance(shard.size * per_image)
                else:
                    frame = _evaluate_shard(loaded, classifier, canvases, shard, conditions, masks, cfg, advance)
                    _write_parquet_atomic(frame, path)
                    model_encoded += len(frame)
                info["chunks_done"] += 1
                save_info()
        t_eval = time.perf_counter() - t0
        encoded += model_encoded
        encode_seconds += t_eval
        info["models"].append({
            "name": spec.name, "pretrained": spec.pretrained, "weights_id": loaded.weights_id,
            "canvas_size": list(loaded.canvas_size), "canvas_transform": loaded.transform_key,
            "canvas_cache": canvases.path, "n_images": int(rows.size), "n_skipped": len(canvases.skipped),
            "classifier_from_cache": cached,
            "masks": [{"word": c.word, "fraction": c.fraction, "placement": c.placement.value,
                       "font_size": masks[c].font_size, "mask_coverage": round(masks[c].coverage, 6)}
                      for c in conditions],
            "seconds": {"load_model": round(t_model, 3), "canvases": round(t_canvas, 3),
                        "classifier": round(t_classifier, 3), "evaluate": round(t_eval, 3)},
            "images_encoded_this_session": model_encoded,
            "images_per_second": round(model_encoded / t_eval, 1) if model_encoded and t_eval > 0 else None,
        })
        save_info()
        del loaded, classifier

    records = pd.concat([pd.read_parquet(p) for p in chunk_paths], ignore_index=True)
    _write_parquet_atomic(records, out / RECORDS_FILE)
    per_word = write_tables(records, out, IMAGENET_CLASSNAMES)
    write_csv(pd.DataFrame(sorted(skipped_all.items()), columns=["image_id", "reason"]), out / SKIPPED_CSV)
    info.update({
        "complete": True,
        "n_records": len(records),
        "n_skipped": len(skipped_all),
        "clean": summarize_clean(records),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds_total_this_session": round(time.perf_counter() - t_start, 3),
        "images_per_second": round(encoded / encode_seconds, 1) if encoded and encode_seconds > 0 else None,
    })
    save_info()
    return RunResult(out, records, per_word, info)


def run_report(run_dir: str | Path) -> pd.DataFrame:
    """Recompute the tables of a finished run from its records.parquet.

    Returns:
        The per-word table.
    """
    from typoattack.report import load_records

    records = load_records(run_dir)
    return write_tables(records, run_dir, IMAGENET_CLASSNAMES)
