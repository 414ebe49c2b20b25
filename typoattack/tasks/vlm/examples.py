"""The vlm report's "Examples" section: a few images of the first model's words with the highest ASR,
found with filtered queries over the records (never the whole records), re-rendered as the run drew
them (vlm_examples.png), with the questions asked and each answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from typoattack.analysis.example_plots import plot_examples
from typoattack.analysis.examples import (
    EXAMPLE_MAX_CONDITIONS, format_condition, select_example_conditions, select_example_images,
)
from typoattack.analysis.labels import is_missing, list_varying_styles
from typoattack.analysis.query import RecordSet, quote_literal, quote_name
from typoattack.analysis.report import add_optional_figure
from typoattack.analysis.report_page import ReportBlock, build_table_block
from typoattack.attack.render import apply_attack
from typoattack.attack.solver import create_attack_mask
from typoattack.backends.registry import get_chat_backend
from typoattack.config.types import DataSpec
from typoattack.constants import CLEAN_WORD, NUM_CLASSES, RANDOM_CLASS_WORD
from typoattack.data.fonts import read_run_styles
from typoattack.data.sources import open_image_source
from typoattack.errors import DataError
from typoattack.records import STYLE_COLUMNS, Condition
from typoattack.tasks.vlm.answers import Choice, Scoring
from typoattack.tasks.vlm.config import VLM_BACKEND
from typoattack.tasks.vlm.prompts import OptionOrder, PromptTemplate, build_question


EXAMPLES_FIGURE = "vlm_examples.png"
EXAMPLE_WORDS = 4
"""vlm_examples.png shows this many words (rows): the first model's words with the highest ASR."""
EXAMPLE_POOL = 10_000
"""The examples' image of a word is drawn among at most this many candidate image ids (the first by id)."""


@dataclass
class ExampleQuestion:
    """The records of one image shown in vlm_examples.png: its clean control and its attacked records under the
    shown conditions (one model, scoring, prompt and option order).

    Attributes:
        word: The attack word.
        image_id: The image.
        clean: The clean control record.
        attacked: Per shown condition (a row of its columns), the attacked record.
    """

    word: str
    image_id: str
    clean: dict[str, Any]
    attacked: list[tuple[dict[str, Any], dict[str, Any]]]


def select_example_image(candidates: Sequence[str], word: str, seed: int, used: set[str]) -> str | None:
    """The image shown for `word`, drawn as eval's examples.png draws it (`select_example_images`, one image)."""
    chosen = select_example_images(candidates, word, seed, 1, used)
    return chosen[0] if chosen else None


def _pick_question(records: RecordSet, info: dict[str, Any], run: int,
                   model: str) -> tuple[str, str, bool, str] | None:
    """(scoring, prompt_id, safe_prompt, order) of the examples: the run's first plain prompt (else its first),
    object-first when asked; None when the model has no records in the run."""
    asked = records.frame('SELECT DISTINCT scoring, prompt_id, safe_prompt, "order" FROM records WHERE run = ? '
                          "AND model = ?", [run, model])
    if asked.empty:
        return None
    order_of_prompts = [str(p["id"]) for p in info.get("prompts", [])]
    asked["_prompt"] = [order_of_prompts.index(p) if p in order_of_prompts else len(order_of_prompts)
                        for p in asked["prompt_id"]]
    asked["_order"] = asked["order"] != OptionOrder.OBJECT_FIRST.value
    first = asked.sort_values(["safe_prompt", "_prompt", "prompt_id", "_order", "scoring"], kind="stable").iloc[0]
    return str(first["scoring"]), str(first["prompt_id"]), bool(first["safe_prompt"]), str(first["order"])


