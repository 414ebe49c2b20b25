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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

import typoattack
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.config.loading import Placement, RenderStyle, RunConfig, Vocabulary, format_color, load_templates, load_vocab
from typoattack.constants import CLEAN_PLACEMENT, CLEAN_WORD, RECORD_COLUMNS
from typoattack.data.sources import CanvasSet, open_image_source, prepare_canvases, select_subset
from typoattack.errors import ConfigError, DataError, OutputError, TypoAttackError
from typoattack.analysis.metrics import build_per_word_table
from typoattack.attack.render import apply_attack, check_glyphs, create_attack_mask
from typoattack.analysis.report import (
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
    """One attack condition: a word drawn at a fraction with a placement and a text style."""

    word: str
    target_index: int
    fraction: float
    placement: Placement
    style: RenderStyle


@dataclass
class RunResult:
    """What `run_eval` produced."""

    out_dir: Path
    records: pd.DataFrame
    per_word: pd.DataFrame
    info: dict[str, Any]


def list_conditions(cfg: RunConfig, vocab: Vocabulary) -> list[Condition]:
    """The product of placements x fractions x styles x words, in a fixed order."""
    return [Condition(w.text, w.target_index, f, p, st)
            for p, f, st, w in itertools.product(cfg.placements, cfg.fractions, cfg.styles, vocab.words)]


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


def get_run_fingerprint(cfg: RunConfig, vocab: Vocabulary, templates: tuple[str, ...], image_ids: list[str]) -> str:
    """Hash of everything that determines the records: the config's settings and the contents
    behind its files (vocabulary words and targets, templates, the selected images).

    A rerun resumes only when this matches, so an edited vocabulary or data folder never mixes
    with chunks computed before the edit.
    """
    import hashlib

    h = hashlib.sha256(cfg.fingerprint().encode())
    h.update(json.dumps([(w.text, w.target_index) for w in vocab.words]).encode())
    h.update(json.dumps(list(templates)).encode())
    h.update("\n".join(image_ids).encode())
    return h.hexdigest()


def _prepare_out_dir(out: Path, fingerprint: str, overwrite: bool) -> dict[str, Any] | None:
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
            shutil.rmtree(out / "report", ignore_errors=True)
            return None
        if previous.get("fingerprint") != fingerprint:
            raise OutputError(
                f"{out} holds a different run (another config, seed, vocabulary or image set); "
                "choose another --out or pass --overwrite"
            )
        return previous
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} is not empty and holds no typoattack run; choose another --out or pass --overwrite")
    return None


def _validate_before_loading(cfg: RunConfig) -> tuple[Vocabulary, tuple[str, ...]]:
    """Everything that can be checked without loading a model or decoding an image."""
    from typoattack.models.loading import check_precision, check_weights_available, get_canvas_size, resolve_device

    vocab = load_vocab(cfg.vocab)
    templates = load_templates(cfg.templates)
    for style in cfg.styles:
        for word in vocab.words:
            check_glyphs(word.text, style.font)
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)
    for spec in cfg.models:
        check_weights_available(spec)
        size = get_canvas_size(spec)
        if size is not None:
            for cond in list_conditions(cfg, vocab):
                create_attack_mask(cond.word, cond.fraction, cond.placement, cond.style, size)
    return vocab, templates


class _Encoder:
    """Encode batches, halving the sub-batch size after a CUDA out-of-memory error."""

    def __init__(self, loaded: Any, classifier: Any, batch_size: int, progress: ProgressReporter) -> None:
        self.loaded, self.classifier, self.max_batch, self.progress = loaded, classifier, batch_size, progress

    def __call__(self, x: Any) -> Any:
        import torch

        from typoattack.models.classify import encode_images

        parts, start = [], 0
        while start < len(x):
            try:
                parts.append(encode_images(self.loaded, self.classifier, x[start:start + self.max_batch]))
                start += self.max_batch
            except torch.cuda.OutOfMemoryError:
                if self.max_batch == 1:
                    raise
                self.max_batch //= 2
                torch.cuda.empty_cache()
                self.progress.log(f"[yellow]Out of GPU memory: encoder batch size lowered to {self.max_batch}[/]")
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def resolve_batch_size(batch_size: int | None, device: Any) -> int:
    """The batch size to start with: the configured one, or for `auto` 1024 on CUDA, 256 on CPU."""
    if batch_size:
        return batch_size
    return 1024 if device.type == "cuda" else 256


