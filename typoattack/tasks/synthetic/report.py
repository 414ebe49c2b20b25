"""The report of `eval` runs: recompute each run's tables from its records, then figures,
leaderboard, top confusions, re-rendered examples and the report page over all the runs."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis import plots
from typoattack.analysis.labels import format_style, list_varying_styles
from typoattack.analysis.metrics import (
    MANY_WORDS, build_confusion_table, build_leaderboard, build_per_word_table, build_top_confusions, count_words,
    rank_words, select_heatmap_words, with_defence,
)
from typoattack.analysis.report import (
    PER_WORD_CSV, ReportBlock, add_optional_figure, format_leaderboard_markdown, has_several_defences,
    list_confusion_blocks, write_report, write_tables,
)
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import DataSpec, ModelSpec, RenderStyle
from typoattack.constants import CLEAN_WORD
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.data.sources import open_image_source
from typoattack.errors import OutputError
from typoattack.engine.rundir import RunInfo, load_records
from typoattack.engine.task import ReportPart
from typoattack.files import build_word_slugs, get_label_slug, write_csv, write_text_atomic
from typoattack.records import (
    CONDITION_COLUMNS, DEFENCE_COLUMN, IMAGE_COLUMNS, MODEL_COLUMNS, NO_DEFENCE, STYLE_COLUMNS, Condition,
)
from typoattack.progress import NullProgress, ProgressReporter

CONFUSION_MAX_WORDS = 12
"""At most this many words get a confusion heatmap; with more than MANY_WORDS words, the top
confusions table in the report shows this many words (highest mean ASR; the CSV has them all)."""
EXAMPLE_MAX_WORDS = 8
"""With more than MANY_WORDS words, examples.png shows this many words (highest mean ASR)."""
EXAMPLE_MAX_CONDITIONS = 4
"""examples.png shows at most this many conditions (columns) beside the clean image."""
TOP_CONFUSIONS_CSV = "top_confusions.csv"


def select_example_conditions(conditions: pd.DataFrame, limit: int = EXAMPLE_MAX_CONDITIONS) -> pd.DataFrame:
    """The conditions examples.png shows: all when there are at most `limit`, else `limit` evenly
    spaced ones (first and last included) in the order placement, fraction, style.

    Args:
        conditions: Distinct condition rows (CONDITION_COLUMNS).
        limit: The most conditions returned.

    Returns:
        The chosen rows in that order.
    """
    order = conditions.sort_values(["placement", "fraction", *STYLE_COLUMNS], kind="stable", na_position="last")
    if len(order) <= limit:
        return order.reset_index(drop=True)
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, limit)).astype(int))
    return order.iloc[picks].reset_index(drop=True)


def select_example_images(candidates: Sequence[str], word: str, seed: int, n: int,
                          used: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """The images examples.png shows for `word`: `n` drawn without replacement by a generator keyed
    on (seed, word), so each word gets its own images and a rerun the same ones.

    Images in `used` (shown for earlier words) are left out while at least `n` others remain.

    Args:
        candidates: Image ids that have a clean record and one under every shown condition.
        word: The attack word (keys the draw).
        seed: The run's seed.
        n: Images wanted.
        used: Image ids already shown.

    Returns:
        Up to `n` image ids, in draw order.
    """
    pool = sorted(set(candidates))
    fresh = [c for c in pool if c not in used]
    pool = fresh if len(fresh) >= n else pool
    rng = np.random.default_rng([seed, zlib.crc32(word.encode("utf-8"))])
    picks = rng.choice(len(pool), size=min(n, len(pool)), replace=False) if pool else []
    return [pool[int(i)] for i in picks]


def format_condition(row: Any, styles: Sequence[str] = ()) -> str:
    """`fraction 0.04 · paper8` (and the varying styles) for a condition row or dict."""
    text = f"fraction {float(row['fraction']):g} · {row['placement']}"
    return text + (f" · {format_style(dict(row), styles)}" if styles else "")


def collect_examples(records: pd.DataFrame, info: dict[str, Any], words: list[str] | None = None,
                     images_per_word: int = 1, max_conditions: int = EXAMPLE_MAX_CONDITIONS) -> list[dict[str, Any]]:
    """Re-render clean and attacked canvases of a few images per word from the records' conditions
    and source images.

    Uses the run's first model. Per word: the conditions of `select_example_conditions`, and
    `images_per_word` images drawn by `select_example_images` among those with a clean record and
    one under each of those conditions (images shown for an earlier word are avoided).

    Args:
        records: The run's records (one defence).
        info: Its run.json.
        words: The words to show, in that order (None: every attacked word).
        images_per_word: Images (rows) per word.
        max_conditions: The most conditions (columns).

    Returns:
        Dicts for `plots.plot_examples` (plots.EXAMPLE_KEYS), one per (word, image, condition).

    Raises:
        TypoAttackError: The source images or the model's preprocessing cannot be read here.
    """
    from typoattack.backends.registry import get_backend

    config = info["config"]
    first = config["models"][0]
    spec = ModelSpec(first["name"], first.get("pretrained"), first.get("backend", "open_clip"))
    geometry = get_backend(spec.backend).get_geometry(spec)
    transform, size = geometry.transform, geometry.size
    source = open_image_source(DataSpec(**config["data"]))
    index = {item.image_id: i for i, item in enumerate(source.items)}
    seed = int(config["seed"])
    styles = [RenderStyle(font=st["font"], fill=tuple(st["fill"]), outline=tuple(st["outline"]),
                          outline_width=st["outline_width"], opacity=st["opacity"]) for st in config["styles"]]
    mine = records[(records["model"] == spec.name) & (records["pretrained"] == (spec.pretrained or ""))]
    clean = mine[mine["word"] == CLEAN_WORD].set_index("image_id")["pred_index"]
    attacked = mine[(mine["word"] != CLEAN_WORD) & mine["image_id"].isin(clean.index)]
    varying = list_varying_styles(attacked)
    present = list(dict.fromkeys(attacked["word"]))
    examples: list[dict[str, Any]] = []
    used: set[str] = set()
    for word in (present if words is None else [w for w in words if w in present]):
        rows = attacked[attacked["word"] == word]
        shown = select_example_conditions(rows[CONDITION_COLUMNS].drop_duplicates(), max_conditions)
        by_condition = [rows.merge(shown.iloc[[k]], on=CONDITION_COLUMNS).set_index("image_id")
                        for k in range(len(shown))]
        candidates = set.intersection(*(set(b.index) for b in by_condition))
        chosen = select_example_images(sorted(candidates), word, seed, images_per_word, used)
        used.update(chosen)
        masks = [create_attack_mask(c.word, c.fraction, c.placement, c.style, size)
                 for c in (Condition.from_row(shown.iloc[k], styles) for k in range(len(shown)))]
        for image_id in chosen:
            canvas = np.asarray(transform(source.open_image(index[image_id])), dtype=np.uint8)
            for k, (mask, cells) in enumerate(zip(masks, by_condition)):
                r = cells.loc[image_id]
                image, _ = apply_attack(canvas, mask, image_id, seed)
                examples.append({"word": word, "image_id": image_id, "condition": format_condition(shown.iloc[k], varying),
                                 "image": image, "clean_image": canvas,
                                 "true_name": IMAGENET_CLASSNAMES[int(r["true_index"])],
                                 "clean_pred": IMAGENET_CLASSNAMES[int(clean[image_id])],
                                 "attacked_pred": IMAGENET_CLASSNAMES[int(r["pred_index"])],
                                 "target_name": IMAGENET_CLASSNAMES[int(r["target_index"])]})
    return examples


def _load_runs(dirs: list[Path], infos: list[RunInfo]) -> list[pd.DataFrame]:
    """Each run's records (its tables rewritten from them)."""
    all_records = []
    for d, info in zip(dirs, infos):
        records = load_records(d, info)
        if records.empty or (records["word"] != CLEAN_WORD).sum() == 0:
            raise OutputError(f"the run in {d} has no attacked records; nothing to report")
        write_tables(records, d, IMAGENET_CLASSNAMES)
        all_records.append(records)
    return all_records


