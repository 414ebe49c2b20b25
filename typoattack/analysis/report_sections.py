"""The eval report's sections as `ReportBlock`s (no model code): the per-word results (every row,
or the top and bottom words by ASR for a large vocabulary), the top confusions with their heatmap
files, and one section per run (its facts, config and model warnings, also on every task's page).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from typoattack.analysis.labels import (
    format_percent, format_style, get_model_label, is_missing, list_varying_styles,
)
from typoattack.analysis.metrics import (
    HEATMAP_MIN_IMAGES, HEATMAP_MIN_SHARE, MANY_WORDS, PER_WORD_COLUMNS, RANKING_SIZE, TOP_CONFUSIONS_PER_WORD,
    build_asr_ranking, count_words, with_defence,
)
from typoattack.analysis.report_page import ReportBlock, build_table_block
from typoattack.analysis.table_cells import build_per_word_cells, has_several_defences
from typoattack.config.types import get_model_warnings


NO_CONDITIONS = "No attacked conditions."
_PER_WORD_NOTE = ("One table per model{defence}, one row per word and condition (fraction, placement). The same rows, "
                  "with model and weights on each, are in [per_word.csv](per_word.csv) beside this page.")
_PER_WORD_RANKED_NOTE = (
    "The vocabulary has {n_words} words (more than {many}): per model{defence} and condition (fraction, placement), "
    "the {size} words with the highest and the {size} with the lowest attack success rate (rank 1: highest; ties "
    "by word, then target class), with the 95% Wilson interval. Every word's rows are in "
    "[per_word.csv](per_word.csv) beside this page.")


def _per_word_display(per_word: pd.DataFrame) -> pd.DataFrame:
    """The per-word table prepared for the report: text cells as strings (missing as ''), and
    varying style columns appended to the placement (`paper8 · fill=red`) so rows that differ only
    by style stay distinguishable."""
    shown = per_word.copy()
    styles = list_varying_styles(per_word)
    if styles:
        shown["placement"] = [
            f"{p} · {format_style(dict(zip(styles, vals)), styles)}"
            for p, *vals in zip(shown["placement"], *(shown[c] for c in styles))
        ]
    for col in ("model", "pretrained", "word", "target_name", "placement"):
        shown[col] = ["" if is_missing(v) else str(v) for v in shown[col]]
    return shown[PER_WORD_COLUMNS]


PER_WORD_GROUP_KEYS = ["model", "pretrained", "defence"]
"""The per-word section of the report has one table per value of these columns."""


def list_per_word_blocks(per_word: pd.DataFrame) -> list[ReportBlock]:
    """The report's "Per-word results" section: a note, then per (model, pretrained, defence) an h3
    heading (`model/pretrained`, with ` — defence X` when the table holds several defences) and its
    table, without the model, pretrained and defence columns.

    Up to MANY_WORDS (word, target) pairs the tables hold every row (`build_per_word_group_cells`);
    above, per model, defence and condition only the RANKING_SIZE highest and lowest words by ASR
    (`build_per_word_ranking_cells`), so the page does not grow with the vocabulary; the note links
    per_word.csv for the rest.
    """
    blocks = [ReportBlock("h2", "Per-word results")]
    if per_word.empty:
        return blocks + [ReportBlock("p", NO_CONDITIONS)]
    shown = _per_word_display(with_defence(per_word))
    several = has_several_defences(shown)
    defence = " and defence" if several else ""
    n_words = count_words(per_word)
    ranked = n_words > MANY_WORDS
    note = (_PER_WORD_RANKED_NOTE.format(n_words=n_words, many=MANY_WORDS, size=RANKING_SIZE, defence=defence)
            if ranked else _PER_WORD_NOTE.format(defence=defence))
    blocks.append(ReportBlock("p", note))
    for (model, pretrained, defence_name), rows in shown.groupby(PER_WORD_GROUP_KEYS, sort=False):
        title = get_model_label(model, pretrained) + (f" — defence {defence_name}" if several else "")
        cells = build_per_word_ranking_cells(rows) if ranked else build_per_word_group_cells(rows)
        blocks += [ReportBlock("h3", title), build_table_block(*cells, "per-word")]
    return blocks


def build_per_word_group_cells(rows: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the per-word rows of one model and defence: the cells of
    `build_per_word_cells` without the model, pretrained and defence columns."""
    header, cells = build_per_word_cells(rows.drop(columns="defence", errors="ignore"))
    return header[2:], [row[2:] for row in cells]