def _evaluate_shard(loaded: Any, encoder: _Encoder, canvases: CanvasSet, rows: np.ndarray,
                    conditions: list[Condition], device_masks: list[Any], cfg: RunConfig, batch_size: int,
                    advance: Callable[[int], None]) -> pd.DataFrame:
    """Classify the clean canvas and every attacked canvas of the given rows.

    Jobs run condition by condition (clean first), so a batch holds few conditions and each mask
    is blended onto many canvases at once, on the model's device.
    """
    import torch

    from typoattack.models.classify import summarize_logits
    from typoattack.attack.compose import composite_batch, get_offsets

    device = loaded.device
    n_rows, n_cond = len(rows), 1 + len(conditions)
    job_cond = np.repeat(np.arange(n_cond), n_rows)  # 0 = clean, k = conditions[k - 1]
    job_pos = np.tile(np.arange(n_rows), n_cond)  # position of the job's image in `rows`
    ids = [canvases.items[int(r)].image_id for r in rows]
    trues = np.array([canvases.items[int(r)].true_index for r in rows], dtype=np.int64)
    targets = np.array([-1] + [c.target_index for c in conditions], dtype=np.int64)
    offsets = [None] + [get_offsets(dm.mask, ids, cfg.seed) for dm in device_masks]
    pin = device.type == "cuda"

    def load(start: int) -> tuple[np.ndarray, Any]:
        pos = job_pos[start:start + batch_size]
        unique, inverse = np.unique(pos, return_inverse=True)
        host = torch.from_numpy(np.ascontiguousarray(canvases.canvases[rows[unique]]))
        if pin:
            host = host.pin_memory()
        return inverse, host

    n_jobs = len(job_cond)
    covers = np.zeros(n_jobs, np.float64)
    results: list[dict[str, np.ndarray]] = []
    starts = list(range(0, n_jobs, batch_size))
    with ThreadPoolExecutor(max_workers=1) as pool:  # reads the next batch while this one runs
        pending = pool.submit(load, starts[0])
        for i, start in enumerate(starts):
            inverse, host = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(load, starts[i + 1])
            stop = min(start + batch_size, n_jobs)
            x = host.to(device, non_blocking=pin)[torch.from_numpy(inverse).to(device)].float()
            cond = job_cond[start:stop]
            for k in np.unique(cond[cond > 0]):
                sel = np.flatnonzero(cond == k)  # contiguous: jobs are condition-major
                a, b = int(sel[0]), int(sel[-1]) + 1
                off = offsets[k]
                off_rows = None if off is None else off[job_pos[start + a:start + b]]
                changed = composite_batch(x[a:b], device_masks[k - 1], off_rows).cpu().numpy()
                covers[start + a:start + b] = changed / (x.shape[1] * x.shape[2])
            logits = encoder(x)
            results.append(summarize_logits(logits, targets[cond], trues[job_pos[start:stop]]))
            advance(stop - start)

    words = np.array([CLEAN_WORD] + [c.word for c in conditions], dtype=object)
    fractions = np.array([0.0] + [c.fraction for c in conditions])
    placements = np.array([CLEAN_PLACEMENT] + [c.placement.value for c in conditions], dtype=object)
    fonts = np.array([""] + [Path(c.style.font).name for c in conditions], dtype=object)
    fills = np.array([""] + [format_color(c.style.fill) for c in conditions], dtype=object)
    outlines = np.array([""] + [format_color(c.style.outline) for c in conditions], dtype=object)
    widths = np.array([-1] + [c.style.outline_width for c in conditions], dtype=np.int64)
    opacities = np.array([np.nan] + [c.style.opacity for c in conditions], dtype=np.float64)
    frame = pd.DataFrame({
        "image_id": np.array(ids, dtype=object)[job_pos],
        "true_index": trues[job_pos],
        "model": loaded.spec.name,
        "pretrained": loaded.spec.pretrained or "",
        "word": words[job_cond],
        "target_index": targets[job_cond],
        "fraction": fractions[job_cond],
        "placement": placements[job_cond],
        "font": fonts[job_cond],
        "fill": fills[job_cond],
        "outline": outlines[job_cond],
        "outline_width": widths[job_cond],
        "opacity": opacities[job_cond],
        "pixel_cover": covers,
        "pred_index": np.concatenate([r["pred_index"] for r in results]),
        "pred_top5": list(np.concatenate([r["pred_top5"] for r in results])),
        "p_target": np.concatenate([r["p_target"] for r in results]).astype(np.float32),
        "p_true": np.concatenate([r["p_true"] for r in results]).astype(np.float32),
    })
    # Records are stored image by image (clean first), whatever the batch or chunk size.
    order = np.lexsort((job_cond, job_pos))
    return frame[RECORD_COLUMNS].iloc[order].reset_index(drop=True)


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

    from typoattack.models.classify import build_classifier
    from typoattack.attack.compose import upload_mask
    from typoattack.models.loading import create_model, resolve_device

    progress = progress or NullProgress()
    if not cfg.out:
        raise ConfigError("no output folder; pass --out DIR or set `out` in the config")
    out = Path(cfg.out)
    t_start = time.perf_counter()
    vocab, templates = _validate_before_loading(cfg)
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    fingerprint = get_run_fingerprint(cfg, vocab, templates, [source.items[i].image_id for i in indices])
    previous = _prepare_out_dir(out, fingerprint, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    conditions = list_conditions(cfg, vocab)
    if is_untrained(cfg):
        progress.log("[bold yellow]UNTRAINED MODEL: weights are random (seed:N); these numbers only check the pipeline, "
                     "they say nothing about CLIP.[/]")

    info: dict[str, Any] = {
        "complete": False,
        "fingerprint": fingerprint,
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
        loaded = create_model(spec, device, cfg.precision, compile=cfg.compile)
        t_model = time.perf_counter() - t0
        masks = {c: create_attack_mask(c.word, c.fraction, c.placement, c.style, loaded.canvas_size)
                 for c in conditions}
        device_masks = [upload_mask(masks[c], device) for c in conditions]

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
        batch_size = resolve_batch_size(cfg.batch_size, device)
        encoder = _Encoder(loaded, classifier, batch_size, progress)
        t0 = time.perf_counter()
        model_encoded = 0
        with torch.inference_mode():
            for s_index, shard in enumerate(shards):
                path = out / CHUNKS_DIR / slug / f"{s_index:05d}.parquet"
                chunk_paths.append(path)
                if path.is_file():
                    advance(shard.size * per_image)
                else:
                    frame = _evaluate_shard(loaded, encoder, canvases, shard, conditions, device_masks, cfg,
                                            batch_size, advance)
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
            "batch_size": batch_size, "encoder_batch_size_final": encoder.max_batch,
            "masks": [{"word": c.word, "fraction": c.fraction, "placement": c.placement.value,
                       "font": Path(c.style.font).name, "fill": format_color(c.style.fill),
                       "outline": format_color(c.style.outline),
                       "font_size": masks[c].font_size, "mask_coverage": round(masks[c].coverage, 6)}
                      for c in conditions],
            "seconds": {"load_model": round(t_model, 3), "canvases": round(t_canvas, 3),
                        "classifier": round(t_classifier, 3), "evaluate": round(t_eval, 3)},
            "images_encoded_this_session": model_encoded,
            "images_per_second": round(model_encoded / t_eval, 1) if model_encoded and t_eval > 0 else None,
        })
        save_info()
        del loaded, classifier, encoder

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


