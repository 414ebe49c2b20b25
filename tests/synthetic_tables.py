"""A synthetic record table and its per-word table, shared by the tests of plots, metrics and the
report (two models, three words, two fractions, two placements, 30 images)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from typoattack.records import RECORD_COLUMNS

CLASS_NAMES = [f"class {i}" for i in range(1000)]
CLASS_NAMES[7] = "a deliberately very long class name"
# (model, pretrained, clean accuracy, attack strength at fraction 0.04, at 0.1)
MODELS = [("ViT-B-32", "openai", 0.7, 0.2, 0.6), ("typoattack-tiny", "seed:0", 0.3, 0.05, 0.1)]
# "$$$" would be mathtext for matplotlib; "<b>&" must be escaped in HTML.
WORDS = {"iPod": 605, "$$$": 719, "<b>&": 963}
FRACTIONS = [0.04, 0.1]
PLACEMENTS = ["paper8", "random"]
N_IMAGES = 30
FONT = "DejaVuSans-Bold.ttf"


def _top5(pred: int) -> list[int]:
    return [pred] + [(pred + k) % 1000 for k in range(1, 5)]


def make_records(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    true = rng.choice(np.array([3, 7, 11, 42, 99, 100, 250, 605, 719, 963]), size=N_IMAGES)
    rows = []
    for model, pretrained, clean_acc, s04, s10 in MODELS:
        clean = np.where(rng.random(N_IMAGES) < clean_acc, true, rng.integers(0, 1000, N_IMAGES))
        for i in range(N_IMAGES):
            rows.append((f"img{i:03d}", int(true[i]), model, pretrained, "", -1, 0.0, "", FONT, 0.0, int(clean[i])))
        for word, target in WORDS.items():
            for fraction, strength in zip(FRACTIONS, (s04, s10)):
                for placement in PLACEMENTS:
                    u = rng.random(N_IMAGES)
                    pred = np.where(u < strength, target,
                                    np.where(u < strength + 0.3, rng.integers(0, 1000, N_IMAGES), clean))
                    cover = fraction * (1 - 0.05 * rng.random(N_IMAGES))
                    for i in range(N_IMAGES):
                        rows.append((f"img{i:03d}", int(true[i]), model, pretrained, word, target, fraction,
                                     placement, FONT, float(cover[i]), int(pred[i])))
    frame = pd.DataFrame(rows, columns=["image_id", "true_index", "model", "pretrained", "word", "target_index",
                                        "fraction", "placement", "font", "pixel_cover", "pred_index"])
    frame["pred_top5"] = [_top5(p) for p in frame["pred_index"]]
    frame["p_target"] = 0.1
    frame["p_true"] = 0.2
    # One drawing style throughout (style columns the record schema may carry).
    frame["fill"], frame["outline"], frame["outline_width"], frame["opacity"] = "white", "black", 2.0, 1.0
    return frame.reindex(columns=RECORD_COLUMNS)


def with_fills(per_word: pd.DataFrame) -> pd.DataFrame:
    """The table twice, with fill white and red (the second with ASR halved) and a constant outline."""
    white = per_word.assign(fill="white", outline="black", font=FONT)
    red = per_word.assign(fill="red", outline="black", font=FONT, asr=per_word["asr"] / 2,
                          asr_ci_low=per_word["asr_ci_low"] / 2, asr_ci_high=per_word["asr_ci_high"] / 2)
    return pd.concat([white, red], ignore_index=True)
