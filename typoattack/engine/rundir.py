"""The run folder: its resume policy, the committed chunks, run.json (`RunInfo`) and the final
records.parquet, for every task.

A run is committed per cell (one model x one chunk of items) as one Parquet chunk (plus the items
it skipped); rerunning the same config on the same folder resumes from the chunks and gives the
same files as an uninterrupted run. Only `RunFolder` writes run.json, rewritten after every chunk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

import typoattack
from typoattack.analysis.query import RecordSet, list_record_files, open_records
from typoattack.config.defences import NO_DEFENCE
from typoattack.config.types import ModelSpec, ShardSpec
from typoattack.errors import ConfigError, OutputError
from typoattack.files import get_label_slug, write_atomic, write_csv, write_text_atomic

RECORDS_FILE = "records.parquet"
"""The run's records: a folder of Parquet files, one per cell (`records.parquet/<cell id>.parquet`),
which `pandas.read_parquet`, pyarrow, DuckDB and polars read as one table."""
RUN_FILE = "run.json"
SKIPPED_CSV = "skipped.csv"
LEGACY_CHUNKS_DIR = "chunks"
"""Where typoattack before 0.3 committed cells (beside a records.parquet file); removed with the run."""
REPORT_DIR = "report"
LOCK_FILE = ".typoattack.lock"
ENGINE_FILES = (RECORDS_FILE, RUN_FILE, SKIPPED_CSV)
CHUNK_METADATA_KEY = b"typoattack.chunk"
RECORD_DEFAULTS = {"defence": NO_DEFENCE}
"""Columns a run written before they existed lacks, with the value its records mean."""
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
        n_records, n_skipped, finished, seconds_total_this_session: Totals, set when the run completes.
        images_per_second: Images encoded per second of evaluating cells this session (the cells'
            `CellResult.seconds`, summed over processes: with Ray, the rate of one worker), without
            loading models and building classifiers; None when no image was encoded.
        seconds_evaluating_this_session: Those seconds of evaluating cells (None: no cell evaluated).
        seconds_setup_this_session: Seconds this session's processes spent loading models and
            preparing what their cells need (canvases, classifiers and defences), summed over models
            and processes (the models' `seconds` entries but `evaluate`; None: no cell evaluated).
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
    seconds_evaluating_this_session: float | None = None
    seconds_setup_this_session: float | None = None
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
    for key, types in _RUN_FIELD_TYPES.items():
        if key in doc and not isinstance(doc[key], types) or isinstance(doc.get(key), bool) and bool not in types:
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise OutputError(f"{path}: `{key}` should be {wanted}, not {type(doc[key]).__name__}; the file was "
                              "edited or damaged: rerun the command that wrote it (with --overwrite)")
    return RunInfo.from_dict(doc)


_NUMBER = (int, float)
_RUN_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "task": (str,), "fingerprint": (str,), "config": (dict,), "versions": (dict,), "device": (str,),
    "started": (str,), "executor": (str,), "cells": (list,), "shard": (dict, type(None)), "files": (list,),
    "n_items": (int,), "chunks_total": (int,), "chunks_done": (int,), "complete": (bool,), "models": (list,),
    "n_records": (int, type(None)), "n_skipped": (int, type(None)), "finished": (str, type(None)),
    "seconds_total_this_session": (*_NUMBER, type(None)), "images_per_second": (*_NUMBER, type(None)),
    "seconds_evaluating_this_session": (*_NUMBER, type(None)), "seconds_setup_this_session": (*_NUMBER, type(None)),
    "merged_from": (list, type(None)),
}
"""The JSON type of each run.json field `RunInfo` reads (checked before a run is trusted)."""


def check_whole_run(run_dir: Path, info: RunInfo) -> None:
    """Check that a run folder holds a complete, whole run (what its tables and report need).

    Raises:
        OutputError: The run is incomplete, is one shard of a run, or has no records.
    """
    if not info.complete:
        raise OutputError(f"the run in {run_dir} is incomplete ({info.chunks_done} of {info.chunks_total or '?'} "
                          f"chunks); rerun the same `typoattack {info.task}` command to resume it")
    if info.shard:
        raise OutputError(f"{run_dir} is {describe_shard(info.shard)} of a run, not a whole run; combine the shard "
                          "folders with `typoattack merge DIR... --out DIR` and report on that")
    if not (run_dir / RECORDS_FILE).exists():
        raise OutputError(f"{run_dir} has no {RECORDS_FILE}")


def open_run_records(run_dirs: Path | Sequence[Path], infos: RunInfo | Sequence[RunInfo] | None = None) -> RecordSet:
    """The records of complete, whole runs behind one query view (`typoattack.analysis.query`;
    its `run` column is the position in `run_dirs`), without loading them.

    Raises:
        OutputError: A run is incomplete, is one shard of a run, or has no records.
    """
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    if isinstance(infos, RunInfo):
        infos = [infos]
    infos = list(infos) if infos is not None else [read_run_info(d) for d in dirs]
    for d, info in zip(dirs, infos):
        check_whole_run(d, info)
    return open_records([d / RECORDS_FILE for d in dirs], defaults=RECORD_DEFAULTS)


def get_items_digest(items: Any) -> str:
    """A short hash of a cell's items (indices, rows, stimuli), for its chunk's provenance."""
    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, (np.integer, np.floating)):
            return value.item()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    return hashlib.sha256(json.dumps(items, default=plain, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class ChunkProvenance:
    """What a committed chunk says of itself (in its Parquet file's key-value metadata, written in
    the same atomic rename as its records).

    Attributes:
        fingerprint: The run's fingerprint.
        cell_id: The cell.
        items: `get_items_digest` of the cell's items.
        n_rows: Records in the file.
        skipped: image_id -> reason of the items the cell could not evaluate.
        model: What identifies the model's weights (e.g. `weights_id`), when the task says.
    """

    fingerprint: str
    cell_id: str
    items: str
    n_rows: int
    skipped: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def matches(self, other: ChunkProvenance) -> bool:
        """True when both describe the same cell of the same run (rows and skips aside)."""
        return (self.fingerprint, self.cell_id, self.items) == (other.fingerprint, other.cell_id, other.items)


def read_chunk_provenance(path: Path) -> ChunkProvenance | None:
    """The provenance of a chunk file (its footer only); None when the file cannot be read as a
    chunk (truncated, not Parquet, written by another program or an older typoattack)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
        doc = json.loads((meta.metadata or {})[CHUNK_METADATA_KEY])
        prov = ChunkProvenance(**doc)
    except Exception:  # noqa: BLE001 - any unreadable chunk is recomputed, never fatal
        return None
    return prov if prov.n_rows == meta.num_rows else None


