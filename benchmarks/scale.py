"""Scale benchmark: `typoattack report` and `typoattack merge` on a fabricated `eval` run of N records.

Fabricates a complete `eval` run folder of about N records in the real record schema, written
through the project's own record builder (`typoattack.records.build_records`) and run folder
(`RunFolder.save_chunk`, `save_info`, `write_skipped`):

- the whole ImageNet-class vocabulary (998 words, `--vocab imagenet-classes`) at fractions 0.04
  and 0.10 with paper8 and random placement: 3,993 records per image (one clean), for the demo
  model typoattack-reader-tiny/ci500;
- images named like ImageNet-val (`ILSVRC2012_val_00000001`), their classes spread over the 1000
  classes; `config.data` is a labelled folder of links to the shipped sample images under those
  names, so the report draws its examples (`--sample-data`: the sample itself, which holds none of
  the ids);
- clean top-1 70%; 3-28% of a word's attacks succeed (by word, more at the larger fraction); the
  other attacked predictions mostly keep the clean one, else move to a class near the target or
  the true class (wrong clean predictions too: near the true class);
- cells of at most 250 images (about 1 M records; fewer in small runs, so that each shard gets 2
  cells), generated one at a time per `--workers` process: fabricating holds one cell per worker;
- with `--shards S`, the cells are written as the S shard folders of `typoattack eval --shard K/S`
  (round-robin, `select_shard`), and the whole run folder hard-links their chunk files.

Then it times, one at a time, as child processes, `typoattack report RUN` and (with shards)
`typoattack merge SHARD... --out DIR/merged`, and prints one line per step:

    records: 100000000  step: report  seconds: 312.4  peak RSS: 1.71 GiB

(peak RSS: the command's `ru_maxrss`, read by a small wrapper process that starts it, so the
benchmark's own memory is not counted), after a `fabricate` line with the fabrication time and the
size of records.parquet on disk. Writing tables and merging import no model library (torch alone
is about 0.5 GiB); the report loads one to draw its example images. The folders are deleted at
the end unless `--keep`; `--out` defaults to a new temporary folder (never inside the repository).

Targets (2-core development machine, default TYPOATTACK_MEMORY_LIMIT):
- 100 M records: `report` peak RSS <= 2 GiB and <= 10 min;
- `merge` of 8 shards (100 M records): peak RSS <= 1 GiB and <= 2 min;
- peak RSS at 100 M records <= 1.25 x that at 10 M (memory does not grow with the records).

Examples:

    python benchmarks/scale.py --records 1000000 --shards 4
    python benchmarks/scale.py --records 10000000 --shards 8      # the 1.25x reference
    python benchmarks/scale.py --records 100000000 --shards 8     # about 2.6 GB on disk
    python benchmarks/scale.py --records 2000000 --steps report --keep --out /tmp/scale
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from typoattack.config.types import ShardSpec  # noqa: E402
from typoattack.constants import CLEAN_WORD, SAMPLE_DIR  # noqa: E402
from typoattack.data.classes import list_class_names  # noqa: E402
from typoattack.data.vocab import load_vocab  # noqa: E402
from typoattack.engine.rundir import (  # noqa: E402
    ENGINE_FILES, RECORDS_FILE, ChunkProvenance, RunFolder, RunInfo, get_cell_id, get_items_digest, get_timestamp,
    get_versions, select_shard,
)
from typoattack.records import Condition, build_records, list_conditions  # noqa: E402
from typoattack.tasks.shared import build_fingerprint, get_templates  # noqa: E402
from typoattack.tasks.synthetic.config import SyntheticConfig, load_synthetic_config  # noqa: E402

TASK_NAME = "eval"
N_CLASSES = 1000
IMAGES_PER_CELL = 250
"""Images per cell at most: 250 x 3,993 = 998,250 records (about 1 M) per chunk file; by default
fewer in small runs, so that each shard gets at least CELLS_PER_SHARD cells."""
CELLS_PER_SHARD = 2
CLEAN_TOP1 = 0.7
"""Share of images the model classifies right when clean (exactly, per block of 10 images)."""
KEEP_CLEAN = 0.8
"""Share of failed attacks whose prediction stays the image's clean prediction; the others move to
a class near the target or near the true class (half each). Wrong clean predictions are near the
true class. How concentrated predictions are sets the size of the confusion table."""
NEAR = 3
"""A class "near" class c: c +- 1..NEAR in ImageNet's order, where similar classes sit together."""
TRUE_IN_TOP5 = 0.6
"""Share of wrong predictions whose top-5 still holds the true class."""
COVER_SCALE, COVER_NOISE = 0.97, 0.02
"""Measured pixel cover = fraction x N(COVER_SCALE, COVER_NOISE) (a few pixels already had the text's colour)."""
SETTINGS: dict[str, Any] = {
    "vocab": "imagenet-classes", "fractions": [0.04, 0.10], "placement": ["paper8", "random"],
    "model": "typoattack-reader-tiny", "pretrained": "ci500", "seed": 0, "limit": None,
}
"""Overrides of the built-in `ci` config (`fabricate` sets `data`, `out` and `chunk_size`)."""
STEPS = ("report", "merge")
GIB = 1024 ** 3


