"""The report of `typoattack real` runs (no model code): a figure of object accuracy and attack
rate per variant and model, a grid of example photos with their predictions, and real.md /
real.html (or report.md / report.html when only real runs are reported) built from the summary
table of `typoattack.tasks.real.tables`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from typoattack.config.parsing import DEFAULT_BACKEND
from typoattack.analysis.query import RecordSet, quote_name
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.errors import OutputError
from typoattack.files import write_csv, write_text_atomic
from typoattack.progress import NullProgress, ProgressReporter
from typoattack.tasks.real.tables import (
    build_real_leaderboard, check_unique_photos, query_summary, real_records_sql, write_real_tables,
)
from typoattack.analysis.figure_style import get_colors, plain_text, save_figure, truncate_label, plt
from typoattack.analysis.report import add_optional_figure
from typoattack.analysis.report_page import ReportBlock, build_table_block, format_markdown_table, write_report_pages
from typoattack.analysis.report_sections import list_run_blocks
from typoattack.config.types import get_model_warnings

SUMMARY_HEADER = ["model", "pretrained", "defence", "dataset", "protocol", "variant", "n", "object acc [95% CI]",
                  "attack rate [95% CI]", "paired drop (NoSCAM − variant)"]
LEADERBOARD_HEADER = ["rank", "model", "pretrained", "defence", "dataset", "protocol", "variant", "n", "object acc",
                      "attack rate", "NoSCAM acc", "paired drop"]
_NOTE = ("Object accuracy: share of photos classified as their object label; attack rate: share classified as "
         "the word written on them. Protocol union: argmax over every object label and attack word of the "
         "dataset; binary: a choice between the photo's own object label and its attack word. The paired drop "
         "is NoSCAM accuracy minus the variant's accuracy over the photos present in both, paired by SCAM's `id`.")
_LEADERBOARD_NOTE = "Most robust first (highest object accuracy on the attacked photos) per dataset, protocol and variant."


def _pct(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def _ci(row: dict[str, Any], name: str) -> str:
    return f"{_pct(row[name])} [{100 * row[name + '_ci_low']:.1f}–{100 * row[name + '_ci_high']:.1f}]"


def build_summary_cells(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text) of the summary table for report.md / report.html."""
    rows = []
    for r in summary.to_dict("records"):
        drop = "" if not r["n_pairs"] else f"{100 * r['paired_drop']:+.1f} pp ({r['n_pairs']} pairs)"
        rows.append([str(r["model"]), str(r["pretrained"]), str(r["defence"]), str(r["dataset"]), str(r["protocol"]),
                     str(r["variant"]), str(r["n_images"]), _ci(r, "object_acc"), _ci(r, "attack_rate"), drop])
    return SUMMARY_HEADER, rows


def build_summary_rich_table(summary: pd.DataFrame, title: str) -> Table:
    """The summary as one rich Table for the terminal: object accuracy and attack rate with their
    95% intervals and the paired drop, per model, defence and variant."""
    table = Table(title=title)
    for col in ("model", "defence", "variant", "n", "object acc [95% CI]", "attack rate [95% CI]", "paired drop"):
        table.add_column(col, justify="left" if col in ("model", "defence", "variant") else "right")
    for r in summary.to_dict("records"):
        drop = "" if not r["n_pairs"] else f"{100 * r['paired_drop']:+.1f} pp ({r['n_pairs']} pairs)"
        table.add_row(f"{r['model']}/{r['pretrained']}", str(r["defence"]), str(r["variant"]), str(r["n_images"]),
                      _ci(r, "object_acc"), _ci(r, "attack_rate"), drop)
    return table


