"""The text of an anonymous caption: removing the literal quotes it was stored in, and listing its placeholders.

The one home of caption normalisation: the trainer (training targets) and the Hub dataset builders (published rows)
both import it, so a caption is the same string wherever it is read. The official `seed_group.json` wraps every
caption in literal double quotes, once as `"... {Context}.".` (a period after the closing quote); captioners may
also answer with curly or single quotes, doubled quotes, or a quote on one side only. Quotes that are part of the
caption (`the word "{Word}" written in ...`) stay.
"""

from __future__ import annotations

import re


DOUBLE_QUOTES = '"\u201c\u201d\u00ab\u00bb'  # " “ ” « »
SINGLE_QUOTES = "'\u2018\u2019"  # ' ‘ ’
QUOTES = DOUBLE_QUOTES + SINGLE_QUOTES
_ONLY_OPENING = "\u201c\u00ab\u2018"
_ONLY_CLOSING = "\u201d\u00bb\u2019"
_SENTENCE_END = ".!?"
_TRAILING_PUNCTUATION = ".!?,;:"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def normalize_caption(caption: str) -> str:
    """`caption` without surrounding whitespace and the literal quotes wrapped around it.

    Repeats until nothing changes, so doubled quotes (`""..""`, `"'..'"`) go too. Punctuation written after the
    closing quote (`"...".`) moves inside unless the sentence already ends there. A quote on one side only is
    dropped when it is the caption's only double quote. Quotes inside the caption are kept; a pair is unwrapped only
    when the quotes between them pair up, so `"a" and "b"` is left as it is (and `still_quoted` reports it).
    """
    text = caption.strip()
    while True:
        unwrapped = _unwrap_once(text)
        if unwrapped == text:
            return text
        text = unwrapped


def still_quoted(caption: str) -> bool:
    """True when a (normalised) caption still begins or ends with a quote: a row for a person to look at."""
    body, _ = _split_trailing_punctuation(caption)
    return bool(body) and (body[0] in QUOTES or body[-1] in QUOTES)


def caption_placeholders(caption: str) -> list[str]:
    """The `{...}` names of an anonymous caption, in order of first use.

    Raises:
        ValueError: for an empty placeholder or braces that do not pair up.
    """
    names = _PLACEHOLDER.findall(caption)
    outside = _PLACEHOLDER.sub("", caption)
    if "{" in outside or "}" in outside:
        raise ValueError("braces do not pair up")
    if any(not name.strip() for name in names):
        raise ValueError("empty placeholder {}")
    return list(dict.fromkeys(name.strip() for name in names))


def _unwrap_once(text: str) -> str:
    body, punctuation = _split_trailing_punctuation(text)
    for family in (DOUBLE_QUOTES, SINGLE_QUOTES):
        opens = bool(body) and body[0] in family
        closes = len(body) >= 2 and body[-1] in family
        if opens and closes and _quotes_pair_up(body[1:-1], family):
            return _with_punctuation(body[1:-1].strip(), punctuation)
        # a lone single quote is more often an apostrophe ('90s, {Subject}s') than half of a wrapping pair
        if family == DOUBLE_QUOTES and opens != closes and sum(body.count(quote) for quote in family) == 1:
            return _with_punctuation((body[1:] if opens else body[:-1]).strip(), punctuation)
    return text


def _split_trailing_punctuation(text: str) -> tuple[str, str]:
    """`('"..."', '.')` for `'"...".'`: punctuation is split off only when a quote stands before it."""
    body = text.rstrip(_TRAILING_PUNCTUATION).rstrip()
    if body and body != text and body[-1] in QUOTES:
        return body, text[len(body) :].strip()
    return text, ""


def _with_punctuation(inner: str, punctuation: str) -> str:
    if not punctuation or not inner or inner[-1] in _SENTENCE_END:
        return inner
    return inner + punctuation


def _quotes_pair_up(inner: str, family: str) -> bool:
    """Whether the quotes of `family` inside a wrapped caption open and close in order (apostrophes ignored).

    A straight quote opens after whitespace, an opening bracket or at the start, and closes anywhere else.
    """
    depth = 0
    for index, character in enumerate(inner):
        if character not in family:
            continue
        before = inner[index - 1] if index else ""
        after = inner[index + 1] if index + 1 < len(inner) else ""
        if family == SINGLE_QUOTES and (before.isalnum() or before == "}") and after.isalpha():
            continue  # an apostrophe: {Subject}'s, don't
        if character in _ONLY_OPENING:
            opening = True
        elif character in _ONLY_CLOSING:
            opening = False
        else:
            opening = not before or before.isspace() or before in "([{"
        depth += 1 if opening else -1
        if depth < 0:
            return False
    return depth == 0
