"""The report of `eval` runs: recompute each run's tables from its records, then figures,
leaderboard, re-rendered examples and the report page over all the runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis import plots
from typoattack.analysis.metrics import (
    MANY_WORDS, build_leaderboard, build_per_word_table, count_words, rank_words,
)
from typoattack.analysis.report import (
    PER_WORD_CSV, format_leaderboard_markdown, has_several_defences, write_report, write_tables,
)
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import DataSpec, ModelSpec, RenderStyle
from typoattack.constants import CLEAN_WORD
from typoattack.data.classes import IMAGENET_CLASSNAMES
from typoattack.data.sources import open_image_source
from typoattack.errors import OutputError, TypoAttackError
from typoattack.engine.rundir import RunInfo, load_records
from typoattack.engine.task import ReportPart
from typoattack.files import get_label_slug, get_word_slug, write_csv, write_text_atomic
from typoattack.analysis.metrics import with_defence
from typoattack.records import CONDITION_COLUMNS, DEFENCE_COLUMN, IMAGE_COLUMNS, MODEL_COLUMNS, NO_DEFENCE, Condition
from typoattack.progress import NullProgress, ProgressReporter

CONFUSION_MAX_WORDS = 12
"""With more than MANY_WORDS words, confusion heatmaps are drawn for this many words (highest mean ASR)."""
EXAMPLE_MAX_WORDS = 8
"""With more than MANY_WORDS words, examples.png shows this many words (highest mean ASR)."""


def collect_examples(records: pd.DataFrame, info: dict[str, Any], per_word_images: int,
                     words: list[str] | None = None) -> list[dict[str, Any]]:
    """Re-render a few attacked canvases per word from the records' conditions and source images.

    Uses the run's first model and, per word, the condition of its first attacked record; only
    `words` (in that order) when given, else every attacked word.

    Returns:
        Dicts for `plots.plot_examples` (word, uint8 HxWx3 image, class names).

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
    styles = [RenderStyle(font=st["font"], fill=tuple(st["fill"]), outline=tuple(st["outline"]),
                          outline_width=st["outline_width"], opacity=st["opacity"]) for st in config["styles"]]
    mine = records[(records["model"] == spec.name) & (records["pretrained"] == (spec.pretrained or ""))]
    clean = mine[mine["word"] == CLEAN_WORD].set_index("image_id")["pred_index"]
    attacked = mine[mine["word"] != CLEAN_WORD]
    examples = []
    present = set(attacked["word"])
    for word in (dict.fromkeys(attacked["word"]) if words is None else [w for w in words if w in present]):
        rows = attacked[attacked["word"] == word]
        first = rows.iloc[0]
        same = rows[(rows[CONDITION_COLUMNS] == first[CONDITION_COLUMNS]).all(axis=1)]
        cond = Condition.from_row(first, styles)
        mask = create_attack_mask(cond.word, cond.fraction, cond.placement, cond.style, size)
        for r in same.head(per_word_images).itertuples():
            canvas = np.asarray(transform(source.open_image(index[r.image_id])), dtype=np.uint8)
            image, _ = apply_attack(canvas, mask, r.image_id, int(config["seed"]))
            examples.append({"word": word, "image": image, "true_name": IMAGENET_CLASSNAMES[r.true_index],
                             "clean_pred": IMAGENET_CLASSNAMES[int(clean[r.image_id])],
                             "attacked_pred": IMAGENET_CLASSNAMES[r.pred_index],
                             "target_name": IMAGENET_CLASSNAMES[r.target_index]})
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


def _plot_figures(records: pd.DataFrame, per_word: pd.DataFrame, out: Path) -> tuple[list[Path], list[str]]:
    """The summary figures and the confusion heatmaps, and notes on what was left out.

    Up to MANY_WORDS words: ASR against cover, ASR per word, accuracy and one heatmap per word.
    Above: ASR against cover (summarised over words), the ranked, distribution and word-length
    views instead of ASR per word, accuracy, and heatmaps of the CONFUSION_MAX_WORDS words with
    the highest mean ASR.
    """
    figures, notes = [], []
    if has_several_defences(per_word):
        # The usual figures show the undefended rows (or the first defence); each defence gets an
        # ASR-vs-fraction figure of its own.
        defences = sorted(per_word["defence"].unique(), key=lambda d: (d != NO_DEFENCE, d))
        for defence in defences:
            figures.append(out / f"asr_vs_fraction_{get_label_slug(defence)}.png")
            plots.plot_asr_vs_fraction(per_word[per_word["defence"] == defence], figures[-1])
        notes.append(f"The run compares {len(defences)} defences ({', '.join(defences)}): asr_vs_fraction_<defence> "
                     f"shows each one; the other figures show defence {defences[0]} only.")
        per_word = per_word[per_word["defence"] == defences[0]]
        records = records[records["defence"] == defences[0]]
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
    chosen = select_figure_words(per_word, CONFUSION_MAX_WORDS)
    words = list(dict.fromkeys(records.loc[records["word"] != CLEAN_WORD, "word"])) if chosen is None else chosen
    for word in words:
        path = out / f"confusion_{get_word_slug(word)}.png"
        plots.plot_confusion(records, word, IMAGENET_CLASSNAMES, path)
        figures.append(path)
    if large:
        notes.append(f"The vocabulary has {count_words(per_word)} words (more than {MANY_WORDS}): ASR per word is "
                     "shown as a ranking, a distribution and against word length; confusion heatmaps are drawn for "
                     f"the {len(words)} words with the highest mean ASR only ({', '.join(words)}); examples.png "
                     f"shows at most {EXAMPLE_MAX_WORDS} words, those with the highest mean ASR.")
    return figures, notes


def write_synthetic_report(dirs: list[Path], infos: list[RunInfo], out: Path, stem: str, notes: list[str],
                           progress: ProgressReporter | None = None, examples_per_word: int = 4) -> ReportPart:
    """Recompute each `eval` run's tables from its records, then write plots, a leaderboard and a
    self-contained report page over all the runs.

    Args:
        dirs: Folders of complete `eval` runs.
        infos: Their run.json.
        out: The report folder.
        stem: The page's file name without suffix.
        notes: Paragraphs for the top of the page.
        progress: Where to show messages.
        examples_per_word: Attacked canvases shown per word in examples.png (with more than
            MANY_WORDS words, only the EXAMPLE_MAX_WORDS words with the highest mean ASR are shown).

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
    figures, figure_notes = _plot_figures(records, per_word, out)
    raw_infos = [i.to_dict() for i in infos]
    try:
        shown = with_defence(all_records[0])
        shown = shown[shown[DEFENCE_COLUMN] == min(shown[DEFENCE_COLUMN], key=lambda d: (d != NO_DEFENCE, d))]
        examples = collect_examples(shown, raw_infos[0], examples_per_word,
                                    select_figure_words(per_word, EXAMPLE_MAX_WORDS))
    except TypoAttackError as e:
        progress.log(f"[yellow]examples.png skipped: the source images cannot be read here ({e})[/]")
    else:
        plots.plot_examples(examples, out / "examples.png")
        figures.append(out / "examples.png")
    leaderboard = build_leaderboard(per_word)
    write_csv(leaderboard, out / "leaderboard.csv")
    write_text_atomic(out / "leaderboard.md", format_leaderboard_markdown(leaderboard))
    write_csv(per_word, out / PER_WORD_CSV)
    _, html_path = write_report(out, per_word, leaderboard, figures, raw_infos, notes=[*notes, *figure_notes],
                                stem=stem)
    return ReportPart(html_path, per_word)
