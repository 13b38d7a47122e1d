"""A few relations spread over a split: what the quick runs and tests of the compositional world draw."""

from __future__ import annotations

import pytest

from training.synthetic.relation_subset import relation_subset
from training.synthetic.relations import relation_split


def test_a_relation_subset_spreads_over_its_split():
    assert relation_subset("heldout") == relation_split("heldout")
    few = relation_subset("train", 4)
    assert len(set(few)) == 4 and set(few) <= set(relation_split("train"))
    assert (few[0], few[-1]) == (relation_split("train")[0], relation_split("train")[-1])
    with pytest.raises(ValueError, match="at least 1"):
        relation_subset("train", 0)