def select_figure_words(per_word: pd.DataFrame, limit: int) -> list[str] | None:
    """The words that get per-word figures: None (all) up to MANY_WORDS words, else the `limit`
    words with the highest mean ASR."""
    if count_words(per_word) <= MANY_WORDS:
        return None
    return rank_words(per_word)[:limit]


def get_shown_defence(table: pd.DataFrame) -> str:
    """The defence the figures show: `none` when the table has it, else the first by name."""
    return min(table[DEFENCE_COLUMN].unique(), key=lambda d: (d != NO_DEFENCE, d))


def _plot_figures(per_word: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """The summary figures, and notes on what was left out.

    Up to MANY_WORDS words: ASR against cover, ASR per word and accuracy. Above: ASR against cover
    (summarised over words), the ranked, distribution and word-length views instead of ASR per
    word, and accuracy. With several defences, one ASR-vs-fraction figure per defence and the other
    figures of `get_shown_defence` only.
    """
    figures, notes = [], []
    if has_several_defences(per_word):
        defences = sorted(per_word["defence"].unique(), key=lambda d: (d != NO_DEFENCE, d))
        for defence in defences:
            figures.append(out / f"asr_vs_fraction_{get_label_slug(defence)}.png")
            plots.plot_asr_vs_fraction(per_word[per_word["defence"] == defence], figures[-1])
        notes.append(f"The run compares {len(defences)} defences ({', '.join(defences)}): asr_vs_fraction_<defence> "
                     f"shows each one; the other figures, the examples and the top confusions show defence "
                     f"{defences[0]} only.")
        per_word = per_word[per_word["defence"] == defences[0]]
    large = count_words(per_word) > MANY_WORDS
    summaries: dict[str, Callable[[pd.DataFrame, Path], None]] = {"asr_vs_fraction": plots.plot_asr_vs_fraction}
    if large:
        summaries.update(asr_ranked=plots.plot_asr_ranked, asr_distribution=plots.plot_asr_distribution,
                         asr_vs_word_length=plots.plot_asr_vs_word_length)
    else:
        summaries["asr_by_word"] = plots.plot_asr_by_word
    summaries["accuracy"] = plots.plot_accuracy
    for name, plot in summaries.items():
        figures.append(out / f"{name}.png")
        plot(per_word, figures[-1])
    if large:
        notes.append(f"The vocabulary has {count_words(per_word)} words (more than {MANY_WORDS}): ASR per word is "
                     "shown as a ranking, a distribution and against word length; examples.png shows the "
                     f"{EXAMPLE_MAX_WORDS} words with the highest mean ASR and the top confusions table the "
                     f"{CONFUSION_MAX_WORDS} such words.")
    return figures, notes


def write_confusions(records: pd.DataFrame, per_word: pd.DataFrame, out: Path) -> list[ReportBlock]:
    """Write top_confusions.csv (every model, defence and word; class names beside the indices) and
    the heatmaps of the words that
    qualify (`metrics.select_heatmap_words`, at most CONFUSION_MAX_WORDS, of the shown defence);
    return the report's "Top confusions" section.

    The heatmap of a word is `confusion_<slug>.png`, with the slug of `files.build_word_slugs` over
    all the table's words (sorted), so a word's file name does not depend on which words qualify.
    """
    confusion = build_confusion_table(records)
    every = build_top_confusions(confusion)
    names = {"true_name": every["true_index"], "pred_name": every["pred_index"]}
    for column, indices in names.items():
        every.insert(every.columns.get_loc(str(indices.name)) + 1, column,
                     [IMAGENET_CLASSNAMES[int(i)] for i in indices])
    write_csv(every, out / TOP_CONFUSIONS_CSV)
    defence = get_shown_defence(per_word)
    notes = []
    if has_several_defences(per_word):
        confusion = confusion[confusion[DEFENCE_COLUMN] == defence]
        per_word = per_word[per_word[DEFENCE_COLUMN] == defence]
        notes.append(f"Defence {defence} only.")
    top = build_top_confusions(confusion)
    chosen = select_figure_words(per_word, CONFUSION_MAX_WORDS)
    if chosen is not None:
        top = top[top["word"].isin(chosen)]
        notes.append(f"The {len(chosen)} words with the highest mean ASR only.")
    targets = {str(w): int(t) for w, t in zip(per_word["word"], per_word["target_index"])}
    slugs = build_word_slugs(sorted(set(map(str, per_word["word"]))))
    heatmaps: dict[str, Path] = {}
    for word in sorted(select_heatmap_words(confusion, CONFUSION_MAX_WORDS)):
        heatmaps[word] = out / f"confusion_{slugs[word]}.png"
        plots.plot_confusion(confusion, word, IMAGENET_CLASSNAMES, heatmaps[word], target_index=targets.get(word))
    return list_confusion_blocks(top, IMAGENET_CLASSNAMES, targets, heatmaps, notes)


def write_synthetic_report(dirs: list[Path], infos: list[RunInfo], out: Path, stem: str, notes: list[str],
                           progress: ProgressReporter | None = None, examples_per_word: int = 1) -> ReportPart:
    """Recompute each `eval` run's tables from its records, then write plots, a leaderboard, the top
    confusions and a self-contained report page over all the runs.

    Args:
        dirs: Folders of complete `eval` runs.
        infos: Their run.json.
        out: The report folder.
        stem: The page's file name without suffix.
        notes: Paragraphs for the top of the page.
        progress: Where to show messages.
        examples_per_word: Images (rows) per word in examples.png, each shown clean and under up to
            EXAMPLE_MAX_CONDITIONS conditions (with more than MANY_WORDS words, only the
            EXAMPLE_MAX_WORDS words with the highest mean ASR are shown).

    Returns:
        The page and the per-word table over all runs.

    Raises:
        OutputError: A run is incomplete or has no attacked records, or two runs hold the same model
            and condition.
    """
    progress = progress or NullProgress()
    all_records = _load_runs(dirs, infos)
    records = with_defence(pd.concat(all_records, ignore_index=True))
    if records.duplicated([*MODEL_COLUMNS, DEFENCE_COLUMN, IMAGE_COLUMNS[0], *CONDITION_COLUMNS]).any():
        raise OutputError("two of the runs hold the same model and condition; report runs of different models or settings")
    out.mkdir(parents=True, exist_ok=True)
    per_word = build_per_word_table(records, IMAGENET_CLASSNAMES)
    figures, figure_notes = _plot_figures(per_word, out)
    raw_infos = [i.to_dict() for i in infos]
    shown = with_defence(all_records[0])
    shown = shown[shown[DEFENCE_COLUMN] == get_shown_defence(shown)]
    add_optional_figure(figures, out / "examples.png",
                        lambda: collect_examples(shown, raw_infos[0], select_figure_words(per_word, EXAMPLE_MAX_WORDS),
                                                 examples_per_word),
                        plots.plot_examples, progress.log, "the source images")
    confusions = write_confusions(records, per_word, out)
    leaderboard = build_leaderboard(per_word)
    write_csv(leaderboard, out / "leaderboard.csv")
    write_text_atomic(out / "leaderboard.md", format_leaderboard_markdown(leaderboard))
    write_csv(per_word, out / PER_WORD_CSV)
    _, html_path = write_report(out, per_word, leaderboard, figures, raw_infos, notes=[*notes, *figure_notes],
                                stem=stem, sections=confusions)
    return ReportPart(html_path, per_word)