def build_per_word_ranking_cells(rows: pd.DataFrame, n: int = RANKING_SIZE) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the `n` highest and `n` lowest words by ASR in each condition of
    the per-word rows of one model and defence (`metrics.build_asr_ranking`), in rank order: fraction,
    placement, rank (`r / n_words`), then the columns of `build_per_word_group_cells`."""
    keys = ["model", "pretrained", "placement", "fraction"]
    ranking = build_asr_ranking(rows[PER_WORD_COLUMNS].drop(columns="defence"), n)
    chosen = ranking[[*keys, "word", "target_index", "rank", "n_words"]].merge(
        rows, on=[*keys, "word", "target_index"], how="left", validate="one_to_one")
    header, cells = build_per_word_group_cells(chosen)
    first = [header.index("fraction"), header.index("placement")]
    rest = [i for i in range(len(header)) if i not in first]
    ranks = [f"{r} / {k}" for r, k in zip(chosen["rank"], chosen["n_words"])]
    header = [header[first[0]], header[first[1]], "rank"] + [header[i] for i in rest]
    cells = [[row[first[0]], row[first[1]], rank] + [row[i] for i in rest] for row, rank in zip(cells, ranks)]
    return header, cells


TOP_CONFUSION_HEADER = ["word → target", "fraction", "placement", "true class → predicted class", "n", "share",
                        "n clean", "into class", "into class clean"]
_TOP_CONFUSION_NOTE = (
    "The most frequent confusions of each word (true class → predicted class, wrong predictions only): in each "
    "condition the cell with the most images (ties: the predicted class that gained the most images over the clean "
    "images, then class index), and of these the {n} with the most images, so each row of a word is another "
    "condition. n: the cell's images; share: of the condition's images; n clean: the same cell on the clean images; "
    "into class: all images of other true classes predicted as that class under the condition; into class clean: "
    "the same on the clean images. Every word's rows are in top_confusions.csv.")
_HEATMAP_NOTE = (
    "A heatmap (where the attack sent the images: the clean images and each condition against the classes that "
    "gained the most) is drawn for a word only when, in one of its conditions, one class gained at least "
    "{images} images and {share:.0%} of the condition's images over the clean images; otherwise it would show single "
    "images scattered over classes. The heatmap of a word is the file `confusion_<word>.png` beside this page, the word "
    "spelled with lower-case letters, digits and hyphens only: accents are dropped (`café` → cafe), symbols are "
    "named (`$$$` → confusion_dollar-dollar-dollar.png, `<b>&` → confusion_lt-b-gt-and.png), any other character "
    "is written as u and its code point (`中` → u4e2d), and a word whose name is taken by another (`a b` and `A-B`) "
    "gets -2, -3, …. The table below lists each word beside its file.")


def format_class_name(index: Any, class_names: Sequence[str]) -> str:
    """The class name, with its index when another class has the same name (ImageNet's two cranes)."""
    name = str(class_names[int(index)])
    return f"{name} ({int(index)})" if sum(1 for n in class_names if n == name) > 1 else name


def build_top_confusion_cells(top: pd.DataFrame, class_names: Sequence[str],
                              targets: dict[str, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of `metrics.build_top_confusions` (TOP_CONFUSION_HEADER; a model
    column when the table holds several models, a defence column with several defences; varying
    style columns appended to the placement).

    Args:
        top: The output of `build_top_confusions`.
        class_names: Class names indexed by class index.
        targets: word -> target class index, shown beside the word.
    """
    styles = list_varying_styles(top)
    targets = targets or {}
    several_models = top[["model", "pretrained"]].astype(str).drop_duplicates().shape[0] > 1
    several_defences = has_several_defences(top)
    header = list(TOP_CONFUSION_HEADER)
    cells = []
    for r in top.to_dict("records"):
        word = f"`{r['word']}`"
        if r["word"] in targets:
            word += f" → {format_class_name(targets[r['word']], class_names)}"
        placement = str(r["placement"]) + (f" · {format_style(r, styles)}" if styles else "")
        row = [word, f"{r['fraction']:g}", placement,
               f"{format_class_name(r['true_index'], class_names)} → {format_class_name(r['pred_index'], class_names)}",
               str(int(r["count"])), format_percent(r["share"]), str(int(r["clean_count"])), str(int(r["into_count"])),
               str(int(r["into_clean"]))]
        if several_defences:
            row.insert(1, str(r["defence"]))
        if several_models:
            row.insert(1, get_model_label(r["model"], r["pretrained"]))
        cells.append(row)
    if several_defences:
        header.insert(1, "defence")
    if several_models:
        header.insert(1, "model")
    return header, cells


def list_confusion_blocks(top: pd.DataFrame, class_names: Sequence[str], targets: dict[str, int],
                          heatmaps: dict[str, Path], notes: Sequence[str] = ()) -> list[ReportBlock]:
    """The report's "Top confusions" section: the rule, the table, the words with their heatmap
    files, and the heatmaps.

    Args:
        top: The output of `build_top_confusions` (the rows to show).
        class_names: Class names indexed by class index.
        targets: word -> target class index.
        heatmaps: word -> heatmap PNG, for the words that got one (in the order shown).
        notes: Extra paragraphs (e.g. which words and defence the table shows).
    """
    blocks = [ReportBlock("h2", "Top confusions"), ReportBlock("p", _TOP_CONFUSION_NOTE.format(n=TOP_CONFUSIONS_PER_WORD))]
    blocks += [ReportBlock("p", n) for n in notes]
    blocks.append(ReportBlock("p", "No word has a wrong prediction.") if top.empty
                  else build_table_block(*build_top_confusion_cells(top, class_names, targets), "confusions"))
    blocks.append(ReportBlock("p", _HEATMAP_NOTE.format(images=HEATMAP_MIN_IMAGES, share=HEATMAP_MIN_SHARE)))
    words = list(dict.fromkeys(str(w) for w in top["word"])) if not top.empty else []
    words += [w for w in heatmaps if w not in words]
    if words:
        rows = [[f"`{w}`" + (f" → {format_class_name(targets[w], class_names)}" if w in targets else ""),
                 heatmaps[w].name if w in heatmaps else "— (no class gained enough)"] for w in words]
        blocks.append(build_table_block(["word → target", "heatmap file"], rows, "heatmaps"))
    blocks += [ReportBlock("figure", path=p) for p in heatmaps.values()]
    return blocks


def list_model_warnings(per_word: pd.DataFrame, run_infos: Sequence[dict]) -> list[str]:
    """Warnings about the models in the table or the run infos (random weights, the demo model)."""
    found: dict[tuple[str, str | None], None] = {}
    if {"model", "pretrained"} <= set(per_word.columns):
        for m, p in per_word[["model", "pretrained"]].drop_duplicates().itertuples(index=False):
            found[(str(m), None if is_missing(p) or p == "" else str(p))] = None
    for info in run_infos:
        for m, p in _run_models(info):
            found[(m, p or None)] = None
    return get_model_warnings(found)


def _run_models(info: dict) -> list[tuple[str, str]]:
    """(name, pretrained) of every model a run.json names (config and per-model entries)."""
    out: list[tuple[str, str]] = []
    config = info.get("config") or {}
    entries = list(config.get("models") or []) + list(info.get("models") or [])
    if config.get("model"):
        entries.append({"name": config.get("model"), "pretrained": config.get("pretrained")})
    for e in entries:
        if isinstance(e, dict):
            out.append((str(e.get("name", "?")), "" if e.get("pretrained") is None else str(e.get("pretrained"))))
    return list(dict.fromkeys(out))


def _run_facts(info: dict) -> list[tuple[str, str]]:
    """(label, value) lines summarising one run.json."""
    facts: list[tuple[str, str]] = []
    config = info.get("config") or {}
    if config.get("out"):
        facts.append(("output folder", str(config["out"])))
    facts.append(("complete", "yes" if info.get("complete") else "no"))
    facts.append(("device", str(info.get("device", "unknown"))))
    if "n_items" in info:
        facts.append(("items selected", str(info["n_items"])))
    for m in info.get("models") or []:
        if isinstance(m, dict):
            label = get_model_label(m.get("name", "?"), m.get("pretrained"))
            n = m.get("n_images", "?")
            skipped = m.get("n_skipped")
            facts.append((f"images evaluated ({label})", f"{n}" + (f" ({skipped} skipped)" if skipped else "")))
    if config.get("seed") is not None:
        facts.append(("seed", str(config["seed"])))
    versions = info.get("versions") or {}
    if versions:
        facts.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items())))
    for key in ("started", "finished"):
        if info.get(key):
            facts.append((key, str(info[key])))
    return facts


def _run_title(info: dict, index: int) -> str:
    """A heading for one run."""
    config = info.get("config") or {}
    names = [get_model_label(m, p) for m, p in _run_models(info)]
    where = f" ({config['out']})" if config.get("out") else ""
    return f"Run {index}: {', '.join(names) or 'unknown model'}{where}"


def list_run_blocks(info: dict, index: int) -> list[ReportBlock]:
    """Heading, untrained warning, facts and config of one run."""
    blocks = [ReportBlock("h3", _run_title(info, index))]
    blocks.extend(ReportBlock("warn", w) for w in get_model_warnings((m, p or None) for m, p in _run_models(info)))
    blocks.append(ReportBlock("facts", cells=tuple((k, v) for k, v in _run_facts(info))))
    blocks.append(ReportBlock("config", json.dumps(info.get("config") or {}, indent=2, sort_keys=True, default=str)))
    return blocks
