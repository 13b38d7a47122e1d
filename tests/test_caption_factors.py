"""Reading generated captions back into the compositional world's factors (what the captioner is scored by)."""

from __future__ import annotations

import pytest

from training.synthetic.caption_factors import caption_factors, caption_relation
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
