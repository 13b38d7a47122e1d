"""The relational filter: a Qwen2.5-VL fine-tuned (TRL SFT) to answer one fixed question with "Yes" or "No", read
out as P(yes) from one forward pass, and evaluated against held-out human labels.

The names below are imported on first use, so the pipeline's command line stays light.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "ANSWERS": "training.pipeline.filter.question",
    "QUESTION_VERSION": "training.pipeline.filter.question",
    "RELATIONAL_QUESTION": "training.pipeline.filter.question",
    "FilterArguments": "training.pipeline.filter.arguments",
    "load_filter_recipe": "training.pipeline.filter.arguments",
    "class_weights": "training.pipeline.filter.rows",
    "filter_rows": "training.pipeline.filter.rows",
    "filter_label_rows": "training.pipeline.filter.rows",
    "load_filter_labels": "training.pipeline.filter.rows",
    "train_filter": "training.pipeline.filter.training",
    "ImageFailure": "training.pipeline.filter.scoring",
    "score_images": "training.pipeline.filter.scoring",
    "FilterReport": "training.pipeline.filter.evaluation",
    "evaluate_filter": "training.pipeline.filter.evaluation",
    "train_synthetic_filter": "training.pipeline.filter.synthetic",
    "synthetic_filter_examples": "training.pipeline.filter.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
