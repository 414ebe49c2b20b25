"""The record schema: one row of records.parquet per (model, defence, image, condition), declared here once.

A `Condition` is what an attacked canvas varies in (word, target, fraction, placement and the
text style); `to_columns` / `from_row` convert it to and from the condition columns of a record.
Every table, figure, example picker and the runner read and write conditions through them, so a
new dimension of the sweep (a defence, a dataset variant) is added here: a field of `Condition`,
its column in `CONDITION_COLUMNS` and `CONDITION_DTYPES`, and its value in `CLEAN_COLUMNS`.

Nothing here imports model code.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from typoattack.config.defences import NO_DEFENCE
from typoattack.config.types import ModelSpec, Placement, RenderStyle, Vocabulary, format_color
from typoattack.constants import CLEAN_PLACEMENT, CLEAN_WORD, FONTS_DIR

IMAGE_COLUMNS = ["image_id", "true_index"]
MODEL_COLUMNS = ["model", "pretrained"]
# The defence a record was evaluated under (`none` when undefended): see typoattack.defences.
DEFENCE_COLUMN = "defence"
# Text-style columns of a condition: tables treat them as part of the condition when present.
STYLE_COLUMNS = ["font", "fill", "outline", "outline_width", "opacity"]
CONDITION_COLUMNS = ["word", "target_index", "fraction", "placement", *STYLE_COLUMNS]
OUTCOME_COLUMNS = ["pixel_cover", "pred_index", "pred_top5", "p_target", "p_true"]
RECORD_COLUMNS = [*IMAGE_COLUMNS, *MODEL_COLUMNS, DEFENCE_COLUMN, *CONDITION_COLUMNS, *OUTCOME_COLUMNS]

CONDITION_DTYPES: dict[str, Any] = {
    "word": object, "target_index": np.int64, "fraction": np.float64, "placement": object, "font": object,
    "fill": object, "outline": object, "outline_width": np.int64, "opacity": np.float64,
}
# The condition columns of a clean (unattacked) record.
CLEAN_COLUMNS: dict[str, Any] = {
    "word": CLEAN_WORD, "target_index": -1, "fraction": 0.0, "placement": CLEAN_PLACEMENT, "font": "",
    "fill": "", "outline": "", "outline_width": -1, "opacity": math.nan,
}


def get_record_dtypes() -> dict[str, Any]:
    """RECORD_COLUMNS with the dtype each has in `build_records`' output (an empty chunk keeps them)."""
    return {"image_id": object, "true_index": np.int64, "model": object, "pretrained": object,
            DEFENCE_COLUMN: object, **CONDITION_DTYPES, "pixel_cover": np.float64, "pred_index": np.int64,
            "pred_top5": object, "p_target": np.float32, "p_true": np.float32}


@dataclass(frozen=True)
class Condition:
    """One attack condition: a word aimed at a class, drawn at a pixel fraction with a placement
    and a text style.

    `text` is set on the conditions of the pseudo-word `random-class` (`word`): one per class, its
    name drawn, aimed at that class; each image is shown under one of them (`select_condition_images`).
    """

    word: str
    target_index: int
    fraction: float
    placement: Placement
    style: RenderStyle
    text: str = ""

    @property
    def drawn_text(self) -> str:
        """The text drawn on the image: `text` when set, else the word."""
        return self.text or self.word

    @property
    def per_image(self) -> bool:
        """True for a condition of a pseudo-word: shown to the images whose drawn class it is, not to all."""
        return bool(self.text)

    def to_columns(self) -> dict[str, Any]:
        """The condition's values keyed by CONDITION_COLUMNS, as records store them (the font by
        its file name, colours as '#rrggbb', the placement by its value)."""
        return {
            "word": self.word, "target_index": self.target_index, "fraction": self.fraction,
            "placement": self.placement.value, **get_style_columns(self.style),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any], styles: Sequence[RenderStyle] = ()) -> Condition:
        """The condition of an attacked record (a dict, Series or itertuples row as a dict).

        Args:
            row: Holds CONDITION_COLUMNS.
            styles: Known styles (a run's config); the one whose columns match is used, so its
                font keeps its full path. Otherwise the font is looked up in FONTS_DIR.

        Raises:
            ValueError: `row` is a clean record (it has no condition).
        """
        if row["word"] == CLEAN_WORD:
            raise ValueError("a clean record has no attack condition")
        wanted = {c: row[c] for c in STYLE_COLUMNS}
        style = next((st for st in styles if _same_columns(get_style_columns(st), wanted)), None)
        if style is None:
            style = RenderStyle(font=str(FONTS_DIR / str(row["font"])), fill=_parse_hex(row["fill"]),
                                outline=_parse_hex(row["outline"]), outline_width=int(row["outline_width"]),
                                opacity=float(row["opacity"]))
        return cls(str(row["word"]), int(row["target_index"]), float(row["fraction"]),
                   Placement(row["placement"]), style)


def get_style_columns(style: RenderStyle) -> dict[str, Any]:
    """A style's values keyed by STYLE_COLUMNS, as records store them."""
    return {"font": Path(style.font).name, "fill": format_color(style.fill), "outline": format_color(style.outline),
            "outline_width": style.outline_width, "opacity": style.opacity}


def _same_columns(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(a[k] == b[k] or (isinstance(a[k], float) and math.isclose(a[k], float(b[k]))) for k in a)


def _parse_hex(text: str) -> tuple[int, int, int]:
    return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))


