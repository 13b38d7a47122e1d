"""Generated images whose relational logic is known exactly, for training and benchmarking without downloads."""

from training.synthetic.attributes import HELD_OUT_COLOURS, HELD_OUT_SHAPES, ObjectStyle
from training.synthetic.dataset import synthetic_dataset, synthetic_examples, write_official_format
from training.synthetic.families import FAMILIES, FAMILY_NAMES


__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "HELD_OUT_COLOURS",
    "HELD_OUT_SHAPES",
    "ObjectStyle",
    "synthetic_dataset",
    "synthetic_examples",
    "write_official_format",
]
