"""Settings of `typoattack vlm`: vision-language chat models asked SCAM's two-option question about
synthetic attacks on labelled images or about a real typographic-attack dataset (YAML < flags).
Imports no model code and reads no data beyond the prompt files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as replace_option
from pathlib import Path
from typing import Any

from typoattack.config.attack import ATTACK_KEYS, AttackSettings
from typoattack.config.classes import ClassSetSettings
from typoattack.config.common import DATA_OPTIONS, build_data_field, load_config
from typoattack.config.datasets import REAL_DEFAULT_SPLIT, RealDatasetSettings
from typoattack.config.options import Option, Panel, option, options
from typoattack.config.parsing import as_batch_size, as_int, as_list, as_str, resolve_path
from typoattack.config.types import DataSpec, ModelSpec, Precision, RealDataset
from typoattack.errors import ConfigError
from typoattack.files import expand_path
from typoattack.tasks.vlm.answers import Scoring
from typoattack.tasks.vlm.prompts import DEFAULT_PROMPT_IDS, AnswerStyle, OptionOrder, is_prompts_file, resolve_prompts

VLM_BACKEND = "transformers"
"""The `backend` of every vlm model spec (the library its models load with; run.json `versions`)."""
MIN_IMAGE_SIZE = 16
_NO_SPEED = {"fingerprint": False}
QUESTIONS, DATA = Panel.QUESTIONS, Panel.DATA


def _build_models(raw: Mapping[str, Any], cls: type) -> tuple[ModelSpec, ...]:
    return parse_vlm_models(raw)


def _as_image_size(value: Any) -> int | None:
    return None if value == "auto" else as_int("image_size", value)


@dataclass(frozen=True, kw_only=True)
class VlmConfig(AttackSettings, ClassSetSettings, RealDatasetSettings):
    """Everything that determines the records of a `typoattack vlm` run (written to run.json): the run,
    the input (synthetic attacks on `data` when `dataset` is None, else that real dataset), and the questions.

    Attributes:
        question_prompts: `--prompt` values in order: SCAM prompt ids "1".."7", ids of a prompts file, or prompts YAML
            files (absolute paths; each adds all its prompts).
        order: Which option orders are asked (`both`: every item twice).
        scoring: Option log-probabilities, or greedy answers read by SCAM's parser.
        answer: The answer texts whose probabilities make an option's score (likelihood scoring).
        max_new_tokens: Most tokens generated per answer (generate scoring).
        image_size: Side of the square canvas the images are drawn on and handed to the processor (None: each
            model's default, from its chat backend).
        trust_remote_code: Let models run their repository's own code.
    """

    COMMAND = "vlm"
    SUMMARY = "Ask vision-language chat models SCAM's two-option question about synthetic attacks or a real dataset."
    TABLE_HELP = ("What the terminal shows at the end: the answer shares per prompt and condition, or every column "
                  "with the 95% intervals.")

    models: tuple[ModelSpec, ...] = field(metadata=options(
        Option("model", aliases=("models",), panel=Panel.MODEL, metavar="ID|PATH", repeat=True,
               help="Vision-language chat model: a Hub id in the Hugging Face cache (ORG/NAME) or a "
                    "save_pretrained folder; repeat for several."),
        build=_build_models))
    # A chat model is not compiled: no option (and no `compile` key).
    compile: bool = field(default=False, metadata={"fingerprint": False})
    batch_size: int | None = field(default=None, metadata=option(
        panel=Panel.EXECUTION, metavar="INT|auto", type=str, default="auto", parse=as_batch_size, metadata=_NO_SPEED,
        help="Questions per forward pass (auto: 8; halved on CUDA out-of-memory)."))
    precision: Precision = field(default=Precision.FP32, metadata=option(
        panel=Panel.EXECUTION, metavar="fp32|bf16|fp16",
        help="The dtype the model is loaded and run in (fp16 on CUDA only)."))
    dataset: RealDataset | None = field(default=None, metadata=option(
        panel=DATA, metavar="FORMAT",
        help="Ask about the photos of a real dataset (scam, rta100, paint, disentangle, folder; its text already "
             "on them) instead of drawing attacks on --data."))
    data: DataSpec = field(metadata=options(
        replace_option(DATA_OPTIONS[0], help="ImageNet-val folder, image folder with labels.csv, hf:NAME or sample; "
                                             "with --dataset, the dataset's folder (or hf:NAME for SCAM)."),
        DATA_OPTIONS[1],
        replace_option(DATA_OPTIONS[2], default=f"{DATA_OPTIONS[2].default} ({REAL_DEFAULT_SPLIT} with --dataset)"),
        *DATA_OPTIONS[3:],
        build=build_data_field))
    limit: int | None = field(default=None, metadata=option(
        panel=DATA, metavar="N", default="all",
        help="Use a fixed, seeded subset of N images (as eval selects them; photos with --dataset)."))
    question_prompts: tuple[str, ...] = field(default=DEFAULT_PROMPT_IDS, metadata=option(
        "prompt", aliases=("prompts",), panel=QUESTIONS, metavar="ID|PATH", parse=lambda v: _as_prompt(v),
        help="SCAM's prompt 1-7 (5 and 7 warn about text), an id from a prompts file, or a YAML file of prompts "
             "(id, text with {a} and {b}, safe); repeat for several."))
    order: OptionOrder = field(default=OptionOrder.BOTH, metadata=option(
        panel=QUESTIONS, metavar="ORDER",
        help="Option orders asked: object-first (the true object as (a)), attack-first, or both for every image."))
    scoring: Scoring = field(default=Scoring.LIKELIHOOD, metadata=option(
        panel=QUESTIONS, metavar="NAME",
        help="likelihood: the option whose answer is more probable (every image answered); generate: a greedy "
             "answer read by SCAM's parser (unreadable: unclear)."))
    answer: AnswerStyle = field(default=AnswerStyle.LETTER, metadata=option(
        panel=QUESTIONS, metavar="STYLE",
        help="Answer texts scored per option (likelihood): letter (a, A, (a, (A), letter-label ('(a) label') "
             "or label."))
    max_new_tokens: int = field(default=16, metadata=option(
        panel=QUESTIONS, metavar="INT", help="Longest generated answer (generate)."))
    image_size: int | None = field(default=None, metadata=option(
        panel=Panel.MODEL, metavar="INT", type=int, default="the model's input size", parse=_as_image_size,
        help="Side of the square canvas the images are drawn on (the processor's tile for one that keeps the "
             "aspect ratio)."))
    trust_remote_code: bool = field(default=False, metadata=option(
        panel=Panel.MODEL, metavar=" ", metadata=_NO_SPEED,
        help="Let a model run Python code from its repository (never without this flag)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if any(spec.pretrained is not None or spec.backend != VLM_BACKEND for spec in self.models):
            raise ConfigError("`typoattack vlm` models are Hub ids or save_pretrained folders given with --model alone "
                              "(no pretrained tag, no backend)")
        resolve_prompts(self.question_prompts)
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.image_size is not None and self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels, got {self.image_size}")

    @classmethod
    def parse_mapping(cls, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The fields; a real dataset takes no synthetic attack settings."""
        dataset = raw.get("dataset")
        given = [k for k in (*ATTACK_KEYS, "classes", "class_language") if k in raw]
        if dataset is not None and given:
            name = getattr(dataset, "value", dataset)
            raise ConfigError(f"`{given[0]}` sets a synthetic attack, but --dataset {name} reads photos whose "
                              "text is already on them; drop it, or drop --dataset to draw attacks on --data")
        return super().parse_mapping(raw)

    @classmethod
    def get_default_split(cls, raw: Mapping[str, Any]) -> str:
        """A real dataset's split (SCAM on the Hub has only `train`), else ImageNet's."""
        return REAL_DEFAULT_SPLIT if raw.get("dataset") is not None else super().get_default_split(raw)

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """The shared and attack paths, then prompt files."""
        super().resolve_paths(raw, base)
        for key in ("prompt", "prompts"):
            if key in raw:
                raw[key] = [resolve_path(p, base) if isinstance(p, str) and is_prompts_file(p) else p
                            for p in as_list(raw[key])]


CONFIG = VlmConfig
"""The task's config class (the registry reads its options to build the command)."""


def parse_vlm_models(raw: Mapping[str, Any]) -> tuple[ModelSpec, ...]:
    """The models of `model` (one or a list) or `models` (a list of names or `{name}` mappings).

    Raises:
        ConfigError: Both forms, an entry with another key, or no model.
    """
    if "models" in raw and "model" in raw:
        raise ConfigError("give either `models` (a list) or `model`, not both")
    entries = as_list(raw.get("models", raw.get("model", [])))
    names = []
    for entry in entries:
        if isinstance(entry, Mapping):
            if set(entry) != {"name"}:
                raise ConfigError(f"a `models` entry of `typoattack vlm` holds only `name` (a Hub id or a "
                                  f"save_pretrained folder), got {dict(entry)!r}")
            entry = entry["name"]
        name = as_str("model", entry)
        folder = expand_path(name)
        # A folder by its absolute path, so that a Ray worker or a later resume finds it from any directory.
        names.append(str(folder.resolve()) if folder.is_dir() else name)
    if not names:
        raise ConfigError("no model given; pass --model with a Hub id (from the Hugging Face cache) or a "
                          "save_pretrained folder of a vision-language model")
    return tuple(ModelSpec(name, None, VLM_BACKEND) for name in names)


def build_vlm_config(raw: Mapping[str, Any]) -> VlmConfig:
    """Validate a mapping of `vlm` settings (YAML keys; paths absolute or relative to the working directory)
    and build its config.

    Raises:
        ConfigError: A key is unknown, a value has the wrong type or is out of range, attack settings are
            given for a real dataset, or no model or data is given.
    """
    return VlmConfig.from_mapping(raw)


def _as_prompt(value: Any) -> str:
    """A `--prompt` value: an id as written (numbers as text), a prompts file as an absolute path."""
    text = str(value).strip() if isinstance(value, int) and not isinstance(value, bool) else as_str("prompt", value)
    return str(Path(resolve_path(text, None)).resolve()) if is_prompts_file(text) else text.strip()


def load_vlm_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> VlmConfig:
    """Load a `vlm` config (a YAML file; paths in it relative to the file) and apply the flags over it
    (YAML < flags).

    Args:
        path: The YAML file, or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, VlmConfig)
