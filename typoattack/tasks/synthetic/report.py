"""The report of `eval` runs: recompute each run's tables from its records, then figures,
leaderboard, top confusions, re-rendered examples and the report page over all the runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.config.parsing import DEFAULT_BACKEND
from typoattack.analysis import plots
from typoattack.analysis.examples import (
    EXAMPLE_MAX_CONDITIONS, format_condition, select_example_conditions, select_example_images,
)
from typoattack.analysis.labels import list_varying_styles
from typoattack.analysis.metrics import (
    MANY_WORDS, MODEL_DEFENCE_KEYS, OUTCOME_COUNT_COLUMNS, build_leaderboard, count_words, finish_per_word_table,
    get_condition_keys, rank_words,
)
from typoattack.analysis.languages import (
    list_class_language_notes, list_language_blocks, write_per_target_language,
)
from typoattack.analysis.figure_style import fallback_fonts
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.analysis.metrics import PSEUDO_TARGET
from typoattack.analysis.report import (
    CONFUSION_PARQUET, PER_WORD_CSV, EvalTables, add_optional_figure, format_classes_line, write_report, write_tables,
)
from typoattack.analysis.report_page import ReportBlock
from typoattack.analysis.report_sections import list_confusion_blocks
from typoattack.analysis.table_cells import format_leaderboard_markdown, has_several_defences
from typoattack.analysis.tables import ConfusionTables
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.config.types import DataSpec, ModelSpec
from typoattack.constants import CLEAN_WORD, RANDOM_CLASS_WORD
from typoattack.data.class_sets import ClassSet, get_common_class_set
from typoattack.data.fonts import read_run_styles
from typoattack.data.sources import open_image_source
from typoattack.errors import OutputError
from typoattack.engine.rundir import RunInfo, open_run_records
from typoattack.engine.task import ReportPart
from typoattack.files import build_word_slugs, get_label_slug, write_csv, write_text_atomic
from typoattack.records import CONDITION_COLUMNS, DEFENCE_COLUMN, NO_DEFENCE, STYLE_COLUMNS, Condition
from typoattack.progress import NullProgress, ProgressReporter

CONFUSION_MAX_WORDS = 12
"""At most this many words get a confusion heatmap; with more than MANY_WORDS words, the top
confusions table in the report shows this many words (highest mean ASR; the CSV has them all)."""
EXAMPLE_MAX_WORDS = 8
"""With more than MANY_WORDS words, examples.png shows this many words (highest mean ASR)."""
TOP_CONFUSIONS_CSV = "top_confusions.csv"


def collect_examples(records: RecordSet, info: dict[str, Any], per_word: pd.DataFrame, words: list[str] | None = None,
                     images_per_word: int = 1, max_conditions: int = EXAMPLE_MAX_CONDITIONS,
                     where: str = "true") -> list[dict[str, Any]]:
    """Re-render clean and attacked canvases of a few images per word from the records' conditions
    and source images, reading only the records of the shown words (filtered scans).

    Uses the run's first model. Per word: the conditions of `select_example_conditions`, and
    `images_per_word` images drawn by `select_example_images` among those with a clean record and
    one under each of those conditions (images shown for an earlier word are avoided).

    Args:
        records: The run's records.
        info: Its run.json.
        per_word: The run's per-word table (the conditions of each word).
        words: The words to show, in that order (None: every attacked word).
        images_per_word: Images (rows) per word.
        max_conditions: The most conditions (columns).
        where: A SQL condition on the records shown (e.g. one defence).

    Returns:
        Dicts for `plots.plot_examples` (plots.EXAMPLE_KEYS), one per (word, image, condition).

    Raises:
        TypoAttackError: The source images or the model's preprocessing cannot be read here.
    """
    from typoattack.backends.registry import get_backend

    config = info["config"]
    first = config["models"][0]
    spec = ModelSpec(first["name"], first.get("pretrained"), first.get("backend", DEFAULT_BACKEND))
    geometry = get_backend(spec.backend).get_geometry(spec)
    transform, size = geometry.transform, geometry.size
    classes = ClassSet.from_info(info.get("classes"))
    names = classes.names
    source = open_image_source(DataSpec(**config["data"]), len(names), classes.label)
    index = {item.image_id: i for i, item in enumerate(source.items)}
    seed = int(config["seed"])
    styles = read_run_styles(info)  # the config's, and each with the fonts `--font auto` chose
    mine = (f"{where} AND model = {quote_literal(spec.name)} AND pretrained = {quote_literal(spec.pretrained or '')}")
    clean = records.frame(f"SELECT image_id, pred_index FROM records WHERE {mine} AND word = {quote_literal(CLEAN_WORD)}"
                          ).set_index("image_id")["pred_index"]
    style_columns = [c for c in STYLE_COLUMNS if c in per_word.columns]
    model_rows = per_word[(per_word["model"] == spec.name) & (per_word["pretrained"] == (spec.pretrained or ""))]
    varying = list_varying_styles(model_rows)
    if "font" in varying and model_rows.groupby("word")["font"].nunique().max() == 1:
        varying.remove("font")  # each word's own font (`--font auto`): not a condition, so not a column
    in_table = set(model_rows["word"])
    vocab = [str(w["text"]) for w in info.get("vocab", {}).get("words", [])]  # the run's order of words
    present = [w for w in dict.fromkeys([*vocab, *model_rows["word"]]) if w in in_table]
    examples: list[dict[str, Any]] = []
    used: set[str] = set()
    for word in (present if words is None else [w for w in words if w in present]):
        conditions = model_rows.loc[model_rows["word"] == word, CONDITION_COLUMNS[:4] + style_columns].drop_duplicates()
        shown = select_example_conditions(conditions, max_conditions)
        by_condition = [_read_condition(records, mine, shown.iloc[k], style_columns).set_index("image_id")
                        for k in range(len(shown))]
        # Only images with a clean record that the source still holds can be drawn.
        by_condition = [b[b.index.isin(clean.index) & b.index.isin(index.keys())] for b in by_condition]
        candidates = set.intersection(*(set(b.index) for b in by_condition)) if by_condition else set()
        chosen = select_example_images(sorted(candidates), word, seed, images_per_word, used)
        used.update(chosen)
        conditions = [Condition.from_row(shown.iloc[k], styles) for k in range(len(shown))]
        # A pseudo-word's image shows the class it drew (its record's target): masks by (condition, text).
        masks = {(k, c.word): create_attack_mask(c.word, c.fraction, c.placement, c.style, size)
                 for k, c in enumerate(conditions) if c.word != RANDOM_CLASS_WORD}
        for image_id in chosen:
            canvas = np.asarray(transform(source.open_image(index[image_id])), dtype=np.uint8)
            for k, cells in enumerate(by_condition):
                r = cells.loc[image_id]
                c = conditions[k]
                text = names[int(r["target_index"])] if c.word == RANDOM_CLASS_WORD else c.word
                if (k, text) not in masks:
                    masks[k, text] = create_attack_mask(text, c.fraction, c.placement, c.style, size)
                image, _ = apply_attack(canvas, masks[k, text], image_id, seed)
                examples.append({"word": word, "image_id": image_id, "condition": format_condition(shown.iloc[k], varying),
                                 "image": image, "clean_image": canvas,
                                 "true_name": names[int(r["true_index"])],
                                 "clean_pred": names[int(clean[image_id])],
                                 "attacked_pred": names[int(r["pred_index"])],
                                 "target_name": names[int(r["target_index"])]})
    return examples


def _read_condition(records: RecordSet, where: str, condition: pd.Series, style_columns: list[str]) -> pd.DataFrame:
    """image_id, true_index, pred_index and target_index of the records of one condition (the pseudo-word's
    whatever class each image drew)."""
    columns = ["word", "target_index", "fraction", "placement", *style_columns]
    if condition["word"] == RANDOM_CLASS_WORD:
        columns.remove("target_index")
    tests = [f"{quote_name(c)} = ?" for c in columns]
    values = [condition[c].item() if hasattr(condition[c], "item") else condition[c] for c in columns]
    return records.frame(f"SELECT image_id, true_index, pred_index, target_index FROM records WHERE {where} AND "
                         + " AND ".join(tests), values)


def get_run_classes(infos: list[RunInfo]) -> ClassSet:
    """The class set of the runs (run.json `classes`; ImageNet for runs made before class sets).

    Raises:
        OutputError: The runs classify into different class sets (their tables name different classes).
    """
    return get_common_class_set([info.extra.get("classes") for info in infos])


def _write_run_tables(dirs: list[Path], infos: list[RunInfo]) -> list[EvalTables]:
    """Rewrite each run's tables from its records (out of core); each run must have attacked records."""
    tables = []
    for d, info in zip(dirs, infos):
        classes = ClassSet.from_info(info.extra.get("classes"))
        with open_run_records(d, info) as records:
            if records.count(f"word <> {quote_literal(CLEAN_WORD)}") == 0:
                raise OutputError(f"the run in {d} has no attacked records; nothing to report")
            tables.append(write_tables(records, d, classes.names, None if classes.is_imagenet else classes.describe()))
        write_per_target_language(tables[-1].per_word, [info.extra], d)  # only when the words mix languages
    return tables