class RunFolder:
    """One run's folder: run.json, the committed chunks and the records.

    Attributes:
        path: The folder.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

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
        folder.lock()
        try:
            return folder, folder._check(fingerprint, overwrite, shard, files)
        except BaseException:
            folder.unlock()
            raise

    def _check(self, fingerprint: str, overwrite: bool, shard: dict[str, Any] | None,
               files: tuple[str, ...]) -> RunInfo | None:
        """The checks of `open`, with the folder locked (same arguments; returns the earlier run.json)."""
        path, folder = self.path, self
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
        elif path.is_dir() and any(p.name != LOCK_FILE for p in path.iterdir()):
            if not overwrite:
                raise OutputError(f"{path} is not empty and holds no typoattack run; choose another --out or pass "
                                  "--overwrite")
        if previous is not None and describe_shard(previous.shard) != describe_shard(shard):
            raise OutputError(f"{path} holds {describe_shard(previous.shard)} of this run, not "
                              f"{describe_shard(shard)}; choose another --out")
        return previous

    def __del__(self) -> None:
        try:
            self.unlock()
        except Exception:  # noqa: BLE001 - at interpreter exit the OS releases the lock anyway
            pass

    def lock(self) -> None:
        """Become the folder's one writer: an advisory lock (`flock`) on its lock file, held until
        this process exits or `unlock` (the OS releases it when the process dies, even by kill -9).

        Raises:
            OutputError: Another process holds the lock (the message names its PID), or the
                folder cannot be created.
        """
        if self._lock_fd is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise OutputError(f"cannot write into {self.path}: {e.strerror or e}") from None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            self._lock_fd = fd
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise OutputError(f"{self.path} is in use by another typoattack process (PID {holder}); wait for it to "
                              "finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        """Release the folder's lock (the lock file stays: removing it would race another writer)."""
        fd = self._lock_fd
        if fd is not None:
            os.close(fd)
            self._lock_fd = None

    def remove(self, info: RunInfo, files: tuple[str, ...] = ()) -> None:
        """Delete the run the folder holds: the engine's files, the task's (`files`, and those the old
        run.json lists), the records and the report. Only plain names inside the folder are removed:
        a listed path that leaves the folder (`../x`, `/x`, a link out) is left alone."""
        root = self.path.resolve()
        listed = [n for n in info.files if isinstance(n, str)]
        for name in {*ENGINE_FILES, *listed, *files, LEGACY_CHUNKS_DIR, REPORT_DIR}:
            target = self.path / name
            if not _lies_inside(target, root):
                continue
            if target.is_symlink():
                target.unlink()
            elif target.is_dir():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)

    @property
    def records_dir(self) -> Path:
        """The folder of the run's records (one Parquet file per committed cell)."""
        return self.path / RECORDS_FILE

    def get_chunk_path(self, cell_id: str) -> Path:
        """Where the records of one cell are committed."""
        return self.records_dir / f"{cell_id}.parquet"

    def prepare_records(self, cell_ids: Sequence[str]) -> list[str]:
        """Make records.parquet a folder that holds only chunks of `cell_ids` (an older run's
        single records.parquet file, its chunks/ and stray files of other cells are removed).

        Returns:
            Notes on what was removed, for the user.
        """
        notes = []
        if self.records_dir.is_file() or self.records_dir.is_symlink():
            self.records_dir.unlink()
            shutil.rmtree(self.path / LEGACY_CHUNKS_DIR, ignore_errors=True)
            notes.append(f"{self.path} was written by typoattack before 0.3 (one {RECORDS_FILE} file); its cells are "
                         "evaluated again into the folder layout")
        self.records_dir.mkdir(parents=True, exist_ok=True)
        wanted = {self.get_chunk_path(c) for c in cell_ids}
        stray = [p for p in list_record_files(self.records_dir) if p not in wanted]
        for path in stray:
            path.unlink(missing_ok=True)
        if stray:
            notes.append(f"removed {len(stray)} file(s) of {self.records_dir} that are no chunk of this run")
        return notes

    def check_chunk(self, expected: ChunkProvenance) -> bool:
        """True when the cell's chunk is committed and its provenance matches `expected` (same run,
        cell and items); a chunk that does not match or cannot be read is removed, to be recomputed."""
        path = self.get_chunk_path(expected.cell_id)
        if not path.is_file():
            return False
        found = read_chunk_provenance(path)
        if found is not None and found.matches(expected):
            return True
        path.unlink(missing_ok=True)
        return False

    def save_chunk(self, provenance: ChunkProvenance, records: pd.DataFrame) -> None:
        """Commit the records of one cell with its provenance (and skipped items) in the file's
        metadata, atomically: a chunk on disk is always whole and says what it is."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(records, preserve_index=False)
        doc = json.dumps(dataclasses.asdict(dataclasses.replace(provenance, n_rows=len(records))), sort_keys=True,
                         default=str)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), CHUNK_METADATA_KEY: doc.encode()})
        write_atomic(self.get_chunk_path(provenance.cell_id), lambda tmp: pq.write_table(table, tmp))

    def read_skipped(self, cell_ids: Sequence[str]) -> dict[str, str]:
        """image_id -> reason of the items the committed cells skipped (from their chunks' footers)."""
        skipped: dict[str, str] = {}
        for cell_id in cell_ids:
            path = self.get_chunk_path(cell_id)
            prov = read_chunk_provenance(path) if path.is_file() else None
            if prov is not None:
                skipped.update(prov.skipped)
        return skipped

    def link_chunk_from(self, other: RunFolder, fingerprint: str, cell_id: str) -> None:
        """Take a committed cell from another folder (a shard): hard-linked where the file system
        allows, else copied; its provenance must name this run's fingerprint and the cell (its
        items are the shard's own, fixed by the fingerprint).

        Raises:
            OutputError: The other folder lacks the chunk, or its chunk is not of this run and cell.
        """
        source = other.get_chunk_path(cell_id)
        if not source.is_file():
            raise OutputError(f"{other.path} lists cell {cell_id} but its chunk {source} is missing")
        found = read_chunk_provenance(source)
        if found is None or (found.fingerprint, found.cell_id) != (fingerprint, cell_id):
            what = "cannot be read" if found is None else "belongs to another run or cell"
            raise OutputError(f"chunk {source} {what}; rerun that shard's command to recompute it")
        target = self.get_chunk_path(cell_id)

        def place(tmp: Path) -> None:
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)

        write_atomic(target, place)

    def open_records(self) -> RecordSet:
        """The folder's committed records behind the query view (see `typoattack.analysis.query`)."""
        return open_records(self.records_dir, defaults=RECORD_DEFAULTS)

    def write_skipped(self, skipped: dict[str, str]) -> None:
        """skipped.csv: the items that could not be evaluated, with the reason, sorted by id."""
        write_csv(pd.DataFrame(sorted(skipped.items()), columns=["image_id", "reason"]), self.path / SKIPPED_CSV)

    def save_info(self, info: RunInfo) -> None:
        """Write run.json atomically."""
        write_text_atomic(self.path / RUN_FILE, json.dumps(info.to_dict(), indent=2, default=str) + "\n")


def _lies_inside(path: Path, root: Path) -> bool:
    """True when `path` is an entry of the folder `root` (its parent, links resolved, is `root` or
    lies under it): removing it (a link itself, not what it points to) touches nothing outside."""
    if path.name in ("", ".", ".."):
        return False
    try:
        parent = path.parent.resolve()
    except (OSError, RuntimeError):
        return False
    return parent == root or parent.is_relative_to(root)
