"""The records of `find-heads` and the files written from them.

A cell is one model's whole search; its records are one row per head of the vision tower in the order
the search tries them (`defences.find_heads.rank_heads`) after a baseline row (step 0), with what the
search measured on the head (`HEADS_COLUMNS`). From a model's rows and run.json come back, unchanged,
the search (`to_search`) and the heads file `--defence heads:@FILE` reads (`format_heads_yaml`); nothing
else is needed, so a resumed, sharded-and-merged or Ray run writes the same files as a plain one.

Files: `heads.yaml` for a run of one model, `heads/<model label>.yaml` per model for several
(`list_heads_files`), and `heads_summary.csv` (one row per model: the heads, why the search stopped,
baseline and final accuracy on both halves). No model code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.query import RecordSet, quote_name
from typoattack.config.types import ModelSpec
from typoattack.defences.find_heads import Accuracy, Head, HeadSearch, format_heads_yaml, rank_heads
from typoattack.engine.rundir import RunInfo
from typoattack.files import get_label_slug, write_csv, write_text_atomic

HEADS_YAML = "heads.yaml"
HEADS_DIR = "heads"
SUMMARY_CSV = "heads_summary.csv"
OUTPUT_FILES = (HEADS_YAML, HEADS_DIR, SUMMARY_CSV)
HALVES = ("selection", "heldout")
ACCURACY_COLUMNS = [f"{half}_{kind}_top1" for half in HALVES for kind in ("clean", "attacked")]
HEADS_COLUMNS: dict[str, str] = {
    "model": "object", "pretrained": "object", "backend": "object", "weights_id": "object",
    "step": "int32", "layer": "int32", "head": "int32", "score": "float64", "tried": "bool", "kept": "bool",
    "n_kept": "int32", **{c: "float64" for c in ACCURACY_COLUMNS},
    "n_selection": "int32", "n_heldout": "int32", "stopped": "object", "heldout_images": "object",
}
"""The record columns and their dtypes, in order:

- model, pretrained, backend: the model (pretrained None where it has no tag); weights_id: its weights.
- step: 0 for the baseline (no head ablated), k >= 1 for the k-th head in the order the search tries
  them (highest score first). layer, head: the head (-1 on the baseline row).
- score: the head's share of class-token attention on the drawn text (selection half; NaN on the baseline).
- tried: the search evaluated the head (it stops early: the heads after stay untried); kept: it was kept.
- n_kept: heads kept once this step is done.
- selection_/heldout_ clean_/attacked_ top1: clean and typographic top-1 on the true class with the kept
  heads plus this one ablated (a kept head: the heads kept so far); held-out only on the baseline and on
  kept heads (no decision reads it), NaN elsewhere, and NaN for untried heads.
- n_selection, n_heldout: images in each half; stopped: why the search ended (every row of the model).
- heldout_images: the held-out image ids (on the baseline row; empty on the others).
"""
SUMMARY_COLUMNS = ["model", "pretrained", "backend", "heads", "n_heads", "file", "stopped", "n_selection",
                   "n_heldout", *[f"{c}{when}" for c in ACCURACY_COLUMNS for when in ("_baseline", "")]]
"""heads_summary.csv: per model, the heads chosen ('L.H' joined by commas; empty for none), the heads
file, why the search stopped, and each accuracy before (`_baseline`) and after ablating the heads."""


def _accuracy_values(acc: Accuracy | None, half: str) -> dict[str, float]:
    nan = float("nan")
    return {f"{half}_clean_top1": acc.clean_top1 if acc else nan,
            f"{half}_attacked_top1": acc.attacked_top1 if acc else nan}


def build_search_records(spec: ModelSpec, weights_id: str, search: HeadSearch, n_selection: int, n_heldout: int,
                         heldout_images: Sequence[str]) -> pd.DataFrame:
    """The records of one model's search (HEADS_COLUMNS): the baseline, then every head in search order."""
    tried = {head: (acc, kept) for head, acc, kept in search.tried}
    heldout = {head: held for head, _, held in search.steps}
    base = {"model": spec.name, "pretrained": spec.pretrained, "backend": spec.backend, "weights_id": weights_id}
    after = {"n_selection": n_selection, "n_heldout": n_heldout, "stopped": search.stopped}
    rows = [{**base, "step": 0, "layer": -1, "head": -1, "score": float("nan"), "tried": True, "kept": False,
             "n_kept": 0, **_accuracy_values(search.baseline[0], "selection"),
             **_accuracy_values(search.baseline[1], "heldout"), **after, "heldout_images": list(heldout_images)}]
    n_kept = 0
    for step, head in enumerate(rank_heads(search.scores), start=1):
        acc, kept = tried.get(head, (None, False))
        n_kept += kept
        rows.append({**base, "step": step, "layer": head[0], "head": head[1], "score": float(search.scores[head]),
                     "tried": head in tried, "kept": kept, "n_kept": n_kept, **_accuracy_values(acc, "selection"),
                     **_accuracy_values(heldout.get(head), "heldout"), **after, "heldout_images": []})
    return pd.DataFrame(rows, columns=list(HEADS_COLUMNS)).astype(HEADS_COLUMNS)