def select_example_questions(records: RecordSet, info: dict[str, Any], ranking: pd.DataFrame, run: int = 0,
                             n_words: int = EXAMPLE_WORDS, max_conditions: int = EXAMPLE_MAX_CONDITIONS
                             ) -> list[ExampleQuestion]:
    """The records vlm_examples.png shows, found with filtered queries (never the whole records).

    The run's first model, its first plain prompt and option order object-first (when asked); its `n_words`
    words with the highest ASR (`rank_attack_words`); per word, the conditions of `select_example_conditions`, and
    one image drawn by `select_example_image` (seeded by the run's seed and the word) among the first EXAMPLE_POOL
    image ids (by id) with a clean control and a record under each shown condition.

    Args:
        records: Synthetic-input records (one or several runs).
        info: run.json of the run `run` (its position in `records`).
        ranking: `rank_attack_words` of the records.
        run: Which run of `records` the examples come from.
        n_words: Words (rows of the figure).
        max_conditions: Conditions (columns beside the clean image).
    """
    config = info.get("config") or {}
    models = config.get("models") or []
    if not models:
        return []
    model = str(models[0]["name"])
    picked = _pick_question(records, info, run, model)
    if picked is None:
        return []
    scoring, prompt_id, _, order = picked
    mine = ranking[(ranking["model"] == model) & (ranking["scoring"] == scoring) & ranking["rate"].notna()]
    words = list(dict.fromkeys(zip(mine["word"], mine["target_index"])))[:n_words]
    base = 'run = ? AND model = ? AND scoring = ? AND prompt_id = ? AND "order" = ? AND target_index = ?'
    condition_columns = ["word", "target_index", "fraction", "placement", *STYLE_COLUMNS]
    clean = quote_literal(CLEAN_WORD)
    seed = int(config.get("seed", 0))
    used: set[str] = set()
    questions = []
    for word, target in words:
        params = [run, model, scoring, prompt_id, order, int(target)]
        conditions = records.frame(f"SELECT DISTINCT {_names(condition_columns)} FROM records WHERE {base} "
                                   "AND word = ?",
                                   [*params, word])
        shown = select_example_conditions(conditions, max_conditions)
        if shown.empty:
            continue
        tests, values = [], []
        for row in shown.to_dict("records"):
            tests.append("(" + " AND ".join(f"{quote_name(c)} IS NOT DISTINCT FROM ?" for c in condition_columns[2:])
                         + ")")
            values += [_plain(row[c]) for c in condition_columns[2:]]
        candidates = records.frame(
            f"SELECT image_id FROM records WHERE {base} AND (word = {clean} OR (word = ? AND ({' OR '.join(tests)}))) "
            f"GROUP BY image_id HAVING count(*) FILTER (WHERE word = {clean}) = 1 "
            f"AND count(*) FILTER (WHERE word <> {clean}) = {len(shown)} ORDER BY image_id LIMIT {EXAMPLE_POOL}",
            [*params, word, *values])
        chosen = select_example_image(list(candidates["image_id"]), word, seed, used)
        for image_id in [chosen] if chosen is not None else []:
            used.add(image_id)
            rows = records.frame(f"SELECT * FROM records WHERE {base} AND image_id = ? AND word IN ({clean}, ?)",
                                 [*params, image_id, word]).to_dict("records")
            attacked = []
            for condition in shown.to_dict("records"):
                match = [r for r in rows if r["word"] == word and all(_same(r[c], condition[c])
                                                                     for c in condition_columns[2:])]
                attacked.append((condition, match[0]))
            questions.append(ExampleQuestion(word, image_id, next(r for r in rows if r["word"] == CLEAN_WORD),
                                             attacked))
    return questions


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value DuckDB binds."""
    return value.item() if hasattr(value, "item") else value


def _same(a: Any, b: Any) -> bool:
    return (is_missing(a) and is_missing(b)) or a == b


def _chosen_label(record: dict[str, Any]) -> str:
    """The option a record's answer chose, as its text (`unclear` when the answer could not be read)."""
    if record["choice"] == Choice.OBJECT.value:
        return str(record["object_label"])
    if record["choice"] == Choice.ATTACK.value:
        return str(record["attack_label"])
    return "unclear"


def _answer_cells(record: dict[str, Any]) -> list[str]:
    """(the answer as its option letter and text, its score) of one record."""
    letters = {"object": "a", "attack": "b"} if record["order"] == OptionOrder.OBJECT_FIRST.value else \
        {"object": "b", "attack": "a"}
    choice = str(record["choice"])
    answer = f"({letters[choice]}) {_chosen_label(record)}" if choice in letters else "unclear"
    if record["scoring"] == Scoring.GENERATE.value:
        return [answer, "“" + " ".join(str(record["answer"]).split()) + "”"]
    return [answer, f"log p object {float(record['logp_object']):.2f}, attack {float(record['logp_attack']):.2f}"]


def _question_text(record: dict[str, Any], info: dict[str, Any]) -> str:
    prompts = {str(p["id"]): p for p in info.get("prompts", [])}
    prompt = prompts.get(str(record["prompt_id"]))
    if prompt is None:
        return f"prompt {record['prompt_id']}"
    template = PromptTemplate(str(prompt["id"]), str(prompt["text"]), bool(prompt.get("safe", False)))
    text = build_question(template, str(record["object_label"]), str(record["attack_label"]),
                          OptionOrder(record["order"]))
    return text.replace("\n", " / ")


