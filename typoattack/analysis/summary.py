"""The end-of-run summary of synthetic attacks for the terminal: a few rows that fit 80 columns,
computed from the per-word table alone (the full table is per_word.md, or `--table full`)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from typoattack.analysis.labels import format_percent, format_style, get_model_label, list_varying_styles
from typoattack.analysis.metrics import rank_words
from typoattack.analysis.table_cells import has_several_defences

TOP_WORDS = 3
"""Words named with the highest (and the lowest) mean ASR."""


def _condition_label(row: dict[str, Any], styles: list[str]) -> str:
    label = str(row["placement"])
    return f"{label} · {format_style(row, styles)}" if styles else label


def _format_words(words: list[tuple[str, float]]) -> str:
    return ", ".join(f"{w} {format_percent(a)}" for w, a in words)


def build_summary(per_word: pd.DataFrame, top: int = TOP_WORDS) -> list[RenderableType]:
    """Per model (and defence): clean top-1, then per fraction and placement the attacked top-1, the
    mean ASR over the words and the word with the highest ASR ("none" when no word succeeded on any
    image); then the words with the highest and the lowest mean ASR over all conditions.

    Args:
        per_word: The per-word table (`analysis.metrics.build_per_word_table`).
        top: How many words to name at each end.

    Returns:
        Renderables for a rich console, each at most 80 columns wide.
    """
    if per_word.empty:
        return [Text("No attacked condition.")]
    several = has_several_defences(per_word)
    keys = ["model", "pretrained", "defence"] if several else ["model", "pretrained"]
    styles = list_varying_styles(per_word)
    condition_keys = ["fraction", "placement", *styles]
    out: list[RenderableType] = []
    for key, rows in per_word.groupby(keys, sort=False, dropna=False):
        model = get_model_label(key[0], key[1]) + (f" (defence {key[2]})" if several else "")
        n = int(rows["n_images"].max())
        table = Table(title=Text(f"{model}: clean top-1 {format_percent(rows['clean_top1'].iloc[0])} on {n} images",
                                 style="bold"),
                      box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
        for name, justify in (("fraction", "right"), ("placement", "left"), ("attacked top-1", "right"),
                              ("mean ASR", "right"), ("highest ASR", "left")):
            table.add_column(name, justify=justify, overflow="ellipsis", no_wrap=True,
                             max_width=28 if name in ("highest ASR", "placement") else None)
        for ckey, group in rows.groupby(condition_keys, sort=True, dropna=False):
            row = dict(zip(condition_keys, ckey if isinstance(ckey, tuple) else (ckey,)))
            best = group.sort_values(["asr", "word"], ascending=[False, True], kind="stable").iloc[0]
            table.add_row(f"{row['fraction']:g}", _condition_label(row, styles),
                          format_percent(group["attacked_top1"].mean()), format_percent(group["asr"].mean()),
                          f"{best['word']} {format_percent(best['asr'])}" if best["asr"] > 0 else "none")
        out.append(table)
        means = rows.groupby("word", sort=True)["asr"].mean()
        ranked = [(w, float(means[w])) for w in rank_words(rows)]
        if len(ranked) > 2 * top:
            lines = [f"Highest mean ASR: {_format_words(ranked[:top])}",
                     f"Lowest mean ASR:  {_format_words(ranked[-top:])}"]
        else:
            lines = [f"Mean ASR by word: {_format_words(ranked)}"]
        out.append(Group(*(Text(line, overflow="ellipsis", no_wrap=True) for line in lines)))
    return out
