"""Reading generated captions back into the compositional world's factors (what the captioner is scored by)."""

from __future__ import annotations

import numpy as np
import pytest

from training.synthetic.caption_factors import caption_factors, caption_relation, nearest_relation
from training.synthetic.factors import FACTORS, VALID_RELATIONS, Relation


def test_every_valid_relation_caption_reads_back_as_its_own_factors():
    for relation in VALID_RELATIONS:
        assert caption_factors(relation.caption) == {factor: getattr(relation, factor) for factor in FACTORS}
    assert len(VALID_RELATIONS) == 407


def test_small_slips_of_case_spacing_and_trailing_punctuation_are_forgiven():
    text = "  {object}s IN a row ,growing larger   step by step,  exactly one of them a different colour. "
    assert caption_factors(text) == {"layout": "row", "change": "growing", "exception": "colour", "structure": "none"}


def test_phrases_in_another_order_still_read():
    text = "{Object}s in a column, mirrored exactly across a vertical axis, shrinking step by step"
    assert caption_relation(text) == Relation("column", "shrinking", "none", "mirror_left_right")


@pytest.mark.parametrize("text", ["", "three red stars on a white background", "{Object}s in a wobble"])
def test_garbled_text_reads_as_no_factor_at_all(text):
    assert caption_factors(text) == {"layout": None, "change": None, "exception": None, "structure": None}


def test_a_garbled_phrase_leaves_the_unnamed_factors_unknown_not_none():
    text = "{Object}s in a row, growing larger step by step, and then something else"
    assert caption_factors(text) == {"layout": "row", "change": "growing", "exception": None, "structure": None}
    assert caption_relation(text) is None


def test_a_factor_named_twice_with_different_values_is_unknown():
    text = "{Object}s in a row, growing larger step by step, shrinking step by step"
    assert caption_factors(text)["change"] is None
    assert caption_factors(text)["exception"] == "none"


def test_a_caption_without_a_layout_phrase_has_no_layout_but_its_other_factors():
    text = "growing larger step by step, exactly one of them a different colour"
    assert caption_factors(text) == {"layout": None, "change": "growing", "exception": "colour", "structure": "none"}


def test_nearest_relation_is_the_most_similar_row():
    captions = np.array([[1.0, 0.0], [0.6, 0.8]])
    relations = np.array([[0.0, 1.0], [1.0, 0.0], [0.8, 0.6]])
    assert nearest_relation(captions, relations).tolist() == [1, 2]
    with pytest.raises(ValueError, match="2-d"):
        nearest_relation(captions[0], relations)


def test_a_relation_subset_spreads_over_its_split():
    from training.synthetic.relation_subset import relation_subset
    from training.synthetic.relations import relation_split

    assert relation_subset("heldout") == relation_split("heldout")
    few = relation_subset("train", 4)
    assert len(set(few)) == 4 and set(few) <= set(relation_split("train"))
    assert (few[0], few[-1]) == (relation_split("train")[0], relation_split("train")[-1])
    with pytest.raises(ValueError, match="at least 1"):
        relation_subset("train", 0)
