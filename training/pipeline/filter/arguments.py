"""The filter's recipe: which model (`ChatModelArguments`), how to fine-tune it (`VLMSFTArguments`, TRL's
`SFTConfig`), and which labels, balance and threshold (`FilterArguments`), all in one YAML file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.pipeline.filter.rows import BALANCES
from training.vlm.chat_model import ChatModelArguments
from training.vlm.sft_training import VLMSFTArguments, load_recipe


SYNTHETIC_WORLDS = ("families", "relations")


@dataclass
class FilterArguments:
    """Where the filter's labels come from and how its scores are read."""

    labels: str | None = field(
        default=None, metadata={"help": "the filter_labels folder written by `python -m training.hub_data download`"}
    )
    labels_split: str = "train"
    eval_fraction: float = field(default=0.1, metadata={"help": "labels held out (stratified) for evaluation"})
    balance: str = field(default="weight", metadata={"help": f"class imbalance: one of {BALANCES}"})
    target_precision: float | None = field(
        default=None, metadata={"help": "choose the lowest threshold reaching this precision (else best agreement)"}
    )
    score_batch_size: int = 16
    synthetic_world: str = field(
        default="families",
        metadata={
            "help": "generated positives: the eight relation families, or the compositional world's relations "
            "(then every *_per_family means per relation; training sees the training relations only, evaluation "
            "reports held-out looks of seen and of unseen relations apart)"
        },
    )
    synthetic_max_relations: int | None = field(
        default=None, metadata={"help": "relations world: at most this many of each relation split (quick runs)"}
    )
    synthetic_positives_per_family: int | None = field(
        default=None, metadata={"help": "train on generated images: this many per relation family as positives"}
    )
    synthetic_negatives: int | None = field(default=None, metadata={"help": "generated non-relational negatives"})
    synthetic_eval_positives_per_family: int = 10
    synthetic_eval_negatives: int = 80
    synthetic_image_size: int = 112
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if self.synthetic_world not in SYNTHETIC_WORLDS:
            raise ValueError(f"synthetic_world must be one of {SYNTHETIC_WORLDS}, got {self.synthetic_world!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.labels and self.synthetic_positives_per_family:
            raise ValueError("set one label source: labels or synthetic_positives_per_family")


def load_filter_recipe(
    path: str | Path, overrides: Mapping[str, Any] | None = None
) -> tuple[ChatModelArguments, VLMSFTArguments, FilterArguments]:
    """The three argument groups of a filter recipe (training/configs/filter-*.yaml), `overrides` on top."""
    return load_recipe(path, (ChatModelArguments, VLMSFTArguments, FilterArguments), overrides)
