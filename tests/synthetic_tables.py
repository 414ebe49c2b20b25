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
    frame["defence"] = "none"
    return frame.reindex(columns=RECORD_COLUMNS)


def with_fills(per_word: pd.DataFrame) -> pd.DataFrame:
    """The table twice, with fill white and red (the second with ASR halved) and a constant outline."""
    white = per_word.assign(fill="white", outline="black", font=FONT)
    red = per_word.assign(fill="red", outline="black", font=FONT, asr=per_word["asr"] / 2,
                          asr_ci_low=per_word["asr_ci_low"] / 2, asr_ci_high=per_word["asr_ci_high"] / 2)
    return pd.concat([white, red], ignore_index=True)


def make_many_words(n_words: int = 1000) -> list[str]:
    """`n_words` distinct words of 4 to 23 characters (`w000`, `w001a`, ...)."""
    return [f"w{i:03d}" + "abcdefghijklmnopqrs"[: i % 20] for i in range(n_words)]


def make_many_word_per_word(n_words: int = 1000, seed: int = 0, n_images: int = 50) -> pd.DataFrame:
    """A per-word table of one model over `n_words` words (each word targets class i), two
    fractions and one placement, with binomial ASR counts and their Wilson intervals."""
    from typoattack.analysis.metrics import PER_WORD_COLUMNS, wilson_interval

    rng = np.random.default_rng(seed)
    words = make_many_words(n_words)
    rows = []
    for fraction in FRACTIONS:
        p = rng.beta(1.0, 4.0, n_words)
        k = rng.binomial(n_images, p)
        lo, hi = wilson_interval(k, np.full(n_words, n_images))
        for i, word in enumerate(words):
            asr = k[i] / n_images
            rows.append({"model": "ViT-B-32", "pretrained": "openai", "defence": "none", "word": word, "target_index": i,
                         "target_name": CLASS_NAMES[i], "fraction": fraction, "placement": "paper8",
                         "n_images": n_images, "pixel_cover_mean": fraction * 0.98, "clean_top1": 0.7,
                         "attacked_top1": 0.5, "asr": asr, "asr_ci_low": lo[i], "asr_ci_high": hi[i],
                         "changed_to": asr, "already_target": 0.0, "changed_away": 0.1,
                         "neither": 0.9 - asr, "flip_rate": 0.3})
    return pd.DataFrame(rows)[PER_WORD_COLUMNS].assign(font=FONT)


def make_many_word_records(n_words: int = 1000, n_images: int = 5, seed: int = 0) -> pd.DataFrame:
    """Records of one model over `n_words` words (word i targets class i) at one fraction and
    placement; word i succeeds on an image with probability rising with i."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, 1000, n_images)
    clean = true.copy()
    model, pretrained = "ViT-B-32", "openai"
    rows = [(f"img{j:03d}", int(true[j]), model, pretrained, "", -1, 0.0, "", FONT, 0.0, int(clean[j]))
            for j in range(n_images)]
    for i, word in enumerate(make_many_words(n_words)):
        hit = rng.random(n_images) < (i + 1) / (n_words + 1)
        pred = np.where(hit, i, clean)
        cover = 0.1 * (1 - 0.05 * rng.random(n_images))
        rows += [(f"img{j:03d}", int(true[j]), model, pretrained, word, i, 0.1, "paper8", FONT, float(cover[j]),
                  int(pred[j])) for j in range(n_images)]
    frame = pd.DataFrame(rows, columns=["image_id", "true_index", "model", "pretrained", "word", "target_index",
                                        "fraction", "placement", "font", "pixel_cover", "pred_index"])
    frame["pred_top5"] = [_top5(p) for p in frame["pred_index"]]
    frame["p_target"] = 0.1
    frame["p_true"] = 0.2
    frame["fill"], frame["outline"], frame["outline_width"], frame["opacity"] = "white", "black", 2.0, 1.0
    frame["defence"] = "none"
    return frame.reindex(columns=RECORD_COLUMNS)
