"""The toy task: cells of numbered items whose records are the item and the word's length times it."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from toy_task.config import ToyConfig
from typoattack.analysis.query import RecordSet
from typoattack.config.common import load_config, resolve_chunk_size
from typoattack.engine.cells import Cell, CellResult
from typoattack.engine.rundir import RunInfo, get_cell_id
from typoattack.engine.task import Plan, ReportPart, TaskBase
from typoattack.progress import ProgressReporter


def load_toy_config(path: str | Path | None, overrides: dict[str, Any]) -> ToyConfig:
    return load_config(path, overrides, ToyConfig)


class ToyTask(TaskBase, name="toy", title="letters counted", report_stem="toy", output_files=("toy.csv",),
              job_unit="items", config_loader=load_toy_config):
    """Records: (item, letters) per item; table: the total per model."""

    def plan(self, cfg: ToyConfig, progress: ProgressReporter) -> Plan:
        size = resolve_chunk_size(cfg.chunk_size, 1).items
        cells = [Cell(get_cell_id(m, spec, s), self.name, cfg, m, tuple(range(start, min(start + size, cfg.n_items))),
                      min(size, cfg.n_items - start), f"toy-{m}")
                 for m, spec in enumerate(cfg.models) for s, start in enumerate(range(0, cfg.n_items, size))]
        return Plan(fingerprint=cfg.fingerprint(), cells=cells, device="cpu", n_items=cfg.n_items)

    def create_context(self, cell: Cell, progress: ProgressReporter) -> Any:
        return len(cell.config.word)

    def evaluate_cell(self, context: Any, cell: Cell, advance: Callable[[int], None]) -> CellResult:
        items = list(cell.items)
        advance(len(items))
        records = pd.DataFrame({"model": cell.config.models[cell.model_index].name, "item": items,
                                "letters": [context * (i + 1) for i in items]})
        return CellResult(cell.cell_id, cell.model_index, records)

    def write_tables(self, records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
        table = records.frame("SELECT model, count(*) AS items, sum(letters)::BIGINT AS letters FROM records "
                              "GROUP BY model ORDER BY model")
        table.to_csv(out / "toy.csv", index=False)
        return table

    def show_summary(self, summary: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
        return [f"{row.model}: {row.letters} letters in {row.items} items" for row in summary.itertuples()]

    def write_report(self, run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                     notes: Sequence[str], progress: ProgressReporter) -> ReportPart:
        out.mkdir(parents=True, exist_ok=True)
        tables = [pd.read_csv(d / "toy.csv") for d in run_dirs]
        table = pd.concat(tables, ignore_index=True)
        (out / f"{stem}.md").write_text(table.to_csv(index=False))
        (out / f"{stem}.html").write_text(f"<html><body><pre>{json.dumps(table.to_dict('records'))}</pre></body></html>")
        return ReportPart(out / f"{stem}.html", table)


TASK = ToyTask()