def _check_distinct_runs(dirs: list[Path], infos: list[RunInfo], tables: list[EvalTables]) -> None:
    """Refuse runs that hold the same model, defence and condition for the same images: two runs of
    one model may differ in their conditions or in their images, never both agree.

    Raises:
        OutputError: Two runs overlap.
    """
    keys = get_condition_keys(list(tables[0].counts.columns)) if tables else []
    for i in range(len(tables)):
        for j in range(i + 1, len(tables)):
            a, b = tables[i].counts, tables[j].counts
            shared = [k for k in keys if k in a.columns and k in b.columns]
            common = a[shared].merge(b[shared], on=shared)
            if common.empty:
                continue
            for model, pretrained, defence in common[MODEL_DEFENCE_KEYS].drop_duplicates().itertuples(index=False):
                clean = (f"word = {quote_literal(CLEAN_WORD)} AND model = {quote_literal(model)} AND "
                         f"pretrained = {quote_literal(pretrained)} AND defence = {quote_literal(defence)}")
                with open_run_records([dirs[i], dirs[j]], [infos[i], infos[j]]) as both:
                    n = both.scalar(f"SELECT count(*) FROM (SELECT image_id FROM records WHERE run = 0 AND {clean} "
                                    f"INTERSECT SELECT image_id FROM records WHERE run = 1 AND {clean})")
                if n:
                    raise OutputError("two of the runs hold the same model and condition; report runs of different "
                                      "models or settings")


