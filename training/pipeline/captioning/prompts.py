"""The captioners' prompts, in one place and versioned: every cached caption stores the version of the prompt
that asked for it, so a changed prompt never serves captions written for the old one.

A prompt's `version` is its name, its edition and a digest of its text (`group-v1:3f2a...`): the edition is bumped
by hand when the wording changes on purpose, and the digest changes by itself when it changes by accident (or when
a recipe passes a prompt of its own), so no edit can reuse old cache rows.

The wording is our own. The official single-image captioner asks for one reusable anonymous caption that could
describe any image following the same concept, with placeholders such as {Object}, {Word}, {Character},
{Meaning} or {Color}, and nothing but the caption; `SINGLE_IMAGE_PROMPT` asks the same in other words. The released
adapter (`thaoshibe/relsim-anonymous-caption-qwen25vl-lora`) was trained with the official wording, so whoever
captions with that adapter should put the exact official prompt in the recipe's `prompt` field: an adapter answers
best to the words it was trained on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionPrompt:
    """A captioning prompt and its version.

    Args:
        name: what the prompt is for (`group`, `single-image`).
        edition: bumped by hand when the wording changes on purpose.
        text: the user turn's text, after the images; `{count}` (group prompts only) becomes the number of images.
    """

    name: str
    edition: int
    text: str

    @property
    def version(self) -> str:
        """`<name>-v<edition>:<first 12 hex of sha256(text)>`: the part of a cache key that names the prompt."""
        return f"{self.name}-v{self.edition}:{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:12]}"

    def render(self, count: int = 1) -> str:
        """The text to send with `count` images (`{count}` filled in; other braces are kept as written)."""
        return self.text.replace("{count}", str(count))


GROUP_PROMPT = CaptionPrompt(
    name="group",
    edition=1,
    text=(
        "The {count} images above were put together because one idea runs through all of them: a relation, an "
        "arrangement, a change over time, a visual pun or a way of using a word, shown each time with different "
        "things. Write one anonymous caption that is true of every one of these images. State the shared idea, "
        "and wherever a specific thing would appear, write a placeholder in curly braces instead, for example "
        "{Object}, {Word}, {Character}, {Meaning} or {Color}. Do not name anything that only some of the images "
        "show. Answer with the caption alone, in one sentence, without quotes."
    ),
)

SINGLE_IMAGE_PROMPT = CaptionPrompt(
    name="single-image",
    edition=1,
    text=(
        "Look past the particular things in this image and find the idea it is built on: a relation, an "
        "arrangement, a change, a visual pun or a play on a word that many other images could share with "
        "different content. Write one anonymous caption for that idea, general enough to be reused for every "
        "image built the same way: wherever a specific thing would appear, write a placeholder in curly braces, "
        "for example {Object}, {Word}, {Character}, {Meaning} or {Color}. Answer with the anonymous caption and "
        "nothing else."
    ),
)


def single_image_prompt(text: str | None) -> CaptionPrompt:
    """The recipe's prompt: `SINGLE_IMAGE_PROMPT` when `text` is None or its own text, else a custom prompt whose
    version is its digest (for instance the official wording, for the released adapter)."""
    if text is None or text == SINGLE_IMAGE_PROMPT.text:
        return SINGLE_IMAGE_PROMPT
    if not text.strip():
        raise ValueError("the captioning prompt is empty; leave it unset for the default or give the prompt's text")
    return CaptionPrompt(name="single-image-custom", edition=1, text=text)
