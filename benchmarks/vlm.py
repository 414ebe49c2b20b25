"""Likelihood scoring of a vision-language model against a SCAM-style generate loop, on a tiny LLaVA on CPU.

On the same N items (shipped ImageNet sample images at the model's native size, each asked with SCAM's
prompt 1 in both option orders: 2N questions), it times:
  1. likelihood: `score_options` in batches (the letter answer texts "a", "A", "(a", "(A" per option: one
     prompt pass, plus one pass over the KV cache for the letter after "("), the choice being the option with
     the higher log-probability;
  2. a SCAM-style loop: one question at a time, greedy `generate` (at most --max-new-tokens), SCAM's parser;
and prints the wall times (the fastest of --repeats alternating runs of each), the number of generated answers that parse, and two lines a script can read:

    speed-up (likelihood vs generate loop): X.XX
    agreement on parsed answers: YY.Y% of N          (N: the questions whose generated answer parses)

The tiny model is random except for its output layer, which is biased toward the option letters (and
centred on these items) so that its greedy answers are letters that parse (tests/vlm_builders.py).

    python benchmarks/vlm.py                    # 64 images x 2 orders, batches of 64, one torch thread
    python benchmarks/vlm.py --items 200 --threads 0
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from typoattack.backends.transformers.chat import create_vision_language_model  # noqa: E402
from typoattack.config.types import Precision  # noqa: E402
from typoattack.constants import SAMPLE_DIR  # noqa: E402
from typoattack.tasks.vlm.answers import Choice, choose_options, parse_answer, reduce_forms  # noqa: E402
from typoattack.tasks.vlm.prompts import (  # noqa: E402
    SCAM_PROMPTS, AnswerStyle, OptionOrder, build_answer_texts, build_question, list_orders,
)
from vlm_builders import LETTER_SPACE, center_letter_bias, save_tiny_llava  # noqa: E402

ATTACK_LABELS = ["pizza", "iPod", "library", "piggy bank", "Granny Smith", "rifle", "trash can", "toaster", "dog"]
"""Target names of the attack words (Distill's goh2021 words and a few more), cycled over the items."""


def load_items(n: int, size: tuple[int, int]) -> tuple[list[np.ndarray], list[str], list[str]]:
    """N shipped sample images resized to `size` (uint8 [H, W, 3]), their class names and attack labels."""
    labels = pd.read_csv(SAMPLE_DIR / "labels.csv").head(n)
    if len(labels) < n:
        sys.exit(f"only {len(labels)} sample images are shipped; use --items {len(labels)} or fewer")
    images = [np.asarray(Image.open(SAMPLE_DIR / f).convert("RGB").resize(size[::-1], Image.BICUBIC))
              for f in labels["file"]]
    objects = list(labels["folder_label"])
    attacks = [ATTACK_LABELS[i % len(ATTACK_LABELS)] for i in range(n)]
    return images, objects, attacks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="images (each asked in both orders)")
    parser.add_argument("--batch-size", type=int, default=64, help="questions per likelihood forward pass")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the tiny model's operations are too small to share; "
                             "0 keeps torch's own setting)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each method; the fastest counts")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (make gpu-check runs it on cuda)")
    parser.add_argument("--precision", default="fp32", choices=[p.value for p in Precision])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_tiny_llava(Path(tmp) / "tiny-llava", letter_bias=True)
        vlm = create_vision_language_model(str(folder), torch.device(args.device), Precision(args.precision))
    images, objects, attacks = load_items(args.items, vlm.native_image_size)

    prompt = SCAM_PROMPTS[0]
    rows = [(i, order) for i in range(args.items) for order in list_orders(OptionOrder.BOTH)]
    q_images = [images[i] for i, _ in rows]
    questions = [build_question(prompt, objects[i], attacks[i], order) for i, order in rows]
    texts = [build_answer_texts(AnswerStyle.LETTER, objects[i], attacks[i], order) for i, order in rows]
    n_forms = len(texts[0][0])
    center_letter_bias(vlm, q_images, questions, space=LETTER_SPACE["llava"])

    # Warm-up (lazy imports, first-call allocations), not timed.
    vlm.score_options(q_images[:2], questions[:2], [[*o, *a] for o, a in texts[:2]], batch_size=2)
    vlm.generate_answers(q_images[:1], questions[:1], max_new_tokens=args.max_new_tokens, batch_size=1)

    def score() -> list[Choice]:
        scores = vlm.score_options(q_images, questions, [[*o, *a] for o, a in texts], batch_size=args.batch_size)
        option_logp = reduce_forms(scores, n_forms)
        return choose_options(option_logp[:, 0], option_logp[:, 1])

    def generate() -> list[Choice]:
        generated = []
        for image, question in zip(q_images, questions):
            generated += vlm.generate_answers([image], [question], max_new_tokens=args.max_new_tokens, batch_size=1)
        return [parse_answer(answer, objects[i], attacks[i], order) for answer, (i, order) in zip(generated, rows)]

    # Alternate the two methods so that a change in machine load affects both alike.
    t_likelihood = t_generate = float("inf")
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        likely = score()
        t_likelihood = min(t_likelihood, time.perf_counter() - t0)
        t0 = time.perf_counter()
        parsed = generate()
        t_generate = min(t_generate, time.perf_counter() - t0)

    readable = [j for j, choice in enumerate(parsed) if choice is not Choice.UNCLEAR]
    agree = sum(parsed[j] is likely[j] for j in readable)
    attack_share = np.mean([c is Choice.ATTACK for c in likely])
    print(f"items: {args.items} images x 2 orders = {len(rows)} questions (tiny LLaVA, {args.device}, "
          f"{args.precision}, {torch.get_num_threads()} torch threads)")
    print(f"likelihood items/s: {len(rows) / t_likelihood:.1f} ({args.precision}, {args.device})")
    print(f"likelihood: {t_likelihood:.2f} s (batch {args.batch_size}); generate loop: {t_generate:.2f} s "
          f"(max_new_tokens {args.max_new_tokens}); fastest of {max(1, args.repeats)} runs each")
    print(f"parsed: {len(readable)} of {len(rows)} generated answers; likelihood chose the attack in "
          f"{100 * attack_share:.1f}%")
    print(f"speed-up (likelihood vs generate loop): {t_generate / t_likelihood:.2f}")
    share = 100 * agree / len(readable) if readable else float("nan")
    print(f"agreement on parsed answers: {share:.1f}% of {len(readable)}")


if __name__ == "__main__":
    main()