def _combine_per_word(tables: list[EvalTables], class_names: tuple[str, ...]) -> pd.DataFrame:
    """The per-word table over several runs: their outcome counts added per condition."""
    if len(tables) == 1:
        return tables[0].per_word
    counts = pd.concat([t.counts for t in tables], ignore_index=True)  # small: one row per condition
    keys = get_condition_keys(list(counts.columns))
    summed = counts.groupby(keys, sort=True, dropna=False)[OUTCOME_COUNT_COLUMNS].sum().reset_index()
    return finish_per_word_table(summed, class_names)


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


def write_confusions(confusion_files: list[Path], per_word: pd.DataFrame, out: Path,
                     class_names: tuple[str, ...] | None = None) -> list[ReportBlock]:
    """Write top_confusions.csv (every model, defence and word; class names beside the indices) and
    the heatmaps of the words that qualify (`metrics.select_heatmap_words`, at most
    CONFUSION_MAX_WORDS, of the shown defence); return the report's "Top confusions" section.

    Both come from aggregate queries over the runs' confusion.parquet files
    (`tables.query_top_confusions`, `tables.query_heatmap_words`); a heatmap reads the cells of its
    word only. Memory does not grow with the vocabulary or the images.

    The heatmap of a word is `confusion_<slug>.png`, with the slug of `files.build_word_slugs` over
    all the table's words (sorted), so a word's file name does not depend on which words qualify.
    """
    class_names = class_names if class_names is not None else ClassSet.from_info(None).names
    defence = get_shown_defence(per_word)
    with ConfusionTables(confusion_files) as tables:
        every = tables.top_confusions()
        heatmap_words = tables.heatmap_words(defence, CONFUSION_MAX_WORDS)
        word_cells = {w: tables.cells(f"defence = {quote_literal(defence)} AND word IN "
                                      f"({quote_literal(CLEAN_WORD)}, {quote_literal(w)})") for w in heatmap_words}
    top = every[every[DEFENCE_COLUMN] == defence].reset_index(drop=True)
    names = {"true_name": every["true_index"], "pred_name": every["pred_index"]}
    for column, indices in names.items():
        every.insert(every.columns.get_loc(str(indices.name)) + 1, column,
                     [class_names[int(i)] for i in indices])
    write_csv(every, out / TOP_CONFUSIONS_CSV)
    notes = []
    if has_several_defences(per_word):
        per_word = per_word[per_word[DEFENCE_COLUMN] == defence]
        notes.append(f"Defence {defence} only.")
    chosen = select_figure_words(per_word, CONFUSION_MAX_WORDS)
    if chosen is not None:
        top = top[top["word"].isin(chosen)]
        notes.append(f"The {len(chosen)} words with the highest mean ASR only.")
    targets = {str(w): int(t) for w, t in zip(per_word["word"], per_word["target_index"]) if t != PSEUDO_TARGET}
    slugs = build_word_slugs(sorted(set(map(str, per_word["word"]))))
    heatmaps: dict[str, Path] = {}
    for word in sorted(heatmap_words):
        heatmaps[word] = out / f"confusion_{slugs[word]}.png"
        plots.plot_confusion(word_cells[word], word, class_names, heatmaps[word], target_index=targets.get(word))
    return list_confusion_blocks(top, class_names, targets, heatmaps, notes)


