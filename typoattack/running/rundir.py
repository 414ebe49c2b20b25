"""The run folder: its fingerprint and resume policy, the committed chunks, run.json and the final
records.parquet.

A run is committed per (model, shard of `chunk_size` images) as one Parquet chunk; rerunning the
same config on the same folder resumes from the chunks and gives the same files as an
uninterrupted run. run.json is rewritten after every chunk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

import typoattack
from typoattack.analysis.report import (
    CONFUSION_CSV, PER_WORD_CSV, PER_WORD_MD, RECORDS_FILE, RUN_FILE, SKIPPED_CSV,
)
from typoattack.config.types import ModelSpec, RunConfig, ShardSpec, Vocabulary
from typoattack.data.classes import list_class_names
from typoattack.defences.spec import get_defence_files_digest
from typoattack.errors import ConfigError, OutputError
from typoattack.files import get_label_slug, write_parquet_atomic, write_text_atomic
from typoattack.records import Condition

if TYPE_CHECKING:
    from typoattack.config.real import RealConfig

CHUNKS_DIR = "chunks"
REPORT_DIR = "report"
T = TypeVar("T")
RUN_FILES = (RECORDS_FILE, RUN_FILE, PER_WORD_CSV, PER_WORD_MD, CONFUSION_CSV, SKIPPED_CSV)


def get_run_fingerprint(cfg: RunConfig, vocab: Vocabulary, templates: tuple[str, ...], image_ids: list[str]) -> str:
    """Hash of everything that determines the records: the config's settings and the contents
    behind its files (vocabulary words and targets, templates, the selected images, the prefix and
    templates files of the defences).

    A rerun resumes only when this matches, so an edited vocabulary or data folder never mixes
    with chunks computed before the edit.
    """
    h = hashlib.sha256(cfg.fingerprint().encode())
    h.update(json.dumps([(w.text, w.target_index) for w in vocab.words]).encode())
    h.update(json.dumps(list(templates)).encode())
    h.update("\n".join(image_ids).encode())
    h.update(get_defence_files_digest(cfg.defences).encode())
    return h.hexdigest()


def get_out_dir(out: str | None) -> Path:
    """The output folder of a run.

    Raises:
        ConfigError: No output folder was given.
    """
    if not out:
        raise ConfigError("no output folder; pass --out DIR or set `out` in the config")
    return Path(out)


def prepare_out_dir(out: Path, fingerprint: str, overwrite: bool) -> dict[str, Any] | None:
    """Check the output folder; return the earlier run.json when resuming the same run.

    Raises:
        OutputError: `out` is a file, holds another run (without `overwrite`), or holds files of
            something else.
    """
    run_json = out / RUN_FILE
    if out.exists() and not out.is_dir():
        raise OutputError(f"output path {out} exists and is not a folder")
    if run_json.is_file():
        try:
            previous = json.loads(run_json.read_text())
        except json.JSONDecodeError:
            previous = {}
        if overwrite:
            _remove_run(out)
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


def _remove_run(out: Path) -> None:
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / CHUNKS_DIR, ignore_errors=True)
    shutil.rmtree(out / REPORT_DIR, ignore_errors=True)


def get_cell_id(model_index: int, spec: ModelSpec, shard_index: int) -> str:
    """The stable id of one (model, shard of `chunk_size` images): `00-<model label>/00003`."""
    return f"{model_index:02d}-{get_label_slug(spec.label)}/{shard_index:05d}"


def get_chunk_path(out: Path, cell_id: str) -> Path:
    """Where the records of one cell are committed."""
    return out / CHUNKS_DIR / f"{cell_id}.parquet"


def select_shard(cells: list[T], shard: ShardSpec | None) -> list[T]:
    """The cells of shard K of N: every N-th cell of the run's cell list, from the K-th (all
    cells without a shard). Round-robin spreads each model's cells over the shards."""
    if shard is None:
        return list(cells)
    return cells[shard.index - 1::shard.count]


def get_shard_info(cfg: RunConfig | RealConfig) -> dict[str, int] | None:
    """The `shard` entry of run.json, without its cell list (None for a whole run)."""
    return None if cfg.shard is None else {"index": cfg.shard.index, "count": cfg.shard.count}


def describe_shard(shard: dict[str, Any] | None) -> str:
    """'shard K/N' or 'the whole run' for messages."""
    return "the whole run" if not shard else f"shard {shard['index']}/{shard['count']}"


def get_versions() -> dict[str, str]:
    import open_clip
    import PIL
    import torch

    return {"typoattack": typoattack.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "pandas": pd.__version__, "python": platform.python_version()}


def get_device_name(device: Any) -> str:
    """A description of the device for run.json (GPU name, or CPU, cores and threads)."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def get_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def build_run_info(cfg: RunConfig, vocab: Vocabulary, templates: tuple[str, ...], fingerprint: str,
                   device: Any, n_images: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """run.json of a run that has just started (or resumed: `previous` keeps its start time)."""
    return {
        "complete": False,
        "fingerprint": fingerprint,
        "config": cfg.to_dict(),
        "vocab": {"name": vocab.name, "path": vocab.path,
                  "words": [{"text": w.text, "target_index": w.target_index,
                             "target_name": list_class_names()[w.target_index]} for w in vocab.words]},
        "templates": {"name": cfg.templates, "count": len(templates)},
        "versions": get_versions(),
        "device": get_device_name(device),
        "seed": cfg.seed,
        "n_images_selected": n_images,
        "started": (previous or {}).get("started") or get_timestamp(),
        "models": [],
        "executor": cfg.executor.value,
        "chunks_total": 0,
        "chunks_done": 0,
    }


def build_mask_info(conditions: list[Condition], masks: dict[Condition, Any]) -> list[dict[str, Any]]:
    """The `masks` entry of a model in run.json: each condition with its solved font size, the
    stamps' sub-pixel phases, the number of random stamps and the coverage."""
    keys = ("word", "fraction", "placement", "font", "fill", "outline")
    return [{**{k: c.to_columns()[k] for k in keys},
             "font_size": masks[c].font_size, "phases": list(masks[c].phases), "copies": masks[c].copies,
             "mask_coverage": round(masks[c].coverage, 6)} for c in conditions]


def finish_run_info(info: dict[str, Any], records: pd.DataFrame, n_skipped: int, clean: list[dict[str, Any]],
                    seconds: float, images_per_second: float | None) -> None:
    """Mark run.json complete with the totals of the run."""
    info.update({
        "complete": True,
        "n_records": len(records),
        "n_skipped": n_skipped,
        "clean": clean,
        "finished": get_timestamp(),
        "seconds_total_this_session": round(seconds, 3),
        "images_per_second": images_per_second,
    })


def save_run_info(out: Path, info: dict[str, Any]) -> None:
    """Write run.json atomically."""
    write_text_atomic(out / RUN_FILE, json.dumps(info, indent=2, default=str) + "\n")


def save_chunk(frame: pd.DataFrame, path: Path) -> None:
    """Commit the records of one (model, shard)."""
    write_parquet_atomic(frame, path)


def merge_chunks(out: Path, chunk_paths: list[Path]) -> pd.DataFrame:
    """Concatenate the chunks in order into records.parquet, the one source of every table."""
    records = pd.concat([pd.read_parquet(p) for p in chunk_paths], ignore_index=True)
    write_parquet_atomic(records, out / RECORDS_FILE)
    return records
