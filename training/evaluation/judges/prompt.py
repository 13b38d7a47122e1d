"""The judge's question (the paper's 0-10 relational-similarity rating, in our words) and a forgiving score reader."""

from __future__ import annotations

import re


PROMPT_VERSION = "relational-0-10-v1"
RELATIONAL_SIMILARITY_QUESTION = (
    "You see two images, A and B. Rate how similar they are in their relational structure: the logic, process, "
    "arrangement or relation that organises their contents (for example growth over time, a sequence from small "
    "to large, a part standing in for a whole). Ignore surface attributes: object category, colour, texture, style "
    "and viewpoint. Use 0 for no shared relational logic and 10 for the same relational logic. Reply with the score "
    "only, in the form 'Score: N'."
)

_NUMBER = r"(-?\d+(?:\.\d+)?)"
_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_EXPLICIT_PATTERNS = (
    re.compile(r"\bscore[\"']?\s*(?:is|of|[:=])?\s*" + _NUMBER),
    re.compile(_NUMBER + r"\s*(?:/|out of)\s*10(?:\.0+)?\b"),
    re.compile(r"\b(?:rating|rate it|rated)[\"']?\s*(?:is|of|as|at|[:=])?\s*" + _NUMBER),
)
_WORD_PATTERN = re.compile(r"\b(?:score|rating)[\"']?\s*(?:is|of|[:=])?\s*(" + "|".join(_WORDS) + r")\b")


def _in_range(value: float) -> float | None:
    return value if 0.0 <= value <= 10.0 else None


def parse_score(answer: str) -> float | None:
    """The 0-10 score in a judge's answer, or None when there is none or it is ambiguous.

    Reads, in this order: an explicit "Score: N" (also `"score": N` in JSON, "score is N"), "N/10" or "N out of 10",
    "rating: N", a spelled-out score ("Score: seven"), and last a lone number when the answer holds exactly one.
    Out-of-range values give None rather than a clipped number.
    """
    text = answer.lower().replace("*", "").replace("`", "")
    for pattern in _EXPLICIT_PATTERNS:
        match = pattern.search(text)
        if match:
            return _in_range(float(match.group(1)))
    match = _WORD_PATTERN.search(text)
    if match:
        return float(_WORDS[match.group(1)])
    numbers = {float(value) for value in re.findall(_NUMBER, text)}
    if len(numbers) == 1:
        return _in_range(numbers.pop())
    words = {_WORDS[word] for word in re.findall(r"\b(" + "|".join(_WORDS) + r")\b", text)}
    if not numbers and len(words) == 1:
        return float(words.pop())
    return None
