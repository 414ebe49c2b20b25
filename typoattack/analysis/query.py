"""The query layer: a run's records as a DuckDB view, so every table is an out-of-core query.

A run's records are a Parquet dataset: `records.parquet` is a folder of chunk files (one per
cell; see `typoattack.engine.rundir`), or a single file in runs written before typoattack 0.3.
`open_records` puts one or several runs behind one view named `records` (with a `run` column: the
position of the run in the list) and runs SQL over it with a memory limit, spilling to disk past
it, so a table of 100 M records needs no more memory than one of 1 M. Every task states its tables
as queries through `RecordSet`; none loads a whole run into pandas.

The same SQL runs in a DuckDB shell over a run folder (README: "Querying records"):
    SELECT word, avg((pred_index = target_index)::INT) FROM 'RUN/records.parquet/**/*.parquet' ...

Nothing here imports model code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.errors import OutputError

MEMORY_LIMIT_ENV = "TYPOATTACK_MEMORY_LIMIT"
DEFAULT_MEMORY_LIMIT = "512MB"
"""DuckDB's memory limit for table queries (past it, DuckDB spills to a temporary folder);
TYPOATTACK_MEMORY_LIMIT overrides it (e.g. `4GB`)."""
MAX_THREADS = 4
"""Threads of a table query, at most: DuckDB splits its memory limit between its threads, so on a
machine with many cores the default limit would leave each too little to spill well. Tables are not
where a run spends its time."""
BATCH_ROWS = 1_000_000
"""Rows per pandas batch when a query's result is streamed (`RecordSet.iter_batches`)."""


