"""The terminal summary and the report page of `typoattack threshold` runs (no model code): the
leaderboard by median pixel fraction to flip, Distill's sentence per model and word ("half of the images
flip to “pizza” by 3.1% of the pixels (95% CI 2.8-3.4%)"), the share of non-monotone pairs, the robustness
curve (one line per model, log x-axis) and a histogram of thresholds per word."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from typoattack.analysis.figure_style import get_colors, plain_text, plt, save_figure, truncate_label
from typoattack.analysis.labels import get_model_label, is_missing, list_varying_styles
from typoattack.analysis.query import RecordSet, quote_literal
from typoattack.analysis.report_page import ReportBlock, build_table_block, write_report_pages
from typoattack.analysis.report import format_classes_line
from typoattack.analysis.report_sections import list_run_blocks
from typoattack.data.class_sets import get_common_class_set
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.files import write_csv
from typoattack.tasks.threshold.search import AT_MIN, FOUND, OUTCOMES, REASONS
from typoattack.tasks.threshold.tables import (
    CURVE_CSV, LEADERBOARD_CSV, MODEL_KEYS, PER_WORD_CSV, query_curve, query_per_word_threshold, rank_leaderboard,
    write_threshold_tables,
)

CURVE_FIGURE = "threshold_curve.png"
HISTOGRAM_FIGURE = "threshold_histograms.png"
HISTOGRAM_STEPS_PER_DECADE = 8
MAX_HISTOGRAM_WORDS = 24
"""Words with a histogram panel, at most (the first in the per-word table's order)."""
WHAT = {"target": "the word's target class", "flip": "leaving the true class"}
LEADERBOARD_HEADER = ["rank", "model", "defence", "median f_flip [95% CI]", "flipped", "median f_target [95% CI]",
                      "to target", "non-monotone", "pairs"]
PER_WORD_HEADER = ["model", "defence", "word", "placement", "median f_target [95% CI]", "to target",
                   "median f_flip [95% CI]", "flipped", "non-monotone"]


def format_fraction(value: Any) -> str:
    """A pixel fraction as a percentage with two significant digits (0.031 -> '3.1%', 0.0051 -> '0.51%');
    '> max' for NaN (beyond the largest fraction searched)."""
    if is_missing(value) or not math.isfinite(float(value)):
        return "> max"
    v = 100 * float(value)
    digits = max(0, 1 - int(math.floor(math.log10(v)))) if v > 0 else 1
    return f"{v:.{digits}f}%"


def format_interval(row: dict[str, Any], outcome: str) -> str:
    """'3.1% [2.8–3.4%]' of a table row's median and interval ('> max' alone when more than half never
    change); 'n/a' where no pair applies."""
    if not row[f"{outcome}_n"]:
        return "n/a"
    median = row[f"{outcome}_median"]
    if is_missing(median):
        return "> max"
    low, high = row[f"{outcome}_median_ci_low"], row[f"{outcome}_median_ci_high"]
    if is_missing(high):
        return f"{format_fraction(median)} [{format_fraction(low)}, > max]"
    return f"{format_fraction(median)} [{format_fraction(low).rstrip('%')}–{format_fraction(high)}]"


def _share(value: Any) -> str:
    return "n/a" if is_missing(value) else f"{100 * float(value):.1f}%"


def _non_monotone(row: dict[str, Any]) -> str:
    parts = [f"{o} {_share(row[f'{o}_non_monotone'])}" for o in OUTCOMES if row[f"{o}_n"]]
    return ", ".join(parts) or "n/a"


def describe_threshold(row: dict[str, Any], outcome: str, word: str | None = None) -> str:
    """Distill's sentence for one row of a table: for a word, "half of the 500 images flip to “pizza” by
    3.1% of the pixels (95% CI 2.8–3.4%)"; pooled over words (`word` None), the same of (image, word)
    pairs; or what holds instead when fewer than half change by the largest fraction searched."""
    n = int(row[f"{outcome}_n"])
    if word is not None:
        who = "images" if outcome == "target" else "correctly classified images"
        # Quotes, not Markdown's *...*: the sentence goes into report.html as escaped text too.
        what = f"flip to “{word}”" if outcome == "target" else f"leave their class with “{word}”"
    else:
        who = "(image, word) pairs" if outcome == "target" else "(image, word) pairs of correctly classified images"
        what = "flip to the word's target" if outcome == "target" else "leave the true class"
    if not n:
        return f"no {who} to measure ({what})"
    median = row[f"{outcome}_median"]
    if is_missing(median):
        return (f"fewer than half of the {n:,} {who} {what} by the largest fraction searched "
                f"({_share(row[f'{outcome}_reached'])} do)")
    low, high = row[f"{outcome}_median_ci_low"], row[f"{outcome}_median_ci_high"]
    interval = (f"{format_fraction(low).rstrip('%')}–{format_fraction(high)}" if not is_missing(high)
                else f"{format_fraction(low)} to more than the largest fraction")
    return f"half of the {n:,} {who} {what} by {format_fraction(median)} of the pixels (95% CI {interval})"


def build_leaderboard_cells(leaderboard: pd.DataFrame) -> list[list[str]]:
    return [[str(int(r["rank"])), get_model_label(r["model"], r["pretrained"]), str(r["defence"]),
             format_interval(r, "flip"), _share(r["flip_reached"]), format_interval(r, "target"),
             _share(r["target_reached"]), _non_monotone(r), f"{int(r['n_pairs']):,}"]
            for r in leaderboard.to_dict("records")]


def build_summary_renderables(leaderboard: pd.DataFrame, info: RunInfo | None, full: bool = False) -> list[Any]:
    """The terminal summary (80 columns): the leaderboard, each model's sentence, where the per-word table is;
    with `full`, the per-word table too (read from the run folder)."""
    table = Table(title="Median pixel fraction to change the prediction [95% CI] (higher: more robust)")
    for name in ("model", "f_flip", "flipped", "f_target", "to target"):
        table.add_column(name, justify="left" if name == "model" else "right", overflow="fold")
    for r in leaderboard.to_dict("records"):
        label = get_model_label(r["model"], r["pretrained"]) + ("" if r["defence"] == "none" else f" {r['defence']}")
        table.add_row(label, format_interval(r, "flip"), _share(r["flip_reached"]), format_interval(r, "target"),
                      _share(r["target_reached"]))
    out: list[Any] = [table]
    for r in leaderboard.to_dict("records"):
        label = get_model_label(r["model"], r["pretrained"]) + ("" if r["defence"] == "none" else f" ({r['defence']})")
        out.append(f"{label}: {describe_threshold(r, 'flip')}; {describe_threshold(r, 'target')}. "
                   f"Non-monotone on the grid: {_non_monotone(r)}.")
    folder = Path(info.config["out"]) if info is not None and info.config.get("out") else None
    if full and folder is not None and (folder / PER_WORD_CSV).is_file():
        per_word = pd.read_csv(folder / PER_WORD_CSV, keep_default_na=True)
        labels = [get_model_label(r["model"], r["pretrained"]) + ("" if r["defence"] == "none" else f" {r['defence']}")
                  for r in per_word.to_dict("records")]
        several = len(set(labels)) > 1
        words = Table(title=f"Per word{'' if several else ', ' + labels[0] if labels else ''}: median [95% CI]")
        for name in (("model",) if several else ()) + ("word", "placement", "f_flip", "flipped", "f_target",
                                                       "to target"):
            words.add_column(name, justify="left" if name in ("model", "word", "placement") else "right",
                             overflow="fold", no_wrap=name in ("f_flip", "f_target"))
        for label, r in zip(labels, per_word.to_dict("records")):
            words.add_row(*([label] if several else []), str(r["word"]), str(r["placement"]),
                          format_interval(r, "flip"), _share(r["flip_reached"]), format_interval(r, "target"),
                          _share(r["target_reached"]))
        return [*out, words]
    where = f"{folder}/{PER_WORD_CSV}" if folder is not None else f"{PER_WORD_CSV} in each run folder"
    out.append(f"Every word: {where} (or --table full)")
    return out


def _percent_axis(ax: Any) -> None:
    """A log x-axis labelled in percent of the pixels (0.3%, 1%, 3%, 10%, ...)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([b * 10.0 ** e for e in range(-5, 1) for b in (1, 3)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_curves(curve: pd.DataFrame, path: Path) -> None:
    """The robustness curve: share of pairs changed at or below each pixel fraction (the empirical CDF of the
    thresholds), f_flip left and f_target right, one line per model and defence, log x-axis."""
    series = list(dict.fromkeys(zip(*(curve[k] for k in [*MODEL_KEYS, "run"]))))
    colors = dict(zip(series, get_colors(len(series))))
    with plain_text():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
        for ax, outcome in zip(axes, ("flip", "target")):
            rows = curve[curve["outcome"] == outcome]
            for key in series:
                sel = rows[(rows["model"] == key[0]) & (rows["pretrained"] == key[1]) & (rows["defence"] == key[2])
                           & (rows["run"] == key[3])]
                if sel.empty or not sel["n"].iloc[0]:
                    continue
                label = get_model_label(key[0], key[1]) + ("" if key[2] == "none" else f" {key[2]}")
                ax.step(sel["fraction"], 100 * sel["share"], where="post", color=colors[key],
                        label=truncate_label(label, 50))
            _percent_axis(ax)
            ax.set_xlabel("pixels changed by the text")
            ax.set_title("prediction leaves the true class (f_flip)" if outcome == "flip"
                         else "prediction becomes the word's target (f_target)")
            ax.grid(alpha=0.3, which="both")
            ax.set_xlim(*_fraction_limits(curve))
        axes[0].set_ylabel("pairs changed (%)")
        axes[0].set_ylim(0, 100)
        axes[0].legend(fontsize="small", loc="upper left")
        fig.tight_layout()
        save_figure(fig, path)


def _fraction_limits(curve: pd.DataFrame) -> tuple[float, float]:
    """x-limits around the fractions where some curve changes (the searched range, roughly)."""
    changes = curve[curve.groupby([*MODEL_KEYS, "run", "outcome"])["share"].diff().fillna(curve["share"]) > 0]
    if changes.empty:
        return 1e-3, 0.5
    return max(1e-4, float(changes["fraction"].min()) / 1.5), min(1.0, float(changes["fraction"].max()) * 1.5)


def query_histograms(records: RecordSet, run: int) -> pd.DataFrame:
    """Pairs per (model, defence, word, threshold, bin of HISTOGRAM_STEPS_PER_DECADE per decade) among the
    thresholds reached, with the run's position."""
    reached = {o: f"{o}_reason IN ({quote_literal(REASONS[FOUND])}, {quote_literal(REASONS[AT_MIN])})" for o in OUTCOMES}
    parts = [f"SELECT model, pretrained, defence, word, {quote_literal(o)} AS outcome, "
             f"CAST(floor(log10(f_{o}) * {HISTOGRAM_STEPS_PER_DECADE}) AS INTEGER) AS bin, count(*) AS n "
             f"FROM records WHERE {reached[o]} GROUP BY ALL" for o in OUTCOMES]
    frame = records.frame(" UNION ALL ".join(parts) + " ORDER BY ALL")
    return frame.assign(run=run)


def plot_histograms(hist: pd.DataFrame, words: list[str], path: Path) -> None:
    """One panel per word: histograms (log-spaced bins) of f_flip (solid) and f_target (dashed) per model."""
    series = list(dict.fromkeys(zip(*(hist[k] for k in [*MODEL_KEYS, "run"])))) if not hist.empty else []
    colors = dict(zip(series, get_colors(max(len(series), 1))))
    cols = min(4, max(1, len(words)))
    nrows = max(1, math.ceil(len(words) / cols))
    with plain_text():
        fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.4 * nrows + 0.4), squeeze=False, sharex=True)
        for ax, word in zip(axes.flat, words):
            rows = hist[hist["word"] == word]
            for key in series:
                for outcome, style in (("flip", "-"), ("target", "--")):
                    sel = rows[(rows["model"] == key[0]) & (rows["pretrained"] == key[1]) & (rows["defence"] == key[2])
                               & (rows["run"] == key[3]) & (rows["outcome"] == outcome)]
                    if sel.empty:
                        continue
                    counts = sel.groupby("bin")["n"].sum()
                    bins = np.arange(counts.index.min(), counts.index.max() + 2)
                    heights = counts.reindex(bins[:-1], fill_value=0).to_numpy()
                    edges = 10.0 ** (bins / HISTOGRAM_STEPS_PER_DECADE)
                    ax.stairs(heights, edges, color=colors[key], linestyle=style)
            _percent_axis(ax)
            ax.set_title(truncate_label(word, 30))
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(words):]:
            ax.set_visible(False)
        fig.supxlabel("pixels changed by the text at the threshold (solid: f_flip, dashed: f_target)", fontsize=9)
        fig.supylabel("pairs", fontsize=9)
        fig.tight_layout()
        save_figure(fig, path)


