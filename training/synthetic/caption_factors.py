"""Reading a caption of the compositional world back into its factor values.

A generated caption is judged per factor (did the captioner get the layout right, the change, ...), so its phrases
are looked up in the factor tables of `factors.py`. A caption is its layout phrase followed by comma-led phrases,
none of which holds a comma itself, so it splits into segments and each segment names at most one factor value
(in any order: a captioner that swaps two phrases still said both).
The empty phrase ("none") cannot be seen, only inferred: a factor is "none" when no segment names it *and* every
segment was recognised; when some segment is garbled it might have been that factor's phrase, so the factor is
unknown (None) rather than "none".
"""

from __future__ import annotations

import re

from training.synthetic.factors import FACTORS, Relation


NO_VALUE = "none"
# trailing punctuation and the spacing slips a captioner makes, removed before phrases are compared
_TRAILING = re.compile(r"[\s.!;:,]+$")
_SPACES = re.compile(r"\s+")


def _normalised(text: str) -> str:
    return _SPACES.sub(" ", _TRAILING.sub("", text)).strip().lower()


def _segments(text: str) -> list[str]:
    return [_normalised(segment) for segment in _normalised(text).split(",")]


# normalised phrase -> (factor, value), for every non-empty phrase of every factor
_PHRASES = {
    _normalised(phrase.lstrip(", ")): (factor, value)
    for factor, table in FACTORS.items()
    for value, phrase in table.items()
    if phrase
}


def caption_factors(text: str) -> dict[str, str | None]:
    """The factor values `text` names, each None where the caption does not say it recognisably.

    Case, repeated whitespace, spaces around commas and trailing punctuation are forgiven; the phrases may come in
    any order. A factor named twice with different values is None.

    Returns:
        `{"layout": ..., "change": ..., "exception": ..., "structure": ...}`.
    """
    segments = _segments(text)
    found: dict[str, str | None] = {}
    recognised = True
    for segment in segments:
        factor, value = _PHRASES.get(segment, (None, None))
        if factor is None:
            recognised = False
            continue
        found[factor] = value if found.get(factor, value) == value else None
    absent = NO_VALUE if recognised else None
    return {factor: found.get(factor, None if factor == "layout" else absent) for factor in FACTORS}


def caption_relation(text: str) -> Relation | None:
    """The relation `text` names when every factor is read (the combination may still be invalid), else None."""
    values = caption_factors(text)
    if any(value is None for value in values.values()):
        return None
    return Relation(**values)
