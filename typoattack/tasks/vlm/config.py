"""Settings of `typoattack vlm`: vision-language chat models asked SCAM's two-option question about
synthetic attacks on labelled images or about a real typographic-attack dataset (YAML < flags).
Imports no model code and reads no data beyond the prompt files."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typoattack.config.attack import (
    ATTACK_ALIASES, ATTACK_KEYS, AttackSettings, check_attack_spellings, parse_attack_settings, resolve_attack_paths,
)
from typoattack.config.common import (
    DATA_KEYS, RUN_KEYS, check_keys, load_config, parse_data_settings, parse_run_settings,
)
from typoattack.config.datasets import DATASET_KEYS, REAL_DEFAULT_SPLIT, RealDatasetSettings, parse_dataset
from typoattack.config.parsing import as_bool, as_enum, as_int, as_list, as_str, resolve_path
from typoattack.config.types import ModelSpec
from typoattack.errors import ConfigError
from typoattack.files import expand_path
from typoattack.tasks.vlm.answers import Scoring
from typoattack.tasks.vlm.prompts import DEFAULT_PROMPT_IDS, AnswerStyle, OptionOrder, is_prompts_file, resolve_prompts

VLM_BACKEND = "transformers"
"""The `backend` of every vlm model spec (the library its models load with; run.json `versions`)."""
MIN_IMAGE_SIZE = 16
VLM_RUN_KEYS = tuple(k for k in RUN_KEYS if k not in ("pretrained", "backend", "compile"))
VLM_OWN_KEYS = ("prompt", "prompts", "order", "scoring", "answer", "max_new_tokens", "image_size",
                "trust_remote_code")
VLM_KEYS = (*VLM_RUN_KEYS, *DATA_KEYS, *DATASET_KEYS, *ATTACK_KEYS, *VLM_OWN_KEYS)
_NO_SPEED = {"fingerprint": False}


@dataclass(frozen=True, kw_only=True)
class VlmConfig(AttackSettings, RealDatasetSettings):
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
            model's default, `backends.transformers_vlm.get_default_canvas_size`).
        trust_remote_code: Let models run their repository's own code.
    """

    question_prompts: tuple[str, ...] = DEFAULT_PROMPT_IDS
    order: OptionOrder = OptionOrder.BOTH
    scoring: Scoring = Scoring.LIKELIHOOD
    answer: AnswerStyle = AnswerStyle.LETTER
    max_new_tokens: int = 16
    image_size: int | None = None
    trust_remote_code: bool = field(default=False, metadata=_NO_SPEED)

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
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a run config must be a mapping of keys to values, got {type(raw).__name__}")
    check_keys(raw, VLM_KEYS, "vlm")
    if "prompt" in raw and "prompts" in raw:
        raise ConfigError("give `prompt` or `prompts`, not both")
    check_attack_spellings(raw)
    dataset = parse_dataset(raw)
    given = [k for k in ATTACK_KEYS if k in raw]
    if dataset is not None and given:
        raise ConfigError(f"`{given[0]}` sets a synthetic attack, but --dataset {dataset.value} reads photos whose "
                          "text is already on them; drop it, or drop --dataset to draw attacks on --data")
    data = parse_data_settings(raw, REAL_DEFAULT_SPLIT if dataset is not None else "validation")
    run = {**parse_run_settings({k: v for k, v in raw.items() if k not in ("model", "models")}),
           "models": parse_vlm_models(raw)}
    image_size = raw.get("image_size")
    return VlmConfig(
        **run, **data, dataset=dataset, **parse_attack_settings(raw),
        question_prompts=tuple(_as_prompt(p)
                               for p in as_list(raw.get("prompts", raw.get("prompt", DEFAULT_PROMPT_IDS)))),
        order=as_enum("order", OptionOrder, raw.get("order", OptionOrder.BOTH.value)),
        scoring=as_enum("scoring", Scoring, raw.get("scoring", Scoring.LIKELIHOOD.value)),
        answer=as_enum("answer", AnswerStyle, raw.get("answer", AnswerStyle.LETTER.value)),
        max_new_tokens=as_int("max_new_tokens", raw.get("max_new_tokens", 16)),
        image_size=None if image_size is None or image_size == "auto" else as_int("image_size", image_size),
        trust_remote_code=as_bool("trust_remote_code", raw.get("trust_remote_code", False)),
    )


def _as_prompt(value: Any) -> str:
    """A `--prompt` value: an id as written (numbers as text), a prompts file as an absolute path."""
    text = str(value).strip() if isinstance(value, int) and not isinstance(value, bool) else as_str("prompt", value)
    return str(Path(resolve_path(text, None)).resolve()) if is_prompts_file(text) else text.strip()


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    resolve_attack_paths(raw, base)
    for key in ("prompt", "prompts"):
        if key in raw:
            raw[key] = [resolve_path(p, base) if isinstance(p, str) and is_prompts_file(p) else p
                        for p in as_list(raw[key])]


def load_vlm_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> VlmConfig:
    """Load a `vlm` config (a YAML file; paths in it relative to the file) and apply the flags over it
    (YAML < flags).

    Args:
        path: The YAML file, or None for the flags alone.
        overrides: Settings keyed as in the YAML file; None values are ignored.
    """
    return load_config(path, overrides, build_vlm_config, resolve_paths=_resolve_paths,
                       aliases={**ATTACK_ALIASES, "prompt": "prompts"})
