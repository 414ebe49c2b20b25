"""Value types of a run: frozen dataclasses and enums, validated on construction.

No parsing here (see `typoattack.config.parsing`): importing this module reads no YAML and loads
no model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from collections.abc import Iterable

from typoattack.constants import AUTO_FONT, DEFAULT_FONT, DEMO_MODEL, FONTS_DIR
from typoattack.errors import ConfigError

SEED_PREFIX = "seed:"
UNTRAINED_WARNING = ("UNTRAINED MODEL: {models} {verb} random weights (seed:N); these numbers only check "
                     "the pipeline, they say nothing about CLIP.")
DEMO_WARNING = ("DEMO MODEL: {models} is typoattack's 4.5 M-parameter toy, trained for half an hour on a CPU on the "
                "very 500 images the CI config evaluates, to show and check the pipeline; its numbers say nothing "
                "about CLIP.")


def is_untrained(pretrained: str | None) -> bool:
    """True when a pretrained value asks for random weights (`seed:N`): numbers from such a model
    only check the pipeline."""
    return bool(pretrained) and str(pretrained).startswith(SEED_PREFIX)


def get_untrained_warning(labels: list[str]) -> str:
    """The one warning text shown wherever untrained models (`labels`) appear."""
    return UNTRAINED_WARNING.format(models=", ".join(labels), verb="has" if len(labels) == 1 else "have")


def get_model_warnings(models: Iterable[tuple[str, str | None]]) -> list[str]:
    """The warnings to show wherever these (model name, pretrained) appear: random weights
    (`seed:N`), and the demo model trained on the CI images themselves."""
    labels = {(name, pretrained): f"{name}/{pretrained}" if pretrained else name for name, pretrained in models}
    untrained = [label for (name, pretrained), label in labels.items() if is_untrained(pretrained)]
    demo = [label for (name, pretrained), label in labels.items() if name == DEMO_MODEL and not is_untrained(pretrained)]
    warnings = [get_untrained_warning(untrained)] if untrained else []
    if demo:
        warnings.append(DEMO_WARNING.format(models=", ".join(demo)))
    return warnings


def check_fraction(fraction: float) -> None:
    """Raise ConfigError unless `fraction` (share of canvas pixels the text changes) is in (0, 1)."""
    if not (isinstance(fraction, float) and 0 < fraction < 1):
        raise ConfigError(f"fraction {fraction} must be in (0, 1), e.g. 0.07 for 7% of the canvas")


def format_color(rgb: tuple[int, int, int]) -> str:
    """'#rrggbb' of an RGB colour."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


class Placement(str, Enum):
    """Where the attack word is drawn on the canvas."""

    PAPER8 = "paper8"
    CENTER = "center"
    RANDOM = "random"


class Precision(str, Enum):
    """Numeric precision of the image encoder (bf16 and fp16 run under CUDA autocast)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Executor(str, Enum):
    """Where the evaluation cells run: in this process, or as tasks on a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


class RealDataset(str, Enum):
    """A real typographic-attack dataset format."""

    SCAM = "scam"
    RTA100 = "rta100"
    PAINT = "paint"
    DISENTANGLE = "disentangle"
    FOLDER = "folder"


class Protocol(str, Enum):
    """How an image is scored.

    UNION: argmax over the union of the dataset's object labels and attack words (RTA-100,
    PAINT, Disentangling and Dyslexify's SCAM protocol). BINARY: a two-way softmax between the
    image's own object label and its attack word (the SCAM paper's protocol).
    """

    UNION = "union"
    BINARY = "binary"


class LabelSet(str, Enum):
    """The class labels of the union protocol of `typoattack real`.

    DATASET: the dataset's own class list where it ships one (Disentangling's `classes.json`
    keys) together with every object label and attack word of the annotations, as the authors
    score it. ANNOTATIONS: the object labels and attack words of the annotations only.
    """

    DATASET = "dataset"
    ANNOTATIONS = "annotations"


@dataclass(frozen=True)
class ShardSpec:
    """One part of a run split for schedulers without Ray (`--shard K/N`): the cells whose
    position in the run's cell list is K-1 modulo N.

    Attributes:
        index: K, 1-based.
        count: N, the number of shards.
    """

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: K must be in 1..N and N at least 1 (e.g. 1/4)")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


