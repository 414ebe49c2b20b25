"""Which real typographic-attack dataset a run reads (`real`, `vlm`), declared once with its parser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from typoattack.config.common import DataSettings
from typoattack.config.options import Panel, option
from typoattack.config.parsing import as_enum
from typoattack.config.types import RealDataset
from typoattack.errors import ConfigError

DATASET_FLAG = "--dataset scam|rta100|paint|disentangle|folder"
REAL_DEFAULT_SPLIT = "train"
"""The split of a Hugging Face real dataset when `hf_split` is not given (SCAM has only `train`)."""


@dataclass(frozen=True, kw_only=True)
class RealDatasetSettings(DataSettings):
    """The format of the real dataset `data` holds.

    Attributes:
        dataset: The dataset format (`data.source` is a folder, or `hf:NAME` for SCAM: a Hub dataset,
            a local dataset folder or a `save_to_disk` folder); None where a task reads labelled
            ImageNet-style images instead (`vlm` without `--dataset`).
    """

    dataset: RealDataset | None = field(default=None, metadata=option(
        panel=Panel.DATA, metavar="FORMAT", help="Dataset format: scam, rta100, paint, disentangle or folder."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dataset not in (None, RealDataset.SCAM) and self.data.source.startswith("hf:"):
            raise ConfigError(f"--data hf:... is read for --dataset scam only; for {self.dataset.value} give the "
                              "folder the dataset's zip file unpacks to")


def parse_dataset(raw: Mapping[str, Any]) -> RealDataset | None:
    """The `dataset` of a config mapping, or None when it is not given.

    Raises:
        ConfigError: It names no dataset format.
    """
    return None if raw.get("dataset") is None else as_enum("dataset", RealDataset, raw["dataset"])