def run_prepare(cfg: RunConfig, progress: ProgressReporter | None = None) -> list[dict[str, Any]]:
    """Fill the canvas cache for every distinct canvas transform of the config's models.

    Later `eval` runs with any words, fractions or models of those canvas sizes read the cache.

    Returns:
        One summary per canvas cache (path, size, images, skipped, seconds, GB).
    """
    from typoattack.models.loading import get_canvas_transform

    progress = progress or NullProgress()
    source = open_image_source(cfg.data)
    indices = select_subset(source.items, cfg.limit, cfg.seed)
    summaries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for spec in cfg.models:
        transform, key, size = get_canvas_transform(spec)
        if key in seen:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        canvases = prepare_canvases(source, indices, transform, key, size, cfg.cache_dir, workers=cfg.workers,
                                    progress=progress.start(f"Canvases {size[0]}x{size[1]}", len(indices)))
        summaries.append({"cache": canvases.path, "canvas_size": list(size), "n_images": len(indices),
                          "n_skipped": len(canvases.skipped), "seconds": round(time.perf_counter() - t0, 2),
                          "gigabytes": round(Path(canvases.path).stat().st_size / 1e9, 3)})
    return summaries


def _file_slug(text: str) -> str:
    """A file-name-safe spelling of a word ('$$$' -> 'x24x24x24')."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"x{ord(c):02x}" for c in text) or "empty"


def _collect_examples(records: pd.DataFrame, info: dict[str, Any], per_word_images: int) -> list[dict[str, Any]]:
    """Re-render a few attacked canvases per word from the records' conditions and source images."""
    from typoattack.config.loading import DataSpec, ModelSpec, RenderStyle
    from typoattack.models.loading import get_canvas_transform

    config = info["config"]
    model = config["models"][0]
    spec = ModelSpec(model["name"], model.get("pretrained"))
    transform, _, size = get_canvas_transform(spec)
    source = open_image_source(DataSpec(**config["data"]))
    index = {item.image_id: i for i, item in enumerate(source.items)}
    styles = {(Path(st["font"]).name, format_color(tuple(st["fill"])), format_color(tuple(st["outline"]))): st
              for st in config["styles"]}
    mine = records[(records["model"] == spec.name) & (records["pretrained"] == (spec.pretrained or ""))]
    clean = mine[mine["word"] == CLEAN_WORD].set_index("image_id")["pred_index"]
    attacked = mine[mine["word"] != CLEAN_WORD]
    examples = []
    for word in dict.fromkeys(attacked["word"]):
        rows = attacked[attacked["word"] == word]
        first = rows.iloc[0]
        same = ["fraction", "placement", "font", "fill", "outline"]
        cond = rows[(rows[same] == first[same]).all(axis=1)]
        st = styles[(first["font"], first["fill"], first["outline"])]
        style = RenderStyle(font=st["font"], fill=tuple(st["fill"]), outline=tuple(st["outline"]),
                            outline_width=st["outline_width"], opacity=st["opacity"])
        mask = create_attack_mask(word, float(first["fraction"]), Placement(first["placement"]), style, size)
        for r in cond.head(per_word_images).itertuples():
            canvas = np.asarray(transform(source.open_image(index[r.image_id])), dtype=np.uint8)
            image, _ = apply_attack(canvas, mask, r.image_id, int(info["seed"]))
            examples.append({"word": word, "image": image, "true_name": IMAGENET_CLASSNAMES[r.true_index],
                             "clean_pred": IMAGENET_CLASSNAMES[int(clean[r.image_id])],
                             "attacked_pred": IMAGENET_CLASSNAMES[r.pred_index],
                             "target_name": IMAGENET_CLASSNAMES[r.target_index]})
    return examples