@dataclass(frozen=True)
class Layout:
    """The fabricated run: its config, cells and fingerprint.

    Attributes:
        cfg: The run's config (`out`: the whole run's folder).
        fingerprint: As `typoattack eval` computes it from the config, words, templates and images.
        n_images: Images of the run.
        cell_ids: Every cell id, in run order.
        cell_images: The global positions [start, stop) of each cell's images.
        true_index: int64 [n_images] the class of each image.
    """

    cfg: SyntheticConfig
    fingerprint: str
    n_images: int
    cell_ids: list[str]
    cell_images: list[tuple[int, int]]
    true_index: np.ndarray


@dataclass
class CellStats:
    """What one written cell holds, for the totals and run.json."""

    n_records: int = 0
    n_images: int = 0
    clean_correct: int = 0
    clean_top5: int = 0
    attacked: int = 0
    succeeded: int = 0
    attacked_classes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, other: CellStats) -> None:
        for name in ("n_records", "n_images", "clean_correct", "clean_top5", "attacked", "succeeded"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.attacked_classes = np.union1d(self.attacked_classes, other.attacked_classes)


@dataclass
class Fabricated:
    """The folders `fabricate` wrote and what they hold.

    Attributes:
        run_dir: The complete whole run.
        shard_dirs: The complete shard folders (empty without shards).
        n_records: Records of the run.
        n_images: Images of the run.
        n_cells: Cells (chunk files) of the run.
        records_bytes: Size of the whole run's records.parquet on disk.
        seconds: Wall time of the fabrication.
        stats: Totals over the cells.
    """

    run_dir: Path
    shard_dirs: list[Path]
    n_records: int
    n_images: int
    n_cells: int
    records_bytes: int
    seconds: float
    stats: CellStats


# --------------------------------------------------------------------------------------------
# The run's layout


def build_config(run_dir: Path, data: Path, images_per_cell: int, seed: int) -> SyntheticConfig:
    """The `eval` config of the fabricated run: the built-in `ci` config with SETTINGS."""
    return load_synthetic_config("ci", {**SETTINGS, "seed": seed, "out": str(run_dir), "data": str(data),
                                        "chunk_size": images_per_cell})


@lru_cache(maxsize=4)
def get_conditions(cfg: SyntheticConfig) -> tuple[Condition, ...]:
    """The run's attack conditions, in `typoattack eval`'s order."""
    return tuple(list_conditions(cfg, load_vocab(cfg.vocab)))


def get_image_id(position: int) -> str:
    """ImageNet-val's name of the image at a 0-based position."""
    return f"ILSVRC2012_val_{position + 1:08d}"


def choose_images_per_cell(n_images: int, shards: int) -> int:
    """IMAGES_PER_CELL, or fewer so that each of the shards (or the whole run) gets CELLS_PER_SHARD cells."""
    return max(1, min(IMAGES_PER_CELL, -(-n_images // (CELLS_PER_SHARD * max(shards, 1)))))


def plan_layout(records: int, run_dir: Path, data: Path = SAMPLE_DIR, images_per_cell: int | None = None,
                seed: int = 0, shards: int = 0) -> Layout:
    """The cells, image classes and fingerprint of a run of about `records` records (at least one
    image) whose config reads its images from `data` (cells: `images_per_cell` images, or
    `choose_images_per_cell`)."""
    cfg = build_config(run_dir, data, images_per_cell or IMAGES_PER_CELL, seed)
    vocab = load_vocab(cfg.vocab)
    per_image = 1 + len(get_conditions(cfg))
    n_images = max(1, round(records / per_image))
    if images_per_cell is None:
        images_per_cell = choose_images_per_cell(n_images, shards)
        cfg = dataclasses.replace(cfg, chunk_size=images_per_cell)
    spec = cfg.models[0]
    bounds = [(s, min(s + images_per_cell, n_images)) for s in range(0, n_images, images_per_cell)]
    cell_ids = [get_cell_id(0, spec, k) for k in range(len(bounds))]
    fingerprint = build_fingerprint(cfg, [(w.text, w.target_index) for w in vocab.words],
                                    [get_templates(cfg.templates, spec)], [get_image_id(i) for i in range(n_images)])
    true_index = np.random.default_rng([seed, 4]).integers(0, N_CLASSES, n_images).astype(np.int64)
    return Layout(cfg, fingerprint, n_images, cell_ids, bounds, true_index)


def write_image_folder(folder: Path, true_index: np.ndarray) -> None:
    """A labelled image folder (`labels.csv`) holding every image of the run under its id: a hard
    link (or a symbolic one) to the shipped sample image of its class, or of the class below it
    (the sample has the even classes), so the report can draw its examples."""
    sample = pd.read_csv(SAMPLE_DIR / "labels.csv")
    by_class = dict(zip(sample["class_index"].astype(int), sample["file"].astype(str)))
    folder.mkdir(parents=True, exist_ok=True)
    names = [get_image_id(i) for i in range(true_index.size)]
    for name, cls in zip(names, true_index.tolist()):
        source = SAMPLE_DIR / by_class.get(cls, by_class.get(cls - cls % 2, sample["file"].iloc[0]))
        try:
            os.link(source, folder / name)
        except OSError:
            os.symlink(source, folder / name)
    pd.DataFrame({"file": names, "class_index": true_index}).to_csv(folder / "labels.csv", index=False)


def get_provenance(layout: Layout, cell: int) -> ChunkProvenance:
    """The provenance `typoattack eval` gives the chunk of a cell (its items: the image positions)."""
    start, stop = layout.cell_images[cell]
    return ChunkProvenance(layout.fingerprint, layout.cell_ids[cell], get_items_digest(np.arange(start, stop)), 0)


# --------------------------------------------------------------------------------------------
# One cell's records


@lru_cache(maxsize=4)
def get_condition_arrays(cfg: SyntheticConfig) -> dict[str, np.ndarray]:
    """Per job condition (0: clean, c: conditions[c - 1]): target class, fraction and the chance
    that an attack succeeds (a base rate per word, 3-28%, scaled up with the fraction and for paper8)."""
    conditions = get_conditions(cfg)
    words = [w.text for w in load_vocab(cfg.vocab).words]
    base = dict(zip(words, 0.03 + 0.25 * np.random.default_rng([cfg.seed, 1]).beta(2.0, 5.0, len(words))))
    middle = float(np.mean(cfg.fractions))
    rate = [base[c.word] * (c.fraction / middle) ** 0.8 * (1.1 if c.placement.value == "paper8" else 0.9)
            for c in conditions]
    return {"target": np.array([-1, *(c.target_index for c in conditions)], np.int64),
            "fraction": np.array([0.0, *(c.fraction for c in conditions)], np.float64),
            "rate": np.clip(np.array([0.0, *rate]), 0.0, 0.95)}


def draw_clean_correct(seed: int, start: int, stop: int) -> np.ndarray:
    """Whether the model is right on each clean image of [start, stop): exactly round(10 x
    CLEAN_TOP1) of every block of 10 consecutive images, which ones drawn per block."""
    first, last = start // 10, (stop - 1) // 10
    blocks = [np.random.default_rng([seed, 2, b]).permutation(10) < round(10 * CLEAN_TOP1)
              for b in range(first, last + 1)]
    return np.concatenate(blocks)[start - first * 10:stop - first * 10]


def draw_top5(rng: np.random.Generator, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """int64 [n, 5] distinct classes, the prediction first; the true class second in TRUE_IN_TOP5
    of the rows where it is not the prediction (and not drawn already)."""
    steps = np.cumsum(rng.integers(1, 200, (pred.size, 4)), axis=1)  # < 1000: the five stay distinct
    top5 = (pred[:, None] + np.concatenate([np.zeros((pred.size, 1), np.int64), steps], axis=1)) % N_CLASSES
    put = (pred != true) & (rng.random(pred.size) < TRUE_IN_TOP5) & ~(top5 == true[:, None]).any(axis=1)
    top5[put, 1] = true[put]
    return top5


def draw_near(rng: np.random.Generator, classes: np.ndarray) -> np.ndarray:
    """A class near each of `classes` (never the class itself)."""
    step = rng.integers(1, NEAR + 1, classes.size) * rng.choice(np.array([-1, 1]), classes.size)
    return (classes + step) % N_CLASSES


def draw_outcomes(rng: np.random.Generator, cfg: SyntheticConfig, true: np.ndarray, correct: np.ndarray,
                  job_image: np.ndarray, job_condition: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pixel cover and `summarize_logits`-like outcomes of every job (vectorised)."""
    arrays = get_condition_arrays(cfg)
    n = job_image.size
    clean_pred = np.where(correct, true, draw_near(rng, true))
    target = arrays["target"][job_condition]
    job_true = true[job_image]
    attacked = job_condition > 0
    success = attacked & (rng.random(n) < arrays["rate"][job_condition])
    keep = rng.random(n) < KEEP_CLEAN
    moved = draw_near(rng, np.where(rng.random(n) < 0.5, target, job_true))
    pred = np.where(~attacked, clean_pred[job_image],
                    np.where(success, target, np.where(keep, clean_pred[job_image], moved)))
    cover = np.clip(arrays["fraction"][job_condition] * rng.normal(COVER_SCALE, COVER_NOISE, n), 0.0, 1.0)
    p_target = np.where(success, rng.uniform(0.35, 0.95, n), rng.random(n) ** 3 * 0.3).astype(np.float32)
    p_target[~attacked] = np.nan
    p_true = np.where(pred == job_true, rng.uniform(0.3, 0.99, n), rng.random(n) ** 2 * 0.3).astype(np.float32)
    outcomes = {"pred_index": pred.astype(np.int64), "pred_top5": draw_top5(rng, pred, job_true),
                "p_target": p_target, "p_true": p_true}
    return cover, outcomes


def build_cell_records(layout: Layout, cell: int) -> pd.DataFrame:
    """The records of one cell, built by `build_records`."""
    cfg, (start, stop) = layout.cfg, layout.cell_images[cell]
    conditions = get_conditions(cfg)
    rng = np.random.default_rng([cfg.seed, 3, cell])
    n_images, per_image = stop - start, 1 + len(conditions)
    true = layout.true_index[start:stop]
    job_image = np.repeat(np.arange(n_images), per_image)
    job_condition = np.tile(np.arange(per_image), n_images)
    cover, outcomes = draw_outcomes(rng, cfg, true, draw_clean_correct(cfg.seed, start, stop), job_image,
                                    job_condition)
    return build_records(cfg.models[0], [get_image_id(i) for i in range(start, stop)], true, list(conditions),
                         job_condition, job_image, cover, [outcomes])


def summarize_cell(records: pd.DataFrame) -> CellStats:
    """Counts of a cell's records (clean accuracy, attack success, attacked classes)."""
    clean = (records["word"] == CLEAN_WORD).to_numpy()
    pred, true = records["pred_index"].to_numpy(), records["true_index"].to_numpy()
    top5 = np.stack(records["pred_top5"].to_numpy()[clean]) if clean.any() else np.zeros((0, 5), np.int64)
    attacked = ~clean
    return CellStats(
        n_records=len(records), n_images=int(clean.sum()), clean_correct=int((pred[clean] == true[clean]).sum()),
        clean_top5=int((top5 == true[clean][:, None]).any(axis=1).sum()), attacked=int(attacked.sum()),
        succeeded=int((pred[attacked] == records["target_index"].to_numpy()[attacked]).sum()),
        attacked_classes=np.unique(pred[attacked]))


def write_cell(folder: Path, layout: Layout, cell: int) -> CellStats:
    """Build and commit one cell's chunk into a run folder (a worker's job)."""
    records = build_cell_records(layout, cell)
    RunFolder(folder).save_chunk(get_provenance(layout, cell), records)
    return summarize_cell(records)


# --------------------------------------------------------------------------------------------
# The folders


def build_run_info(layout: Layout, folder: Path, cells: Sequence[int], stats: CellStats,
                   shard: ShardSpec | None) -> RunInfo:
    """run.json of a complete whole run or shard, as `typoattack eval` writes it."""
    cfg = dataclasses.replace(layout.cfg, out=str(folder), shard=shard)
    spec = cfg.models[0]
    vocab = load_vocab(cfg.vocab)
    names = list_class_names()
    mine = [layout.cell_ids[k] for k in cells]
    clean = [{"model": spec.name, "pretrained": spec.pretrained or "", "defence": "none", "n_images": stats.n_images,
              "clean_top1": stats.clean_correct / max(stats.n_images, 1),
              "clean_top5": stats.clean_top5 / max(stats.n_images, 1)}]
    now = get_timestamp()
    return RunInfo(
        task=TASK_NAME, fingerprint=layout.fingerprint, config=cfg.to_dict(), versions=get_versions(),
        device="fabricated by benchmarks/scale.py", started=now, executor=cfg.executor.value,
        cells=list(layout.cell_ids), shard=None if shard is None else {"index": shard.index, "count": shard.count,
                                                                       "cells": mine},
        files=[*ENGINE_FILES, *get_output_files()], n_items=layout.n_images, chunks_total=len(mine),
        chunks_done=len(mine), complete=True,
        models=[{"name": spec.name, "pretrained": spec.pretrained, "backend": spec.backend,
                 "n_images": stats.n_images, "n_skipped": 0, "seconds": {}, "images_encoded_this_session": 0,
                 "images_per_second": None}],
        n_records=stats.n_records, n_skipped=0, finished=now, seconds_total_this_session=0.0,
        extra={"vocab": {"name": vocab.name, "path": vocab.path,
                         "words": [{"text": w.text, "target_index": w.target_index,
                                    "target_name": names[w.target_index]} for w in vocab.words]},
               "templates": {"name": cfg.templates, "count": len(get_templates(cfg.templates, spec))},
               "clean": clean, "fabricated": True},
    )


def get_output_files() -> tuple[str, ...]:
    """The tables an `eval` run lists in run.json (the task's own list)."""
    from typoattack.tasks.synthetic.task import OUTPUT_FILES

    return tuple(OUTPUT_FILES)


def run_cells(jobs: Sequence[tuple[Path, int]], layout: Layout, workers: int) -> Iterator[tuple[Path, int, CellStats]]:
    """Write each (folder, cell) chunk, in this process or on `workers` processes (each holds one cell)."""
    if workers <= 1:
        for folder, cell in jobs:
            yield folder, cell, write_cell(folder, layout, cell)
        return
    with ProcessPoolExecutor(workers) as pool:
        futures = [(folder, cell, pool.submit(write_cell, folder, layout, cell)) for folder, cell in jobs]
        for folder, cell, future in futures:
            yield folder, cell, future.result()


def open_folder(path: Path, layout: Layout, shard: ShardSpec | None) -> RunFolder:
    """A new, locked run folder with an empty records.parquet/ for its cells."""
    shard_doc = None if shard is None else {"index": shard.index, "count": shard.count}
    folder, _ = RunFolder.open(path, layout.fingerprint, False, shard_doc)
    folder.prepare_records(select_shard(layout.cell_ids, shard))
    return folder


def finish_folder(folder: RunFolder, layout: Layout, cells: Sequence[int], stats: CellStats,
                  shard: ShardSpec | None) -> None:
    """Write skipped.csv (nothing skipped) and the complete run.json, and release the folder."""
    folder.write_skipped({})
    folder.save_info(build_run_info(layout, folder.path, cells, stats, shard))
    folder.unlock()


def fabricate(records: int, out: Path, shards: int = 0, images_per_cell: int | None = None, seed: int = 0,
              workers: int = 1, sample_data: bool = False) -> Fabricated:
    """Write a complete `eval` run of about `records` records into `out/run` (and, with `shards`,
    its shard folders `out/shard-K-of-S`, whose chunk files the whole run hard-links), its config
    reading its images from `out/images` (`write_image_folder`), or with `sample_data` from the
    shipped sample, which holds none of the run's image ids.

    Raises:
        OutputError: A folder to write holds something else.
    """
    t0 = time.perf_counter()
    run_dir = out / "run"
    data = SAMPLE_DIR if sample_data else out / "images"
    layout = plan_layout(records, run_dir, data, images_per_cell, seed, shards)
    if not sample_data:
        write_image_folder(data, layout.true_index)
    everything = list(range(len(layout.cell_ids)))
    specs = [ShardSpec(k, shards) for k in range(1, shards + 1)] if shards else [None]
    dirs = {spec: (out / f"shard-{spec.index}-of-{spec.count}" if spec else run_dir) for spec in specs}
    owned = {spec: select_shard(everything, spec) for spec in specs}
    folders = {spec: open_folder(dirs[spec], layout, spec) for spec in specs}
    stats = {spec: CellStats() for spec in specs}
    owner = {cell: spec for spec in specs for cell in owned[spec]}
    jobs = [(dirs[owner[cell]], cell) for cell in everything]
    by_dir = {dirs[spec]: spec for spec in specs}
    for folder_path, _, cell_stats in run_cells(jobs, layout, workers):
        stats[by_dir[folder_path]].add(cell_stats)
    for spec in specs:
        finish_folder(folders[spec], layout, owned[spec], stats[spec], spec)
    total = CellStats()
    for s in stats.values():
        total.add(s)
    if shards:
        link_whole_run(layout, run_dir, {cell: dirs[spec] for cell, spec in owner.items()}, total)
    return Fabricated(run_dir, [dirs[s] for s in specs] if shards else [], total.n_records, layout.n_images,
                      len(everything), get_size(run_dir / RECORDS_FILE), time.perf_counter() - t0, total)


def link_whole_run(layout: Layout, run_dir: Path, owners: dict[int, Path], stats: CellStats) -> None:
    """The whole run's folder from its shards: their chunk files hard-linked (checked by provenance)."""
    folder = open_folder(run_dir, layout, None)
    for cell in sorted(owners):
        folder.link_chunk_from(RunFolder(owners[cell]), layout.fingerprint, layout.cell_ids[cell])
    finish_folder(folder, layout, sorted(owners), stats, None)


def get_size(path: Path) -> int:
    """Bytes of the files under a folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------
# Timing the steps


def get_cli() -> list[str]:
    """The `typoattack` command next to this interpreter."""
    script = Path(sys.executable).parent / "typoattack"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from typoattack.cli import app; app()"]


RSS_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL).returncode
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""
"""Runs a command and writes its peak RSS (kB) to a file. The command is started from this small
process, not from the benchmark: a child's ru_maxrss counts the RSS of the process it was forked
from (Linux keeps the old memory's high-water mark across exec), so the benchmark's own would show."""


def time_command(command: Sequence[str], log: Path) -> tuple[int, float, int]:
    """Run a command as a grandchild process through RSS_WRAPPER (output to `log`).

    Returns:
        (exit code, wall seconds, the command's peak RSS in bytes).
    """
    rss_file = log.with_suffix(".maxrss")
    t0 = time.perf_counter()
    with log.open("wb") as f:
        code = subprocess.run([sys.executable, "-c", RSS_WRAPPER, str(rss_file), *command], stdout=f,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode
    seconds = time.perf_counter() - t0
    text = rss_file.read_text().strip() if rss_file.is_file() else ""
    return code, seconds, int(text) * 1024 if text else 0  # Linux: kilobytes


def format_line(n_records: int, step: str, seconds: float, rss: int | None = None, extra: str = "") -> str:
    line = f"records: {n_records}  step: {step}  seconds: {seconds:.1f}"
    if rss is not None:
        line += f"  peak RSS: {rss / GIB:.2f} GiB"
    return line + (f"  {extra}" if extra else "")


def run_step(step: str, made: Fabricated, out: Path) -> bool:
    """Time one step, print its line; return False when it failed (its output's tail is printed)."""
    if step == "report":
        command = [*get_cli(), "report", str(made.run_dir)]
    else:
        command = [*get_cli(), "merge", *map(str, made.shard_dirs), "--out", str(out / "merged")]
    log = out / f"{step}.log"
    code, seconds, rss = time_command(command, log)
    if code == 0:
        print(format_line(made.n_records, step, seconds, rss), flush=True)
        return True
    print(format_line(made.n_records, step, seconds, rss, f"FAILED (exit {code}): {' '.join(command)}"), flush=True)
    tail = log.read_text(errors="replace").splitlines()[-25:]
    print("\n".join(f"    {t}" for t in tail), file=sys.stderr, flush=True)
    return False


def describe_fabrication(made: Fabricated) -> str:
    s = made.stats
    mb = made.records_bytes / 1e6
    return (f"records.parquet: {mb / (made.n_records / 1e6):.1f} MB per million records ({mb:,.1f} MB, "
            f"{made.n_cells} cells, {made.n_images} images, clean top-1 {s.clean_correct / max(s.n_images, 1):.3f}, "
            f"attacks succeeding {s.succeeded / max(s.attacked, 1):.3f}, "
            f"{s.attacked_classes.size} attacked classes)")


def get_peak_rss_self() -> int:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) * 1024


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", type=int, required=True, help="About this many records (3,993 per image).")
    parser.add_argument("--out", type=Path, default=None,
                        help="Empty or new folder for the fabricated folders (default: a new temporary folder).")
    parser.add_argument("--shards", type=int, default=0, help="Also write the run as S shard folders and merge them.")
    parser.add_argument("--steps", default=",".join(STEPS), help="Comma-separated steps to time: report, merge.")
    parser.add_argument("--keep", action="store_true", help="Keep the fabricated folders.")
    parser.add_argument("--images-per-cell", type=int, default=None,
                        help=f"Images per cell (default: {IMAGES_PER_CELL}, fewer for {CELLS_PER_SHARD} cells per shard).")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="Processes fabricating cells, each holding one cell (default: 2).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-data", action="store_true",
                        help="Point the run's config at the shipped sample images, which hold none of its image ids "
                             "(default: a folder of links to them under the run's ids, so the report draws examples).")
    args = parser.parse_args(argv)
    args.steps = [s for s in (t.strip() for t in args.steps.split(",")) if s and s != "none"]
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")
    if args.records < 1 or args.shards < 0 or (args.images_per_cell or 1) < 1 or args.workers < 1:
        parser.error("--records, --images-per-cell and --workers must be at least 1, --shards at least 0")
    return args


def prepare_out(out: Path | None) -> tuple[Path, bool]:
    """The working folder and whether this script created it (outside the repository, empty)."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="typoattack-scale-")), True
    out = out.resolve()
    if out == ROOT or ROOT in out.parents:
        sys.exit(f"--out {out} lies inside the repository; choose a folder outside it")
    if out.exists() and any(out.iterdir()):
        sys.exit(f"--out {out} is not empty; choose a new or empty folder")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    return out, created


def clean_up(out: Path, created: bool) -> None:
    """Remove what the script wrote (the folder itself when it created it)."""
    if created:
        shutil.rmtree(out, ignore_errors=True)
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out, created = prepare_out(args.out)
    ok = True
    try:
        made = fabricate(args.records, out, args.shards, args.images_per_cell, args.seed, args.workers,
                         args.sample_data)
        print(format_line(made.n_records, "fabricate", made.seconds, get_peak_rss_self(), describe_fabrication(made)),
              flush=True)
        for step in args.steps:
            if step == "merge" and not made.shard_dirs:
                print("step merge skipped: no shards (pass --shards S)", flush=True)
                continue
            ok = run_step(step, made, out) and ok
    finally:
        if args.keep:
            print(f"kept {out}", flush=True)
        else:
            clean_up(out, created)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
