"""The run folder: its resume policy, the committed chunks, run.json (`RunInfo`) and the final
records.parquet, for every task.

A run is committed per cell (one model x one chunk of items) as one Parquet chunk (plus the items
it skipped); rerunning the same config on the same folder resumes from the chunks and gives the
same files as an uninterrupted run. Only `RunFolder` writes run.json, rewritten after every chunk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import platform
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

import typoattack
from typoattack.config.types import ModelSpec, ShardSpec
from typoattack.errors import ConfigError, OutputError
from typoattack.files import get_label_slug, write_csv, write_parquet_atomic, write_text_atomic

RECORDS_FILE = "records.parquet"
RUN_FILE = "run.json"
SKIPPED_CSV = "skipped.csv"
CHUNKS_DIR = "chunks"
REPORT_DIR = "report"
ENGINE_FILES = (RECORDS_FILE, RUN_FILE, SKIPPED_CSV)
T = TypeVar("T")


@dataclass
class RunInfo:
    """run.json: what a run is, how far it got and what it took. Task-specific entries are in `extra`
    (written at the top level of the file beside the common ones).

    Attributes:
        task: The task's name (`typoattack.tasks.registry`).
        fingerprint: Hash of everything that determines the records.
        config: The resolved config (`to_dict`).
        versions: Library versions.
        device: The device, in words.
        started: When the run (its first session) started, UTC ISO.
        executor: Where the cells ran (`local`, `ray`).
        cells: Every cell id of the run, in run order.
        shard: None for a whole run; else `{index, count, cells}` (the shard's cell ids).
        files: The files the run writes in its folder (for `--overwrite`).
        n_items: Items selected (images, photos, stimuli).
        chunks_total: Cells of this folder (the shard's, or all).
        chunks_done: Cells committed so far.
        complete: True once every cell is committed and the tables are written.
        models: Per model: name, pretrained, backend and what its cells and the task reported.
        n_records, n_skipped, finished, seconds_total_this_session, images_per_second: Totals,
            set when the run completes.
        merged_from: For a merged run, what each shard folder did.
        extra: The task's own entries (vocabulary, dataset, colours, clean accuracy, ...).
    """

    task: str
    fingerprint: str
    config: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    device: str = ""
    started: str = ""
    executor: str = "local"
    cells: list[str] = field(default_factory=list)
    shard: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)
    n_items: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    complete: bool = False
    models: list[dict[str, Any]] = field(default_factory=list)
    n_records: int | None = None
    n_skipped: int | None = None
    finished: str | None = None
    seconds_total_this_session: float | None = None
    images_per_second: float | None = None
    merged_from: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of run.json (the `extra` entries at the top level)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RunInfo:
        """Read run.json's object (its unknown keys go to `extra`)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {"task": "", "fingerprint": "", "config": {}, **{k: v for k, v in doc.items() if k in names}}
        return cls(**known, extra={k: v for k, v in doc.items() if k not in names})


def describe_shard(shard: dict[str, Any] | None) -> str:
    """'shard K/N' or 'the whole run' for messages."""
    return "the whole run" if not shard else f"shard {shard['index']}/{shard['count']}"


def get_out_dir(out: str | None) -> Path:
    """The output folder of a run.

    Raises:
        ConfigError: No output folder was given.
    """
    if not out:
        raise ConfigError("no output folder; pass --out DIR or set `out` in the config")
    return Path(out)


def get_cell_id(model_index: int, spec: ModelSpec, shard_index: int) -> str:
    """The stable id of one (model, chunk of items): `00-<model label>/00003`."""
    return f"{model_index:02d}-{get_label_slug(spec.label)}/{shard_index:05d}"


def select_shard(cells: list[T], shard: ShardSpec | None) -> list[T]:
    """The cells of shard K of N: every N-th cell of the run's cell list, from the K-th (all
    cells without a shard). Round-robin spreads each model's cells over the shards."""
    if shard is None:
        return list(cells)
    return cells[shard.index - 1::shard.count]


def get_versions() -> dict[str, str]:
    """Versions of typoattack and the libraries every task uses."""
    import PIL
    import torch

    return {"typoattack": typoattack.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "pillow": PIL.__version__, "pandas": pd.__version__, "python": platform.python_version()}


def get_timestamp() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_run_info(run_dir: str | Path) -> RunInfo:
    """run.json of a run folder.

    Raises:
        OutputError: The folder or its run.json is missing or unreadable.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not run_dir.is_dir():
        raise OutputError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise OutputError(f"{run_dir} holds no {RUN_FILE}; it is not a typoattack run directory")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise OutputError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OutputError(f"{path} does not hold a run description")
    return RunInfo.from_dict(doc)


def load_records(run_dir: str | Path, info: RunInfo | None = None) -> pd.DataFrame:
    """records.parquet of a complete, whole run.

    Raises:
        OutputError: The run is incomplete, is one shard of a run, or has no records.
    """
    run_dir = Path(run_dir)
    info = info or read_run_info(run_dir)
    if not info.complete:
        raise OutputError(f"the run in {run_dir} is incomplete ({info.chunks_done} of {info.chunks_total or '?'} "
                          f"chunks); rerun the same `typoattack {info.task}` command to resume it")
    if info.shard:
        raise OutputError(f"{run_dir} is {describe_shard(info.shard)} of a run, not a whole run; combine the shard "
                          "folders with `typoattack merge DIR... --out DIR` and report on that")
    path = run_dir / RECORDS_FILE
    if not path.is_file():
        raise OutputError(f"{run_dir} has no {RECORDS_FILE}")
    return pd.read_parquet(path)


class RunFolder:
    """One run's folder: run.json, the committed chunks and the records.

    Attributes:
        path: The folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, path: Path, fingerprint: str, overwrite: bool, shard: dict[str, Any] | None,
             files: tuple[str, ...] = ()) -> tuple[RunFolder, RunInfo | None]:
        """Check the folder for a run; return it with the earlier run.json when resuming the same run.

        Args:
            path: The folder (created when missing).
            fingerprint: The run's fingerprint.
            overwrite: Replace a different run the folder holds (or unrelated files).
            shard: `{index, count}` of the shard this process evaluates, None for a whole run.
            files: The files the new run writes (removed with `overwrite`, as are those the old
                run.json lists).

        Raises:
            OutputError: `path` is a file, holds another run (without `overwrite`), holds files of
                something else, or holds another shard of this run.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"output path {path} exists and is not a folder")
        folder = cls(path)
        previous: RunInfo | None = None
        if (path / RUN_FILE).is_file():
            try:
                previous = read_run_info(path)
            except OutputError:
                previous = RunInfo("?", "", {})
            if overwrite:
                folder.remove(previous, files)
                previous = None
            elif previous.fingerprint != fingerprint:
                raise OutputError(f"{path} holds a different run (another config, seed, vocabulary or image set); "
                                  "choose another --out or pass --overwrite")
        elif path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise OutputError(f"{path} is not empty and holds no typoattack run; choose another --out or pass "
                                  "--overwrite")
        if previous is not None and describe_shard(previous.shard) != describe_shard(shard):
            raise OutputError(f"{path} holds {describe_shard(previous.shard)} of this run, not "
                              f"{describe_shard(shard)}; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        return folder, previous

    def remove(self, info: RunInfo, files: tuple[str, ...] = ()) -> None:
        """Delete the files of the run the folder holds (those its run.json lists, `files`, the chunks
        and the report)."""
        for name in {*ENGINE_FILES, *info.files, *files}:
            (self.path / name).unlink(missing_ok=True)
        shutil.rmtree(self.path / CHUNKS_DIR, ignore_errors=True)
        shutil.rmtree(self.path / REPORT_DIR, ignore_errors=True)

    def get_chunk_path(self, cell_id: str) -> Path:
        """Where the records of one cell are committed."""
        return self.path / CHUNKS_DIR / f"{cell_id}.parquet"

    def _get_skipped_path(self, cell_id: str) -> Path:
        return self.path / CHUNKS_DIR / f"{cell_id}.skipped.json"

    def has_chunk(self, cell_id: str) -> bool:
        return self.get_chunk_path(cell_id).is_file()

    def save_chunk(self, cell_id: str, records: pd.DataFrame, skipped: dict[str, str]) -> None:
        """Commit the records of one cell (and the items it skipped, written first: a chunk on disk
        always has its skipped list)."""
        skipped_path = self._get_skipped_path(cell_id)
        if skipped:
            write_text_atomic(skipped_path, json.dumps(skipped, sort_keys=True))
        else:
            skipped_path.unlink(missing_ok=True)
        write_parquet_atomic(records, self.get_chunk_path(cell_id))

    def read_skipped(self, cell_ids: list[str]) -> dict[str, str]:
        """image_id -> reason of the items the committed cells skipped."""
        skipped: dict[str, str] = {}
        for cell_id in cell_ids:
            path = self._get_skipped_path(cell_id)
            if path.is_file():
                skipped.update(json.loads(path.read_text()))
        return skipped

    def copy_chunk_from(self, other: RunFolder, cell_id: str) -> None:
        """Copy a committed cell (records and skipped list) from another folder.

        Raises:
            OutputError: The other folder lacks the chunk.
        """
        from typoattack.files import write_atomic

        source = other.get_chunk_path(cell_id)
        if not source.is_file():
            raise OutputError(f"{other.path} lists cell {cell_id} but its chunk {source} is missing")
        for src, dst in ((other._get_skipped_path(cell_id), self._get_skipped_path(cell_id)),
                         (source, self.get_chunk_path(cell_id))):
            if src.is_file():
                write_atomic(dst, lambda tmp, src=src: shutil.copyfile(src, tmp))

    def merge_chunks(self, cell_ids: list[str]) -> pd.DataFrame:
        """Concatenate the cells' chunks in order into records.parquet, the one source of every table
        (an empty table for a shard without cells)."""
        frames = [pd.read_parquet(self.get_chunk_path(c)) for c in cell_ids]
        records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        write_parquet_atomic(records, self.path / RECORDS_FILE)
        return records

    def write_skipped(self, skipped: dict[str, str]) -> None:
        """skipped.csv: the items that could not be evaluated, with the reason, sorted by id."""
        write_csv(pd.DataFrame(sorted(skipped.items()), columns=["image_id", "reason"]), self.path / SKIPPED_CSV)

    def save_info(self, info: RunInfo) -> None:
        """Write run.json atomically."""
        write_text_atomic(self.path / RUN_FILE, json.dumps(info.to_dict(), indent=2, default=str) + "\n")