BUILTIN_TEMPLATES = ("openai", "simple", "photo")
"""Template sets by name: open_clip's 80 OpenAI ImageNet templates, its 7 simple ones, and the one
prompt "a photo of a {}." (the Defense-Prefix baseline)."""
FAMILY_TEMPLATES = "family"
"""The `templates` value for each model family's recommended templates (SigLIP's "This is a photo of
{}."; `openai` for a family without a recommendation)."""


@dataclass(frozen=True)
class AttackWord:
    """One attack word and the class it aims at.

    Attributes:
        text: The text drawn on the image.
        target_index: Index of the class (in the run's class set) the attack tries to force.
        language: The word's language (an ISO 639-1 code): `en` unless its vocabulary says another
            (`language:` in the YAML file; `babel:LANG`).
    """

    text: str
    target_index: int
    language: str = "en"


@dataclass(frozen=True)
class Vocabulary:
    """A named list of attack words, loaded from a YAML file in configs/vocab/ (or made from a class set).

    Attributes:
        name: Its name (run.json).
        words: The words, each aimed at a class.
        path: The YAML file; empty for a vocabulary made from the class set.
        pseudo_word: Empty: every word is a condition of its own. Else the words are the texts of ONE
            condition named `pseudo_word` (`random-class`): each image is shown one of them, drawn per image.
        notes: What was left out and why (`babel:LANG`: the classes the language lacks), for run.json.
    """

    name: str
    words: tuple[AttackWord, ...]
    path: str = ""
    pseudo_word: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: its name in a backend and its weights.

    Attributes:
        name: open_clip: a model name, `hf-hub:org/repo` or `local-dir:/path`; transformers: a Hub
            repo id or a folder written by `save_pretrained`.
        pretrained: open_clip pretrained tag, a checkpoint file path, `seed:N` (random weights
            from seed N, only to test the pipeline), or None (hf-hub:/local-dir: ids, transformers).
        backend: The model family's backend (`typoattack.backends.registry`).
    """

    name: str
    pretrained: str | None = None
    backend: str = "open_clip"

    @property
    def label(self) -> str:
        """A short human-readable name, `name/pretrained`."""
        return f"{self.name}/{self.pretrained}" if self.pretrained else self.name


@dataclass(frozen=True)
class DataSpec:
    """Where the images come from.

    Attributes:
        source: An ImageNet-val folder of WordNet-id sub-folders, a folder of images with a
            labels CSV, or `hf:NAME` (a Hugging Face dataset name, a local dataset folder or a
            folder written by `Dataset.save_to_disk`).
        labels: The labels CSV (`file`, `class_index` columns); default `<source>/labels.csv`.
        hf_split: Split of the Hugging Face dataset.
        hf_image_column: Column holding the images.
        hf_label_column: Column holding integer ImageNet class indices.
    """

    source: str
    labels: str | None = None
    hf_split: str = "validation"
    hf_image_column: str = "image"
    hf_label_column: str = "label"


@dataclass(frozen=True)
class RenderStyle:
    """How the attack text looks.

    Attributes:
        font: Path of a TrueType/OpenType font file, or `auto` (per word, the first font that covers
            it: `typoattack.data.fonts`, resolved before a word is drawn).
        fill: Text colour, RGB 0-255.
        outline: Outline colour, RGB 0-255.
        outline_width: Outline width in canvas pixels (0 = no outline).
        opacity: Opacity of the text, in (0, 1].
    """

    font: str = str(DEFAULT_FONT)
    fill: tuple[int, int, int] = (255, 255, 255)
    outline: tuple[int, int, int] = (0, 0, 0)
    outline_width: int = 1
    opacity: float = 1.0

    def __post_init__(self) -> None:
        if self.font != AUTO_FONT and not Path(self.font).is_file():
            raise ConfigError(
                f"font file {self.font} does not exist; give a .ttf/.otf path or a file name in {FONTS_DIR}"
            )
        if not 0 <= self.outline_width <= 16:
            raise ConfigError(f"outline_width must be 0-16 pixels, got {self.outline_width}")
        if not 0 < self.opacity <= 1:
            raise ConfigError(f"opacity must be in (0, 1], got {self.opacity}")
