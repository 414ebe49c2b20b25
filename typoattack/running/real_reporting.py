"""The report of `typoattack real` runs: rewrite each run's tables from its records, then the
figures, a leaderboard, example photos with their predictions and the report files. Called by
`typoattack.running.reporting.run_report` for the run folders whose run.json says `kind: real`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.real_report import (
    build_real_leaderboard_cells, plot_real_accuracy, plot_real_examples, write_real_report,
)
from typoattack.analysis.real_tables import (
    build_real_leaderboard, build_summary, with_defence_column, write_real_tables,
)
from typoattack.analysis.report import format_markdown_table, load_records, read_run_info, write_csv
from typoattack.config.real import RealDataset
from typoattack.errors import OutputError, TypoAttackError
from typoattack.files import write_text_atomic
from typoattack.running.progress import NullProgress, ProgressReporter
from typoattack.running.real import RUN_KIND

EXAMPLES = 8
"""Photos shown in real_examples.png."""


def is_real_run(run_dir: Path) -> bool:
    """True when `run_dir` holds a `typoattack real` run (run.json `kind: real`)."""
    return read_run_info(run_dir).get("kind") == RUN_KIND


def split_real_runs(dirs: list[Path]) -> tuple[list[Path], list[Path]]:
    """(eval run folders, real run folders), each in the given order."""
    real = [d for d in dirs if is_real_run(d)]
    return [d for d in dirs if d not in real], real


def collect_real_examples(records: pd.DataFrame, info: dict[str, Any], n: int = EXAMPLES) -> list[dict[str, Any]]:
    """Up to `n` photos of the run's first model under its first defence (spread over the variants)
    with their predictions, decoded with that model's preprocessing.

    Raises:
        TypoAttackError: The photos or the model's preprocessing cannot be read here.
    """
    from typoattack.config.types import ModelSpec
    from typoattack.data.real_datasets import open_real_dataset
    from typoattack.models.loading import get_canvas_transform

    config = info["config"]
    first = config["models"][0]
    spec = ModelSpec(first["name"], first.get("pretrained"))
    transform, _, _ = get_canvas_transform(spec)
    source = open_real_dataset(RealDataset(config["dataset"]), config["data"], config.get("hf_split", "train"))
    index = {item.image_id: i for i, item in enumerate(source.items)}
    mine = records[(records["model"] == spec.name) & (records["pretrained"] == (spec.pretrained or ""))]
    if "defence" in mine.columns and not mine.empty:
        mine = mine[mine["defence"] == mine["defence"].iloc[0]]
    variants = list(dict.fromkeys(mine["variant"]))
    per_variant = max(1, n // len(variants))
    rows = pd.concat([mine[mine["variant"] == v].head(per_variant) for v in variants])
    examples = []
    for r in rows.head(n).itertuples():
        if r.image_id not in index:
            raise OutputError(f"photo {r.image_id!r} of the run is no longer in {config['data']}")
        image = np.asarray(transform(source.open_image(index[r.image_id])), dtype=np.uint8)
        examples.append({"image": image, "object_label": r.object_label, "attack_word": r.attack_word,
                         "pred_label": r.pred_label, "variant": r.variant})
    return examples


def run_real_report(run_dirs: list[Path], out: Path, progress: ProgressReporter | None = None,
                    name: str = "real") -> Path:
    """Rewrite the tables of real runs from their records and write `<name>.md` / `<name>.html`,
    real_summary.csv, real_leaderboard.csv/.md, real_accuracy.png and real_examples.png into `out`.

    Returns:
        The .html report.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model, dataset, protocol and photos.
    """
    progress = progress or NullProgress()
    all_records, infos = [], []
    for d in run_dirs:
        info = read_run_info(d)
        if not info.get("complete", False):
            raise OutputError(f"the run in {d} is incomplete ({info.get('chunks_done', 0)} of "
                              f"{info.get('chunks_total', '?')} chunks); rerun the same `typoattack real` command "
                              "to resume it")
        records = with_defence_column(load_records(d))
        write_real_tables(records, d)
        all_records.append(records)
        infos.append(info)
    records = pd.concat(all_records, ignore_index=True)
    if records.duplicated(["model", "pretrained", "defence", "dataset", "protocol", "image_id"]).any():
        raise OutputError("two of the runs hold the same model, dataset and protocol; report runs of different "
                          "models, datasets or protocols")
    out.mkdir(parents=True, exist_ok=True)
    summary = build_summary(records)
    leaderboard = build_real_leaderboard(summary)
    write_csv(summary, out / "real_summary.csv")
    write_csv(leaderboard, out / "real_leaderboard.csv")
    figures = [out / "real_accuracy.png"]
    plot_real_accuracy(summary, figures[0])
    try:
        examples = collect_real_examples(all_records[0], infos[0])
    except TypoAttackError as e:
        progress.log(f"[yellow]real_examples.png skipped: the photos cannot be read here ({e})[/]")
    else:
        plot_real_examples(examples, out / "real_examples.png")
        figures.append(out / "real_examples.png")
    _, html_path = write_real_report(out, summary, leaderboard, figures, infos, name=name)
    write_text_atomic(out / "real_leaderboard.md", format_markdown_table(*build_real_leaderboard_cells(leaderboard)))
    return html_path
