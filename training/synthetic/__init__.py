"""Generated images whose relational logic is known exactly, for training and benchmarking without downloads.

The names below are imported on first use, so importing a submodule (or a command line that needs none) stays
light.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "HELD_OUT_COLOURS": "training.synthetic.attributes",
    "HELD_OUT_SHAPES": "training.synthetic.attributes",
    "ObjectStyle": "training.synthetic.attributes",
    "synthetic_dataset": "training.synthetic.dataset",
    "synthetic_examples": "training.synthetic.dataset",
    "write_official_format": "training.synthetic.dataset",
    "FAMILIES": "training.synthetic.families",
    "FAMILY_NAMES": "training.synthetic.families",
    "literal_description": "training.synthetic.literal",
    "NEGATIVE_KINDS": "training.synthetic.negatives",
    "negative_examples": "training.synthetic.negatives",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
