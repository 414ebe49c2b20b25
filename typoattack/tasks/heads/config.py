"""Settings of `typoattack find-heads`: the images, words and attack of an `eval` run, the models whose
vision attention heads are searched (each model is one cell: its greedy search is sequential), and the
run folder the search is written to (heads.yaml inside it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typoattack.config.attack import AttackSettings
from typoattack.config.classes import DATASET_TEMPLATES, ClassSetSettings
from typoattack.config.common import ImageSetSettings, check_templates, load_config
from typoattack.config.options import Panel, option
from typoattack.config.parsing import as_str
from typoattack.constants import CONFIGS_DIR, RANDOM_CLASS_WORD
from typoattack.errors import ConfigError
from typoattack.files import expand_path

IGNORED_EVAL_KEYS = ("chunk_size", "compile", "defence", "defences")
"""Keys of an `eval` config that mean nothing to find-heads (a cell is one model, the search ablates
heads itself); an eval config given with --config is read without them, so that the heads are searched on
the very images, words and attack that `eval --config` evaluates."""
YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, kw_only=True)
class FindHeadsConfig(AttackSettings, ClassSetSettings, ImageSetSettings):
    """Everything that determines the search of a `find-heads` run (written to run.json): the run, the
    images with their templates, and the attack sweep the heads are chosen against. `defences`,
    `chunk_size` and `compile` keep their defaults and have no option (see IGNORED_EVAL_KEYS)."""

    COMMAND = "find-heads"
    SUMMARY = ("Choose vision attention heads to ablate: score heads by class-token attention on the drawn text, "
               "keep them greedily on a seeded half of the images, report on the other half; write heads.yaml.")
    BUILTIN_DIR = CONFIGS_DIR
    DEMO_BY_DEFAULT = "sample"

    out: str | None = field(default=None, metadata=option(
        panel=Panel.RUN, metavar="PATH", short="-o", parse=lambda v: str(expand_path(as_str("out", v))),
        metadata={"fingerprint": False},
        help="Run folder; heads.yaml is written inside it (heads/MODEL.yaml per model for several)."))
    # The search ablates heads itself: no defences. One cell per model: no chunk size. Recording
    # attention goes through module hooks: no torch.compile.
    defences: tuple[str, ...] = field(default=("none",))
    chunk_size: int | None = field(default=None)
    compile: bool = field(default=False, metadata={"fingerprint": False})

    def __post_init__(self) -> None:
        if self.out and Path(self.out).suffix.lower() in YAML_SUFFIXES and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out}: find-heads now writes a run folder (resumable, one heads file per "
                              "model) with heads.yaml inside it; pass a folder, e.g. "
                              f"--out {Path(self.out).with_suffix('')}, and use --defence heads:@FOLDER/heads.yaml")
        super().__post_init__()
        check_templates(self.templates, (DATASET_TEMPLATES,))
        if self.vocab == RANDOM_CLASS_WORD:
            raise ConfigError(f"find-heads chooses heads against fixed words; --vocab {RANDOM_CLASS_WORD} draws one "
                              f"per image (use --vocab classes, or a vocabulary file)")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> FindHeadsConfig:
        """The config of a mapping of settings; the keys of an eval config that find-heads has no use
        for (IGNORED_EVAL_KEYS) are dropped first."""
        if isinstance(raw, Mapping):
            raw = {k: v for k, v in raw.items() if k not in IGNORED_EVAL_KEYS}
        return super().from_mapping(raw)

    @classmethod
    def resolve_paths(cls, raw: dict[str, Any], base: Path) -> None:
        """The paths of a YAML mapping, once the keys find-heads has no use for are dropped (an eval
        config's `heads:@FILE` defence may name the file this run is about to write)."""
        for key in IGNORED_EVAL_KEYS:
            raw.pop(key, None)
        super().resolve_paths(raw, base)


CONFIG = FindHeadsConfig
"""The task's config class (the registry reads its options to build the command)."""


def load_find_heads_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> FindHeadsConfig:
    """Load a `find-heads` config (a YAML file or a built-in eval config name; paths in it relative to the
    file) and apply the flags over it (YAML < flags).

    Raises:
        ConfigError: A key is unknown, a value has the wrong type, or --out names a .yaml file.
    """
    return load_config(path, overrides, FindHeadsConfig)