def write_synthetic_report(dirs: list[Path], infos: list[RunInfo], out: Path, stem: str, notes: list[str],
                           progress: ProgressReporter | None = None, examples_per_word: int = 1) -> ReportPart:
    """`_write_synthetic_report`, its figures falling back to the fonts `--font auto` chose (run.json
    `fonts`) for words the default font cannot draw."""
    chosen = [d["font"] for info in infos for d in (info.extra.get("fonts") or {}).get("words", [])
              if Path(d["font"]).is_file()]
    with fallback_fonts(chosen):
        return _write_synthetic_report(dirs, infos, out, stem, notes, progress, examples_per_word)


def _write_synthetic_report(dirs: list[Path], infos: list[RunInfo], out: Path, stem: str, notes: list[str],
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
    classes = get_run_classes(infos)
    tables = _write_run_tables(dirs, infos)
    _check_distinct_runs(dirs, infos, tables)
    out.mkdir(parents=True, exist_ok=True)
    per_word = _combine_per_word(tables, classes.names)
    if not classes.is_imagenet:
        notes = [f"{format_classes_line(classes.describe())}: the labels, the classifier and the targets are this "
                 f"class set's ({classes.source}).", *notes]
    figures, figure_notes = _plot_figures(per_word, out)
    raw_infos = [i.to_dict() for i in infos]
    languages = write_per_target_language(per_word, raw_infos, out)  # words in several languages: side by side
    notes = [*notes, *list_class_language_notes(raw_infos)]
    first = tables[0].per_word
    shown = f"defence = {quote_literal(get_shown_defence(first))}"

    def examples() -> list[dict[str, Any]]:
        with open_run_records(dirs[0], infos[0]) as records:
            return collect_examples(records, raw_infos[0], first[first[DEFENCE_COLUMN] == get_shown_defence(first)],
                                    select_figure_words(per_word, EXAMPLE_MAX_WORDS), examples_per_word, where=shown)

    confusions = write_confusions([d / CONFUSION_PARQUET for d in dirs], per_word, out, classes.names)
    add_optional_figure(figures, out / "examples.png", examples, plots.plot_examples, progress.log,
                        "the source images")
    leaderboard = build_leaderboard(per_word)
    write_csv(leaderboard, out / "leaderboard.csv")
    write_text_atomic(out / "leaderboard.md", format_leaderboard_markdown(leaderboard))
    write_csv(per_word, out / PER_WORD_CSV)
    _, html_path = write_report(out, per_word, leaderboard, figures, raw_infos, notes=[*notes, *figure_notes],
                                stem=stem, sections=[*confusions, *list_language_blocks(languages)])
    return ReportPart(html_path, per_word)