def _word_sentences(per_word: pd.DataFrame) -> list[str]:
    styles = list_varying_styles(per_word)
    several_models = per_word[MODEL_KEYS].drop_duplicates().shape[0] > 1
    several_placements = per_word["placement"].nunique() > 1
    lines = []
    for r in per_word.to_dict("records"):
        where = []
        if several_models:
            where.append(get_model_label(r["model"], r["pretrained"])
                         + ("" if r["defence"] == "none" else f" with {r['defence']}"))
        if several_placements:
            where.append(str(r["placement"]))
        where += [f"{c}={r[c]}" for c in styles]
        lead = f"{', '.join(where)}: " if where else ""
        text = describe_threshold(r, "target", r["word"])
        text += "; " + describe_threshold(r, "flip", r["word"])
        lines.append(lead + text[0].upper() + text[1:] + ".")
    return lines


def write_threshold_report(run_dirs: list[Path], infos: list[RunInfo], out: Path, stem: str,
                           notes: list[str]) -> ReportPart:
    """Rewrite each run's tables from its records, then write `{stem}.md`/`.html` with the leaderboard, the
    sentences, the figures and the per-word table into `out` (and the tables of all the runs together).

    Raises:
        OutputError: A run is incomplete or a shard, or the runs classify into different class sets.
    """
    classes = get_common_class_set([info.extra.get("classes") for info in infos])
    if not classes.is_imagenet:
        notes = [f"{format_classes_line(classes.describe())}: the labels, the classifier and the targets are this "
                 f"class set's ({classes.source}).", *notes]
    out.mkdir(parents=True, exist_ok=True)
    boards, per_words, curves, hists = [], [], [], []
    for k, (run_dir, info) in enumerate(zip(run_dirs, infos)):
        with open_run_records(run_dir, info) as records:
            boards.append(write_threshold_tables(records, run_dir, info).drop(columns="rank").assign(run=k))
            per_words.append(query_per_word_threshold(records).assign(run=k))
            curves.append(query_curve(records).assign(run=k))
            hists.append(query_histograms(records, k))
    leaderboard = rank_leaderboard(pd.concat(boards, ignore_index=True))
    per_word = pd.concat(per_words, ignore_index=True)
    curve, hist = pd.concat(curves, ignore_index=True), pd.concat(hists, ignore_index=True)
    if len(run_dirs) > 1:
        write_csv(leaderboard, out / LEADERBOARD_CSV)
        write_csv(per_word, out / PER_WORD_CSV)
        write_csv(curve, out / CURVE_CSV)
    plot_curves(curve, out / CURVE_FIGURE)
    words = list(dict.fromkeys(per_word["word"]))
    plot_histograms(hist, words[:MAX_HISTOGRAM_WORDS], out / HISTOGRAM_FIGURE)
    blocks = [ReportBlock("h1", "How much text does it take? (typoattack threshold)"),
              *(ReportBlock("p", n) for n in notes),
              ReportBlock("p", "For every image, word, placement, style and defence the search finds the smallest "
                               "share of canvas pixels at which the zero-shot prediction becomes the word's target "
                               "(f_target) and at which it leaves the image's true class (f_flip, over the images "
                               "classified correctly when clean): a grid of log-spaced fractions, then a bisection in "
                               "log space inside the first bracket where the outcome changes. Medians count a pair "
                               "that never changes below the largest fraction as larger than it ('> max' when more "
                               "than half never change); intervals are seeded bootstrap 95% intervals."),
              ReportBlock("toc", "Contents"),
              ReportBlock("h2", "Leaderboard"),
              ReportBlock("p", "Models ranked by the median pixel fraction it takes to move their prediction off "
                               "the true class: higher is more robust."),
              build_table_block(LEADERBOARD_HEADER, build_leaderboard_cells(leaderboard), "leaderboard")]
    for r in leaderboard.to_dict("records"):
        label = get_model_label(r["model"], r["pretrained"]) + ("" if r["defence"] == "none" else f" ({r['defence']})")
        blocks.append(ReportBlock("p", f"{label}: {describe_threshold(r, 'flip')}; {describe_threshold(r, 'target')}."))
    blocks += [ReportBlock("h2", "Non-monotone pairs"),
               ReportBlock("p", "A pair is non-monotone when its outcome, once reached at a grid fraction, is lost "
                                "again at a larger one (a word can flip an image at 5% and not at 6%). The search "
                                "bisects inside the first bracket where the outcome changes, so its threshold is "
                                "the smallest change found on the grid. Share of such pairs: "
                                + "; ".join(f"{get_model_label(r['model'], r['pretrained'])}"
                                            + ("" if r["defence"] == "none" else f" ({r['defence']})")
                                            + f": {_non_monotone(r)}" for r in leaderboard.to_dict("records"))
                                + ".")]
    blocks += [ReportBlock("h2", "Robustness curve"),
               ReportBlock("p", "Share of pairs whose prediction has changed at or below each pixel fraction (the "
                                "empirical CDF of the thresholds; pairs that never change stay below 100%)."),
               ReportBlock("figure", path=out / CURVE_FIGURE),
               ReportBlock("h2", "Per word"),
               *(ReportBlock("p", line) for line in _word_sentences(per_word)),
               ReportBlock("figure", path=out / HISTOGRAM_FIGURE)]
    if len(words) > MAX_HISTOGRAM_WORDS:
        blocks.append(ReportBlock("p", f"Histograms of the first {MAX_HISTOGRAM_WORDS} of {len(words)} words; every "
                                       f"word is in {PER_WORD_CSV}."))
    cells = [[get_model_label(r["model"], r["pretrained"]), str(r["defence"]), str(r["word"]), str(r["placement"]),
              format_interval(r, "target"), _share(r["target_reached"]), format_interval(r, "flip"),
              _share(r["flip_reached"]), _non_monotone(r)] for r in per_word.to_dict("records")]
    blocks += [build_table_block(PER_WORD_HEADER, cells, "per-word"), ReportBlock("h2", "Runs")]
    for k, info in enumerate(infos):
        blocks += list_run_blocks(info.to_dict(), k)
    _, html = write_report_pages(blocks, out, stem, "threshold report")
    return ReportPart(html, leaderboard)