class AttackSweep(Protocol):
    """The dimensions of a sweep of attacks (a synthetic config has them)."""

    placements: tuple[Placement, ...]
    fractions: tuple[float, ...]
    styles: tuple[RenderStyle, ...]


def list_conditions(cfg: AttackSweep, vocab: Vocabulary) -> list[Condition]:
    """The product of placements x fractions x styles x words, in a fixed order (a pseudo-word's
    vocabulary: one condition per text, each named by the pseudo-word; see `select_condition_images`)."""
    if vocab.pseudo_word:
        return [Condition(vocab.pseudo_word, w.target_index, f, p, st, w.text)
                for p, f, st, w in itertools.product(cfg.placements, cfg.fractions, cfg.styles, vocab.words)]
    return [Condition(w.text, w.target_index, f, p, st)
            for p, f, st, w in itertools.product(cfg.placements, cfg.fractions, cfg.styles, vocab.words)]


def draw_other_class(seed: int, image_id: str, true_index: int, targets: Sequence[int]) -> int:
    """The class a pseudo-word shows on one image: one of `targets` other than `true_index`, drawn from a
    generator keyed on (seed, image id) alone, so it does not depend on batch, chunk, shard or executor
    (nor on the fraction, placement or style: an image shows the same class under each).

    Args:
        seed: The run's seed.
        image_id: The image.
        true_index: Its class (never drawn).
        targets: The classes to draw from, sorted (every class of the set).
    """
    others = [t for t in targets if t != true_index]
    if not others:
        raise ValueError(f"no class other than {true_index} to draw")
    digest = hashlib.blake2b(f"{seed}\0{image_id}".encode("utf-8"), digest_size=16, person=b"random-class").digest()
    rng = np.random.default_rng([int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")])
    return others[int(rng.integers(len(others)))]


def select_condition_images(conditions: Sequence[Condition], image_ids: Sequence[str], true_index: Sequence[int],
                            seed: int) -> np.ndarray:
    """Which image is shown under which condition: bool [n_conditions, n_images].

    Every image under every condition, but a pseudo-word's (`Condition.per_image`): of the conditions of
    one pseudo-word, fraction, placement and style (one per class), an image is shown under the one
    whose target `draw_other_class` drew for it.
    """
    shown = np.ones((len(conditions), len(image_ids)), dtype=bool)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for k, c in enumerate(conditions):
        if c.per_image:
            groups.setdefault((c.word, c.fraction, c.placement, c.style), []).append(k)
    for members in groups.values():
        targets = sorted({conditions[k].target_index for k in members})
        drawn = np.array([draw_other_class(seed, i, int(t), targets) for i, t in zip(image_ids, true_index)],
                         dtype=np.int64)
        for k in members:
            shown[k] = drawn == conditions[k].target_index
    return shown


def count_image_conditions(conditions: Sequence[Condition]) -> int:
    """The conditions each image is shown under (`select_condition_images`): every condition but those
    of a pseudo-word, which count once per (word, fraction, placement, style)."""
    return (sum(1 for c in conditions if not c.per_image)
            + len({(c.word, c.fraction, c.placement, c.style) for c in conditions if c.per_image}))


def build_records(spec: ModelSpec, image_ids: Sequence[str], true_index: np.ndarray, conditions: Sequence[Condition],
                  job_condition: np.ndarray, job_image: np.ndarray, pixel_cover: np.ndarray,
                  outcomes: Sequence[Mapping[str, np.ndarray]], defence: str = NO_DEFENCE) -> pd.DataFrame:
    """The records of one model's jobs (a job is one image under one condition, or clean).

    Args:
        spec: The model.
        image_ids: The images, [n_images].
        true_index: int64 [n_images] ground-truth class of each image.
        conditions: The attack conditions; job condition 0 is clean, c > 0 is conditions[c - 1].
        job_condition: int [n_jobs] condition of each job.
        job_image: int [n_jobs] position of each job's image in `image_ids`.
        pixel_cover: float64 [n_jobs] share of canvas pixels the attack changed (0 for clean).
        outcomes: Per batch of jobs, in job order, `summarize_logits` output (pred_index,
            pred_top5, p_target, p_true).
        defence: The defence label of every record (`none` when undefended).

    Returns:
        RECORD_COLUMNS with their dtypes, sorted image by image (clean first, then the conditions
        in order), whatever the batch or chunk size.
    """
    columns = [CLEAN_COLUMNS] + [c.to_columns() for c in conditions]
    by_condition = {k: np.array([cols[k] for cols in columns], dtype=dtype) for k, dtype in CONDITION_DTYPES.items()}
    frame = pd.DataFrame({
        "image_id": np.array(list(image_ids), dtype=object)[job_image],
        "true_index": np.asarray(true_index)[job_image],
        "model": spec.name,
        "pretrained": spec.pretrained or "",
        DEFENCE_COLUMN: defence,
        **{k: values[job_condition] for k, values in by_condition.items()},
        "pixel_cover": pixel_cover,
        "pred_index": np.concatenate([r["pred_index"] for r in outcomes]),
        "pred_top5": list(np.concatenate([r["pred_top5"] for r in outcomes])),
        "p_target": np.concatenate([r["p_target"] for r in outcomes]).astype(np.float32),
        "p_true": np.concatenate([r["p_true"] for r in outcomes]).astype(np.float32),
    })
    order = np.lexsort((job_condition, job_image))
    return frame[RECORD_COLUMNS].iloc[order].reset_index(drop=True)
