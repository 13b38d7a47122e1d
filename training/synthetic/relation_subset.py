"""A few relations of a split, spread over it: quick runs and tests of the compositional world draw one image of a
handful of relations instead of every relation, and should still meet several layouts and changes."""

from __future__ import annotations

import numpy as np

from training.synthetic.factors import Relation
from training.synthetic.relations import relation_split


def relation_subset(split: str, limit: int | None = None) -> tuple[Relation, ...]:
    """`relation_split(split)`, or `limit` of its relations evenly spaced in its (sorted) order."""
    relations = relation_split(split)
    if limit is None or limit >= len(relations):
        return relations
    if limit < 1:
        raise ValueError(f"a relation limit must be at least 1 (or None for all), got {limit}")
    return tuple(relations[index] for index in np.linspace(0, len(relations) - 1, limit).round().astype(int))