def run_report(run_dirs: list[str | Path] | str | Path, out_dir: str | Path | None = None,
               progress: ProgressReporter | None = None, examples_per_word: int = 4) -> tuple[pd.DataFrame, Path]:
    """Recompute each run's tables from its records, then write plots, a leaderboard and a
    self-contained report over all the runs.

    Args:
        run_dirs: One or more folders written by `eval` (complete runs).
        out_dir: Where the report goes (default: `<run_dir>/report` for one run, else
            `typoattack-report`).
        progress: Where to show messages.
        examples_per_word: Attacked canvases shown per word in examples.png.

    Returns:
        (the per-word table over all runs, the report folder).
    """
    from typoattack.analysis import plots
    from typoattack.analysis.report import load_records, read_run_info

    progress = progress or NullProgress()
    dirs = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not dirs:
        raise OutputError("give at least one run directory")
    infos, all_records = [], []
    for d in dirs:
        records = load_records(d)
        if records.empty or (records["word"] != CLEAN_WORD).sum() == 0:
            raise OutputError(f"the run in {d} has no attacked records; nothing to report")
        write_tables(records, d, IMAGENET_CLASSNAMES)
        infos.append(read_run_info(d))
        all_records.append(records)
    records = pd.concat(all_records, ignore_index=True)
    key = ["model", "pretrained", "image_id", "word", "fraction", "placement", "font", "fill", "outline"]
    if records.duplicated([k for k in key if k in records.columns]).any():
        raise OutputError("two of the runs hold the same model and condition; report runs of different models or settings")
    out = Path(out_dir) if out_dir else (dirs[0] / "report" if len(dirs) == 1 else Path("typoattack-report"))
    out.mkdir(parents=True, exist_ok=True)
    per_word = build_per_word_table(records, IMAGENET_CLASSNAMES)
    figures = [out / "asr_vs_fraction.png", out / "asr_by_word.png", out / "accuracy.png"]
    plots.plot_asr_vs_fraction(per_word, figures[0])
    plots.plot_asr_by_word(per_word, figures[1])
    plots.plot_accuracy(per_word, figures[2])
    for word in dict.fromkeys(records.loc[records["word"] != CLEAN_WORD, "word"]):
        path = out / f"confusion_{_file_slug(word)}.png"
        plots.plot_confusion(records, word, IMAGENET_CLASSNAMES, path)
        figures.append(path)
    try:
        examples = _collect_examples(all_records[0], infos[0], examples_per_word)
    except TypoAttackError as e:
        progress.log(f"[yellow]examples.png skipped: the source images cannot be read here ({e})[/]")
    else:
        plots.plot_examples(examples, out / "examples.png")
        figures.append(out / "examples.png")
    leaderboard = plots.build_leaderboard(per_word)
    write_csv(leaderboard, out / "leaderboard.csv")
    write_atomic(out / "leaderboard.md", plots.format_leaderboard_markdown(leaderboard))
    write_csv(per_word, out / PER_WORD_CSV)
    plots.write_report(out, per_word, leaderboard, figures, infos)
    return per_word, out