def list_record_files(path: Path) -> list[Path]:
    """The Parquet files of a run's records: `path` itself when it is a file, else every
    `*.parquet` under the folder (hidden temporary files excluded), sorted by path, which is
    the run's cell order.

    Raises:
        OutputError: `path` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise OutputError(f"{path} does not exist; the run has no records")
    return sorted(p for p in path.rglob("*.parquet")
                  if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts))


def quote_literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + str(text).replace("'", "''") + "'"


def quote_name(name: str) -> str:
    """A SQL identifier."""
    return '"' + str(name).replace('"', '""') + '"'


def get_memory_limit() -> str:
    """The memory limit of table queries (TYPOATTACK_MEMORY_LIMIT, else DEFAULT_MEMORY_LIMIT)."""
    return os.environ.get(MEMORY_LIMIT_ENV, "").strip() or DEFAULT_MEMORY_LIMIT


class RecordSet:
    """One or several runs' records behind the DuckDB view `records`.

    The view has the records' columns (the union over the runs' files, by name) and `run`
    (int: the run's position in `sources`). Columns a run lacks are NULL; `defaults` fills
    columns that no file has (e.g. `defence` of runs written before defences).

    Attributes:
        sources: The records of each run (a records.parquet file or folder).
        columns: The view's columns, in order (`run` last).
    """

    def __init__(self, sources: Sequence[Path], defaults: dict[str, Any] | None = None,
                 memory_limit: str | None = None, view: str = "records", with_run: bool = True) -> None:
        import duckdb

        self.sources = [Path(s) for s in sources]
        self.view = quote_name(view)
        files = [list_record_files(s) for s in self.sources]
        self._tmp = Path(tempfile.mkdtemp(prefix="typoattack-duckdb-"))
        self.con = duckdb.connect(config={"memory_limit": memory_limit or get_memory_limit(),
                                          "temp_directory": str(self._tmp),
                                          "threads": max(1, min(MAX_THREADS, os.cpu_count() or 1)),
                                          "preserve_insertion_order": True})
        self.con.execute("SET enable_progress_bar = false")
        try:
            self._create_view(files, defaults, view, with_run)
        except Exception as e:
            self.close()
            if type(e).__module__.startswith(("duckdb", "_duckdb")):
                raise OutputError(describe_query_error(e, self.sources)) from None
            raise

    def _create_view(self, files: list[list[Path]], defaults: dict[str, Any] | None, view: str,
                     with_run: bool) -> None:
        name = quote_name(view)
        parts = [f"SELECT *{f', {k} AS run' if with_run else ''} FROM read_parquet([{', '.join(quote_literal(str(p)) for p in fs)}], "
                 "union_by_name = true)" for k, fs in enumerate(files) if fs]
        if not parts:
            self.columns: list[str] = []
            self.con.execute(f"CREATE VIEW {name} AS SELECT NULL::INTEGER AS run WHERE false")
            return
        self.con.execute("CREATE VIEW raw_records AS " + " UNION ALL BY NAME ".join(parts))
        present = [r[0] for r in self.con.execute("DESCRIBE raw_records").fetchall()]
        extra = [f"{_sql_value(v)} AS {quote_name(k)}" for k, v in (defaults or {}).items() if k not in present]
        self.con.execute(f"CREATE VIEW {name} AS SELECT " + ", ".join(["*", *extra]) + " FROM raw_records")
        self.columns = [r[0] for r in self.con.execute(f"DESCRIBE {name}").fetchall()]
        if "run" in self.columns:  # `run` last, after any default columns
            self.columns = [c for c in self.columns if c != "run"] + ["run"]

    def __enter__(self) -> RecordSet:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and remove its spill folder."""
        try:
            self.con.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def has(self, column: str) -> bool:
        return column in self.columns

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """Run a query; a file that cannot be read as records (truncated, not Parquet, a column
        missing) is one OutputError naming the records, not a DuckDB traceback."""
        with self._readable():
            return self.con.execute(sql, params or [])

    @contextlib.contextmanager
    def _readable(self) -> Iterator[None]:
        """DuckDB's errors about the records' files as one OutputError line."""
        import duckdb

        try:
            yield
        except (duckdb.IOException, duckdb.InvalidInputException, duckdb.BinderException,
                duckdb.ConversionException) as e:
            raise OutputError(describe_query_error(e, self.sources)) from None

    def frame(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """The result of a query whose result is small (an aggregate, a filtered scan), as pandas."""
        return self.execute(sql, params).df()

    def scalar(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> Any:
        """The first value of the first row of a query (None when it returns no row)."""
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def iter_arrow(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
                   rows: int = BATCH_ROWS) -> Iterator[Any]:
        """A query's result as pyarrow record batches of at most `rows` rows, in the query's order."""
        with self._readable():
            yield from (self.con.sql(sql, params=params) if params else self.con.sql(sql)).to_arrow_reader(rows)

    def iter_batches(self, sql: str, params: Sequence[Any] | dict[str, Any] | None = None,
                     rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
        """A query's result as pandas frames of at most `rows` rows each, in the query's order."""
        for batch in self.iter_arrow(sql, params, rows):
            if batch.num_rows:
                yield batch.to_pandas()

    def count(self, where: str = "true") -> int:
        """Records matching a SQL condition."""
        return int(self.scalar(f"SELECT count(*) FROM {self.view} WHERE {where}"))


def describe_query_error(error: Exception, sources: Sequence[Path]) -> str:
    """One line for records DuckDB could not read: which records, and DuckDB's first line."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    where = ", ".join(str(s) for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
    if "Referenced column" in first or "not found in FROM clause" in first:
        return f"the records in {where} lack a column the tables need ({first}); were they written by typoattack?"
    return f"cannot read the records in {where}: {first}"


def _sql_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return quote_literal(str(value))


def open_records(sources: Path | Sequence[Path], defaults: dict[str, Any] | None = None,
                 memory_limit: str | None = None) -> RecordSet:
    """The records of one run (`RUN/records.parquet`, file or folder) or of several, as a `RecordSet`."""
    return RecordSet([sources] if isinstance(sources, (str, Path)) else list(sources), defaults, memory_limit)