def render_examples(questions: Sequence[ExampleQuestion], info: dict[str, Any]) -> list[dict[str, Any]]:
    """Re-render the canvases of the example questions as the run drew them (the source image through the
    canvas transform of the model's canvas size, the attack's mask drawn on it) for `plots.plot_examples`: one
    dict per (word, image, condition), captioned with the option the model chose.

    Raises:
        TypoAttackError: The source images (or an image of the records) cannot be read here.
    """
    config = info["config"]
    models = info.get("models") or [{}]
    if not models[0].get("canvas_size"):
        raise DataError("run.json names no canvas size of the first model")
    size = tuple(int(s) for s in models[0]["canvas_size"])
    # The task's canvas (`task.get_canvas_geometry`): open_clip's default eval transform at the canvas size.
    transform = get_chat_backend(VLM_BACKEND).get_canvas_geometry(size[0]).transform
    classes = info.get("classes") or {}
    source = open_image_source(DataSpec(**config["data"]), int(classes.get("n_classes", NUM_CLASSES)),
                               str(classes.get("label", "imagenet")))
    index = {item.image_id: i for i, item in enumerate(source.items)}
    seed = int(config["seed"])
    styles = read_run_styles(info)  # the config's, and each with the fonts `--font auto` chose
    varying = list_varying_styles(pd.DataFrame([c for q in questions for c, _ in q.attacked]))
    examples = []
    for q in questions:
        if q.image_id not in index:
            raise DataError(f"image {q.image_id} is not in {source.description}")
        try:
            canvas = np.asarray(transform(source.open_image(index[q.image_id])), dtype=np.uint8)
        except OSError as e:
            raise DataError(f"image {q.image_id}: {e}") from None
        for condition, record in q.attacked:
            c = Condition.from_row(condition, styles)
            # The pseudo-word `random-class` drew a class per image: its text is the attack option's.
            text = str(record["attack_label"]) if c.word == RANDOM_CLASS_WORD else c.word
            image, _ = apply_attack(canvas, create_attack_mask(text, c.fraction, c.placement, c.style, size),
                                    q.image_id, seed)
            examples.append({"word": q.word, "image_id": q.image_id, "condition": format_condition(condition, varying),
                             "image": image, "clean_image": canvas, "true_name": str(record["object_label"]),
                             "clean_pred": _chosen_label(q.clean), "attacked_pred": _chosen_label(record),
                             "target_name": str(record["attack_label"])})
    return examples


def build_example_table(questions: Sequence[ExampleQuestion], info: dict[str, Any]) -> ReportBlock:
    """The questions of vlm_examples.png and each answer: per image, its clean canvas then each condition."""
    varying = list_varying_styles(pd.DataFrame([c for q in questions for c, _ in q.attacked]))
    generate = any(q.clean["scoring"] == Scoring.GENERATE.value for q in questions)
    header = ["word → target", "image", "canvas", "question", "answer", "generated text" if generate else "score"]
    cells = []
    for q in questions:
        cells.append([f"{q.word} → {q.clean['attack_label']}", q.image_id, "clean", _question_text(q.clean, info),
                      *_answer_cells(q.clean)])
        cells += [["", "", format_condition(c, varying), "", *_answer_cells(r)] for c, r in q.attacked]
    return build_table_block(header, cells, "examples")


def write_examples(records: RecordSet, info: dict[str, Any], ranking: pd.DataFrame, out: Path,
                   log: Callable[[str], None]) -> list[ReportBlock]:
    """The examples section: vlm_examples.png (skipped with a note when the source images cannot be read here)
    and the table of its questions and answers; nothing when no image has a clean control and an attacked record."""
    questions = select_example_questions(records, info, ranking)
    if not questions:
        return []
    first = questions[0].clean
    figures: list[Path] = []
    path = out / EXAMPLES_FIGURE
    add_optional_figure(figures, path, lambda: render_examples(questions, info), plot_examples, log,
                        "the source images")
    prompt = f"prompt {first['prompt_id']}" + (" (safe)" if bool(first["safe_prompt"]) else "")
    blocks = [ReportBlock("h2", "Examples"),
              ReportBlock("p", f"A few images of {first['model']} ({first['scoring']} scoring, {prompt}, option order "
                               f"{first['order']}): the clean canvas and the canvas under up to "
                               f"{EXAMPLE_MAX_CONDITIONS} conditions of each word with the highest ASR, re-rendered "
                               "from the source images as the run drew them, each captioned with the option the model "
                               "chose (green ✓: the word's target, where the clean canvas was not answered so). The "
                               "table gives the question asked and each answer with its score.")]
    if figures:
        blocks.append(ReportBlock("figure", path=path))
    else:
        path.unlink(missing_ok=True)
        blocks.append(ReportBlock("p", f"{EXAMPLES_FIGURE} skipped: the source images of the run cannot be read here "
                                       f"({(info.get('config') or {}).get('data', {}).get('source', '?')})."))
    blocks.append(build_example_table(questions, info))
    return blocks


def _names(columns: Sequence[str]) -> str:
    return ", ".join(quote_name(c) for c in columns)
