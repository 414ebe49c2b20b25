"""The report page of `find-heads` runs: each run's heads files rewritten from its records, a summary
table (one row per model), a figure of accuracy against the heads kept, and per model a table of the
heads the search tried. No model code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from typoattack.analysis.figure_style import get_colors, save_figure
from typoattack.analysis.labels import format_percent
from typoattack.analysis.report_page import ReportBlock, build_table_block, write_report_pages
from typoattack.analysis.report_sections import list_run_blocks
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.tasks.heads.tables import get_run_models, query_model_rows, write_heads_tables

FIGURE = "heads_search.png"
STEP_HEADER = ["step", "head", "score", "kept", "selection clean", "selection typographic", "held-out clean",
               "held-out typographic"]


def _label(spec_name: str, pretrained: object) -> str:
    return spec_name + (f"/{pretrained}" if isinstance(pretrained, str) else "")


def _plot(searches: list[tuple[str, pd.DataFrame]], path: Path) -> None:
    """Top-1 on the true class against the number of heads ablated: typographic (left) and clean (right),
    held-out (solid) and selection (dashed), a colour per model."""
    import matplotlib.pyplot as plt  # the Agg backend: set by figure_style
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for colour, (label, rows) in zip(get_colors(len(searches)), searches):
        steps = rows[(rows["step"] == 0) | rows["kept"]]
        for ax, kind in zip(axes, ("attacked", "clean")):
            ax.plot(steps["n_kept"], 100 * steps[f"heldout_{kind}_top1"], "-o", color=colour, label=label)
            ax.plot(steps["n_kept"], 100 * steps[f"selection_{kind}_top1"], "--", color=colour, alpha=0.6)
    for ax, title in zip(axes, ("typographic top-1 (%)", "clean top-1 (%)")):
        ax.set_title(title)
        ax.set_xlabel("heads ablated (solid: held-out, dashed: selection)")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)


def _step_cells(rows: pd.DataFrame) -> list[list[str]]:
    tried = rows[rows["tried"].astype(bool)]
    return [["baseline" if r["step"] == 0 else str(int(r["step"])),
             "" if r["step"] == 0 else f"{int(r['layer'])}.{int(r['head'])}",
             "" if r["step"] == 0 else f"{r['score']:.4f}", "yes" if r["kept"] else "",
             *(format_percent(r[c]) if pd.notna(r[c]) else "" for c in
               ("selection_clean_top1", "selection_attacked_top1", "heldout_clean_top1", "heldout_attacked_top1"))]
            for _, r in tried.iterrows()]


def write_heads_report(run_dirs: list[Path], infos: list[RunInfo], out: Path, stem: str,
                       notes: list[str]) -> ReportPart:
    """Rewrite each run's heads files and summary from its records, then write `{stem}.md`/`.html` and
    the figure into `out`.

    Raises:
        OutputError: A run is incomplete or a shard.
    """
    out.mkdir(parents=True, exist_ok=True)
    summaries, searches = [], []
    for k, (run_dir, info) in enumerate(zip(run_dirs, infos)):
        with open_run_records(run_dir, info) as records:
            summary = write_heads_tables(records, run_dir, info)
            for spec in get_run_models(info):
                label = spec.label if len(run_dirs) == 1 else f"{spec.label} (run {k + 1})"
                searches.append((label, query_model_rows(records, spec)))
        summaries.append(summary.assign(run=str(run_dir)))
    table = pd.concat(summaries, ignore_index=True)
    _plot(searches, out / FIGURE)
    blocks = [ReportBlock("h1", "Attention heads to ablate (typoattack find-heads)"),
              *(ReportBlock("p", n) for n in notes),
              ReportBlock("p", "Heads are scored by their class-token attention on the drawn text and kept greedily "
                               "while they raise typographic top-1 on the selection half of the images; the held-out "
                               "half is measured for this report only. Evaluate them with `--defence heads:@FILE`.")]
    cells = [[_label(r["model"], r["pretrained"]), r["heads"] or "none", f"{r['run']}/{r['file']}", r["stopped"],
              f"{format_percent(r['heldout_clean_top1_baseline'])} -> {format_percent(r['heldout_clean_top1'])}",
              f"{format_percent(r['heldout_attacked_top1_baseline'])} -> {format_percent(r['heldout_attacked_top1'])}"]
             for r in table.to_dict("records")]
    blocks += [build_table_block(["model", "heads", "file", "stopped", "held-out clean", "held-out typographic"],
                                 cells, "summary"),
               ReportBlock("figure", path=out / FIGURE)]
    for label, rows in searches:
        untried = int((~rows["tried"].astype(bool)).sum())
        blocks += [ReportBlock("h2", label), build_table_block(STEP_HEADER, _step_cells(rows), "steps")]
        if untried:
            blocks.append(ReportBlock("p", f"{untried} more heads were not tried (the search stopped)."))
    blocks.append(ReportBlock("h2", "Runs"))
    for k, info in enumerate(infos):
        blocks += list_run_blocks(info.to_dict(), k)
    _, html = write_report_pages(blocks, out, stem, "find-heads report")
    return ReportPart(html, table)

