"""Constants shared by the stages: paths of shipped files and defaults (the record schema is in
`typoattack.records`)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Everything a run needs besides code ships inside the package (and so in the wheel); the
# repository's top-level configs/ and fonts/ are links into it.
ASSETS_DIR = PACKAGE_DIR / "assets"
FONTS_DIR = ASSETS_DIR / "fonts"
CONFIGS_DIR = ASSETS_DIR / "configs"
VOCAB_DIR = CONFIGS_DIR / "vocab"
MODEL_CONFIGS_DIR = ASSETS_DIR / "model_configs"
WEIGHTS_DIR = ASSETS_DIR / "weights"
SAMPLE_DIR = ASSETS_DIR / "imagenet-sample"
SYNSETS_FILE = ASSETS_DIR / "imagenet_synsets.txt"
LEMMAS_FILE = ASSETS_DIR / "imagenet_lemmas.txt"
CLASS_SETS_FILE = ASSETS_DIR / "class_sets" / "clip_prompts.json"

# Weights shipped in the package, by (open_clip model name, pretrained tag): file in WEIGHTS_DIR.
SHIPPED_WEIGHTS = {("typoattack-reader-tiny", "ci500"): "typoattack-reader-tiny.safetensors"}
DEMO_MODEL = "typoattack-reader-tiny"
DEMO_PRETRAINED = "ci500"

DEFAULT_FONT = FONTS_DIR / "DejaVuSans-Bold.ttf"
# `--font auto`: per word, the first font that covers it (typoattack.data.fonts).
AUTO_FONT = "auto"
# `--vocab babel:LANG`: Babel-ImageNet's class names in LANG (typoattack.data.babel).
BABEL_PREFIX = "babel:"
DEFAULT_CACHE_DIR = Path("~/.cache/typoattack")
NUM_CLASSES = 1000
LOGIT_SCALE = 100.0
TOP_K = 5

# Alpha below this is dropped from a text mask, so every masked pixel visibly changes
# and the mask's coverage predicts the measured pixel cover.
ALPHA_FLOOR = 0.1

CLEAN_WORD = ""
# Vocabularies made from the run's class set (`--vocab classes`, `--vocab random-class`); the second is also
# the one word its records and tables carry (each image shown another class's name, drawn per image).
CLASSES_VOCAB = "classes"
RANDOM_CLASS_WORD = "random-class"
CLEAN_PLACEMENT = ""