def _accuracy(row: Any, half: str) -> Accuracy:
    return Accuracy(float(row[f"{half}_clean_top1"]), float(row[f"{half}_attacked_top1"]))


def to_search(rows: pd.DataFrame) -> HeadSearch:
    """The search of one model back from its records (`build_search_records` inverted)."""
    rows = rows.sort_values("step")
    base, heads = rows.iloc[0], rows.iloc[1:]
    scores = np.zeros((int(heads["layer"].max()) + 1, int(heads["head"].max()) + 1), dtype=np.float64)
    scores[heads["layer"].to_numpy(), heads["head"].to_numpy()] = heads["score"].to_numpy(dtype=np.float64)
    search = HeadSearch([], scores, (_accuracy(base, "selection"), _accuracy(base, "heldout")),
                        stopped=str(base["stopped"]))
    for _, row in heads[heads["tried"].astype(bool)].iterrows():
        head: Head = (int(row["layer"]), int(row["head"]))
        selection = _accuracy(row, "selection")
        search.tried.append((head, selection, bool(row["kept"])))
        if row["kept"]:
            search.heads.append(head)
            search.steps.append((head, selection, _accuracy(row, "heldout")))
    return search


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def build_heads_info(base: Any, info: RunInfo) -> dict[str, Any]:
    """The settings heads.yaml states beside the search (keys in the order it writes them), from a
    model's baseline record and run.json."""
    config, extra = info.config, info.extra
    return {"model": str(base["model"]), "pretrained": _text(base["pretrained"]), "weights_id": str(base["weights_id"]),
            "score": extra.get("score"), "rule": extra.get("rule"), "seed": config.get("seed"),
            "n_selection": int(base["n_selection"]), "n_heldout": int(base["n_heldout"]),
            "n_conditions": extra.get("n_conditions"), "vocab": (extra.get("vocab") or {}).get("name"),
            "fractions": config.get("fractions"), "placements": config.get("placements"),
            "templates": config.get("templates"), "heldout_images": [str(i) for i in base["heldout_images"]]}


def list_heads_files(models: Sequence[ModelSpec]) -> list[str]:
    """The heads file of each model, relative to the run folder: heads.yaml for one model; for several,
    heads/<model label>.yaml (the labels made file-name safe, with the model's index in front when two
    would share a name)."""
    if len(models) == 1:
        return [HEADS_YAML]
    slugs = [get_label_slug(spec.label) for spec in models]
    if len(set(slugs)) < len(slugs):
        slugs = [f"{i:02d}-{s}" for i, s in enumerate(slugs)]
    return [f"{HEADS_DIR}/{s}.yaml" for s in slugs]


def get_run_models(info: RunInfo) -> list[ModelSpec]:
    """The models of a run, in run order, from run.json's config."""
    return [ModelSpec(m["name"], m.get("pretrained"), m.get("backend", "open_clip")) for m in info.config["models"]]


def query_model_rows(records: RecordSet, spec: ModelSpec, where: str = "true") -> pd.DataFrame:
    """The records of one model (of the rows matching `where`), by step."""
    columns = ", ".join(quote_name(c) for c in HEADS_COLUMNS)
    return records.frame(f"SELECT {columns} FROM records WHERE ({where}) AND model = ? AND backend = ? "
                         "AND pretrained IS NOT DISTINCT FROM ? ORDER BY step",
                         [spec.name, spec.backend, spec.pretrained])


def summarize_search(spec: ModelSpec, search: HeadSearch, base: Any, file: str) -> dict[str, Any]:
    """One row of heads_summary.csv (SUMMARY_COLUMNS)."""
    last = search.steps[-1] if search.steps else None
    final = {"selection": last[1] if last else search.baseline[0], "heldout": last[2] if last else search.baseline[1]}
    row: dict[str, Any] = {"model": spec.name, "pretrained": spec.pretrained, "backend": spec.backend,
                           "heads": ",".join(f"{a}.{b}" for a, b in search.heads), "n_heads": len(search.heads),
                           "file": file, "stopped": search.stopped, "n_selection": int(base["n_selection"]),
                           "n_heldout": int(base["n_heldout"])}
    for i, half in enumerate(HALVES):
        for kind, value in (("clean", "clean_top1"), ("attacked", "attacked_top1")):
            row[f"{half}_{kind}_top1_baseline"] = getattr(search.baseline[i], value)
            row[f"{half}_{kind}_top1"] = getattr(final[half], value)
    return row


def write_heads_tables(records: RecordSet, out: Path, info: RunInfo) -> pd.DataFrame:
    """Write each model's heads file and heads_summary.csv into the run folder `out` from its records;
    return the summary (SUMMARY_COLUMNS, one row per model in run order)."""
    models = get_run_models(info)
    rows = []
    for spec, file in zip(models, list_heads_files(models)):
        frame = query_model_rows(records, spec)
        if frame.empty:
            continue
        search = to_search(frame)
        path = out / file
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, format_heads_yaml(search, build_heads_info(frame.iloc[0], info)))
        rows.append(summarize_search(spec, search, frame.iloc[0], file))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    write_csv(summary, out / SUMMARY_CSV)
    info.extra["heads"] = {row["file"]: row["heads"].split(",") if row["heads"] else [] for row in rows}
    return summary