def build_real_leaderboard_cells(leaderboard: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text) of the leaderboard; ranks restart per dataset, protocol and variant."""
    rows = []
    for _, group in leaderboard.groupby(["dataset", "protocol", "variant"], sort=False):
        for rank, r in enumerate(group.to_dict("records"), start=1):
            drop = "" if pd.isna(r["paired_drop"]) else f"{100 * r['paired_drop']:+.1f} pp"
            rows.append([str(rank), str(r["model"]), str(r["pretrained"]), str(r["defence"]), str(r["dataset"]),
                         str(r["protocol"]),
                         str(r["variant"]), str(r["n_images"]), _pct(r["object_acc"]), _pct(r["attack_rate"]),
                         _pct(r["clean_variant_acc"]), drop])
    return LEADERBOARD_HEADER, rows


def plot_real_accuracy(summary: pd.DataFrame, path: Path) -> None:
    """Bars of object accuracy and attack rate (95% Wilson intervals as error bars) per variant,
    one bar per model and defence, one row of two panels per (dataset, protocol).

    Raises:
        ValueError: The summary is empty.
    """
    if summary.empty:
        raise ValueError("plot_real_accuracy: the summary table is empty")
    groups = list(summary.groupby(["dataset", "protocol"], sort=False))
    models = list(dict.fromkeys(zip(summary["model"], summary["pretrained"], summary["defence"])))
    colors = dict(zip(models, get_colors(len(models))))
    with plain_text():
        fig, axes = plt.subplots(len(groups), 2, figsize=(10, 3.4 * len(groups) + 0.6), squeeze=False,
                                 layout="constrained")
        for row, ((dataset, protocol), rows) in enumerate(groups):
            variants = list(dict.fromkeys(rows["variant"]))
            width = 0.8 / len(models)
            for col, (metric, title) in enumerate((("object_acc", "object accuracy"), ("attack_rate", "attack rate"))):
                ax = axes[row, col]
                for m, model in enumerate(models):
                    sel = rows[(rows["model"] == model[0]) & (rows["pretrained"] == model[1])
                               & (rows["defence"] == model[2])].set_index("variant")
                    present = [v for v in variants if v in sel.index]
                    x = np.array([variants.index(v) for v in present]) + (m - (len(models) - 1) / 2) * width
                    value = sel.loc[present, metric].to_numpy(dtype=float)
                    err = np.vstack([value - sel.loc[present, f"{metric}_ci_low"].to_numpy(dtype=float),
                                     sel.loc[present, f"{metric}_ci_high"].to_numpy(dtype=float) - value])
                    ax.bar(x, value, width, yerr=err, capsize=3, color=colors[model],
                           label=truncate_label(f"{model[0]}/{model[1]}"
                                                + ("" if model[2] == "none" else f" {model[2]}"), 60))
                ax.set_xticks(range(len(variants)), variants)
                ax.set_ylim(0, 1)
                ax.set_ylabel(title)
                ax.set_title(f"{dataset}, protocol {protocol}: {title}")
                ax.grid(axis="y", alpha=0.3)
        axes[0, 0].legend(loc="upper left", fontsize=7)
        save_figure(fig, path)


def plot_real_examples(examples: list[dict[str, Any]], path: Path, columns: int = 4) -> None:
    """A grid of photos, each captioned with its object label, attack word and prediction; a
    green frame when the prediction is the object, red otherwise.

    Args:
        examples: Dicts with `image` (uint8 H x W x 3), `object_label`, `attack_word`, `pred_label`,
            `variant`.
        path: The PNG file to write.

    Raises:
        ValueError: `examples` is empty.
    """
    if not examples:
        raise ValueError("plot_real_examples: no examples")
    nrows = -(-len(examples) // columns)
    ncols = min(columns, len(examples))
    with plain_text():
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.4 * ncols, 3.0 * nrows + 0.5), squeeze=False,
                                 layout="constrained")
        for k, ax in enumerate(axes.flat):
            if k >= len(examples):
                ax.set_visible(False)
                continue
            ex = examples[k]
            ax.imshow(np.asarray(ex["image"]))
            ax.set_xticks([])
            ax.set_yticks([])
            correct = ex["pred_label"] == ex["object_label"]
            for spine in ax.spines.values():
                spine.set_edgecolor("#1e8449" if correct else "#c0392b")
                spine.set_linewidth(2.5)
            ax.set_xlabel(f"{ex['variant']}\nobject: {truncate_label(str(ex['object_label']), 22)}\n"
                          f"text: {truncate_label(str(ex['attack_word']), 22)}\n"
                          f"predicted: {truncate_label(str(ex['pred_label']), 22)}", fontsize=8, loc="left")
        fig.suptitle("Real typographic attacks (green frame: predicted the object; red: otherwise)", fontsize=10)
        save_figure(fig, path, palette=True)


def write_real_report(out_dir: Path, summary: pd.DataFrame, leaderboard: pd.DataFrame, figures: Sequence[Path],
                      run_infos: Sequence[dict], name: str = "real", notes: Sequence[str] = ()) -> tuple[Path, Path]:
    """Write `<name>.md` and a self-contained `<name>.html` (figures embedded) into `out_dir`:
    model warnings, the leaderboard, the summary table, the figures and one section per run.

    Returns:
        (path of the .md, path of the .html).
    """
    out_dir = Path(out_dir)
    models = list(dict.fromkeys(zip(summary["model"], summary["pretrained"])))
    blocks = [ReportBlock("h1", "typoattack report: real typographic attacks")]
    blocks += [ReportBlock("warn", w) for w in get_model_warnings((m, p or None) for m, p in models)]
    blocks += [ReportBlock("p", note) for note in notes]
    blocks += [ReportBlock("h2", "Leaderboard"), ReportBlock("p", _LEADERBOARD_NOTE),
               build_table_block(*build_real_leaderboard_cells(leaderboard), "leaderboard"),
               ReportBlock("h2", "Object accuracy and attack rate"), ReportBlock("p", _NOTE),
               build_table_block(*build_summary_cells(summary), "per-word")]
    if figures:
        blocks.append(ReportBlock("h2", "Figures"))
        blocks += [ReportBlock("figure", path=Path(f)) for f in figures]
    blocks.append(ReportBlock("h2", "Runs"))
    for index, info in enumerate(run_infos, start=1):
        blocks += list_run_blocks(info, index)
    return write_report_pages(blocks, out_dir, name, "typoattack report: real typographic attacks")


EXAMPLES = 8
"""Photos shown in real_examples.png."""


def select_real_example_rows(records: pd.DataFrame, model: str, pretrained: str, n: int = EXAMPLES) -> pd.DataFrame:
    """The rows `collect_real_examples` shows, from in-memory records (the pandas reference of
    `query_real_example_rows`): the first `n // variants` records (at least one) of each variant of
    `model` under the defence of its first record, variants in the order they first appear, at most
    `n` in all."""
    mine = records[(records["model"] == model) & (records["pretrained"] == pretrained)]
    if "defence" in mine.columns and not mine.empty:
        mine = mine[mine["defence"] == mine["defence"].iloc[0]]
    variants = list(dict.fromkeys(mine["variant"]))
    per_variant = max(1, n // len(variants))
    rows = pd.concat([mine[mine["variant"] == v].head(per_variant) for v in variants])
    return rows.head(n)


EXAMPLE_COLUMNS = ["image_id", "object_label", "attack_word", "pred_label", "variant"]


def query_real_example_rows(records: RecordSet, model: str, pretrained: str, n: int = EXAMPLES,
                            where: str = "true") -> pd.DataFrame:
    """`select_real_example_rows` of the records matching `where`, by filtered queries: the first
    record's defence and the variants in order of first appearance (one small aggregate), then
    each variant's first records (`WHERE ... LIMIT`, which stops reading once it has them).

    Returns:
        EXAMPLE_COLUMNS of at most `n` records.

    Raises:
        ZeroDivisionError: No record of `model` (as the reference).
    """
    base = real_records_sql(records, where)
    mine = "model = $model AND pretrained = $pretrained"
    params: dict[str, object] = {"model": model, "pretrained": pretrained}
    first = records.frame(f"SELECT defence FROM ({base}) WHERE {mine} LIMIT 1", params)
    if not first.empty:  # `=` as pandas' ==: a missing value matches nothing
        mine += " AND defence = $defence"
        params["defence"] = _plain(first["defence"].iloc[0])
    variants = records.frame(f"SELECT variant, min(_ord) AS _first FROM (SELECT variant, row_number() OVER () AS _ord "
                             f"FROM ({base}) WHERE {mine}) GROUP BY variant ORDER BY _first", params)
    variants = variants["variant"].tolist()
    per_variant = max(1, n // len(variants))
    columns = ", ".join(quote_name(c) for c in EXAMPLE_COLUMNS)
    parts = [records.frame(f"SELECT {columns} FROM ({base}) WHERE {mine} AND variant = $variant "
                           f"LIMIT {int(per_variant)}", {**params, "variant": _plain(v)}) for v in variants]
    return pd.concat(parts, ignore_index=True).head(n)


def _plain(value: Any) -> Any:
    """A query parameter: None for a missing value."""
    return None if pd.isna(value) else value


def collect_real_examples(records: RecordSet, info: dict[str, Any], n: int = EXAMPLES,
                          where: str = "true") -> list[dict[str, Any]]:
    """Up to `n` photos of the run's first model under its first defence (spread over the variants)
    with their predictions, decoded with that model's preprocessing. The rows are found by a
    filtered query over the records matching `where` (`query_real_example_rows`).

    Raises:
        TypoAttackError: The photos or the model's preprocessing cannot be read here.
    """
    from typoattack.backends.registry import get_backend
    from typoattack.config.types import ModelSpec, RealDataset
    from typoattack.data.real_datasets import open_real_dataset

    config = info["config"]
    first = config["models"][0]
    spec = ModelSpec(first["name"], first.get("pretrained"), first.get("backend", DEFAULT_BACKEND))
    transform = get_backend(spec.backend).get_geometry(spec).transform
    source = open_real_dataset(RealDataset(config["dataset"]), config["data"]["source"], config["data"]["hf_split"])
    index = {item.image_id: i for i, item in enumerate(source.items)}
    rows = query_real_example_rows(records, spec.name, spec.pretrained or "", n, where)
    examples = []
    for r in rows.itertuples():
        if r.image_id not in index:
            raise OutputError(f"photo {r.image_id!r} of the run is no longer in {config['data']['source']}")
        image = np.asarray(transform(source.open_image(index[r.image_id])), dtype=np.uint8)
        examples.append({"image": image, "object_label": r.object_label, "attack_word": r.attack_word,
                         "pred_label": r.pred_label, "variant": r.variant})
    return examples


def write_real_report_page(run_dirs: Sequence[Path], infos: Sequence[RunInfo], out: Path, stem: str,
                           notes: Sequence[str], progress: ProgressReporter | None = None) -> ReportPart:
    """Rewrite the tables of real runs from their records and write `<stem>.md` / `<stem>.html`,
    real_summary.csv, real_leaderboard.csv/.md, real_accuracy.png and real_examples.png into `out`.

    The runs' records are queried where they lie (`open_run_records`), never loaded whole.

    Raises:
        OutputError: A run is incomplete, or two runs hold the same model, dataset, protocol and photos.
    """
    progress = progress or NullProgress()
    raw_infos = [i.to_dict() for i in infos]
    figures = [out / "real_accuracy.png"]
    with open_run_records(run_dirs, infos) as records:
        for k, d in enumerate(run_dirs):
            write_real_tables(records, Path(d), where=f"run = {k}")
        if not check_unique_photos(records):
            raise OutputError("two of the runs hold the same model, dataset and protocol; report runs of different "
                              "models, datasets or protocols")
        out.mkdir(parents=True, exist_ok=True)
        summary = query_summary(records)
        leaderboard = build_real_leaderboard(summary)
        write_csv(summary, out / "real_summary.csv")
        write_csv(leaderboard, out / "real_leaderboard.csv")
        plot_real_accuracy(summary, figures[0])
        add_optional_figure(figures, out / "real_examples.png",
                            lambda: collect_real_examples(records, raw_infos[0], where="run = 0"),
                            plot_real_examples, progress.log, "the photos")
    _, html_path = write_real_report(out, summary, leaderboard, figures, raw_infos, name=stem, notes=notes)
    write_text_atomic(out / "real_leaderboard.md", format_markdown_table(*build_real_leaderboard_cells(leaderboard)))
    return ReportPart(html_path, summary)
