"""Literal descriptions of synthetic images, written from what the generator knows it drew.

A literal description names the objects ("three teal stars in a row, growing, on a cream background"), which an
anonymous caption must not. They stand in for a literal captioner offline: the leak checker compares a caption's
words with them, and studies can contrast literal and anonymous text on the same images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen".split()  # noqa: SIM905
_TEXTURE_WORDS = {"solid": "", "outline": "outlined ", "striped": "striped "}


def number_word(count: int) -> str:
    """`count` spelled out up to fourteen (the most objects a synthetic family draws), digits beyond."""
    return _NUMBER_WORDS[count] if 0 <= count < len(_NUMBER_WORDS) else str(count)


def plural(noun: str) -> str:
    """The plural of a shape name (`cross` -> `crosses`, `star` -> `stars`)."""
    return noun + "es" if noun.endswith(("s", "x", "ch", "sh")) else noun + "s"


def with_article(phrase: str) -> str:
    """`phrase` after "a" or "an", by its first letter (enough for the generator's words)."""
    return f"{'an' if phrase[:1] in 'aeiou' else 'a'} {phrase}"


def literal_description(example: Mapping[str, Any]) -> str:
    """A literal, object-naming sentence for a synthetic example (a relation family's or a negative).

    Args:
        example: a dict from `synthetic_examples` (with `family`), `relation_examples` (with `relation`) or
            `negative_examples` (with `kind`), carrying `shape`, `colour`, `texture`, `background` and `metadata`.

    Raises:
        ValueError: when the example names neither a known family, a relation nor a known negative kind.
    """
    if "family" in example:
        subject = _family_subject(example)
        return f"{subject} on a {example['background']} background"
    if "relation" in example:
        return f"{_relation_subject(example)} on a {example['background']} background"
    if "kind" in example:
        return _negative_description(example)
    raise ValueError(f"a synthetic example needs a 'family', 'relation' or 'kind' key, got keys {sorted(example)}")


def _objects(example: Mapping[str, Any], count: int, size: str = "") -> str:
    """`"three striped teal stars"`: count, texture, colour and shape of a family's shared style."""
    texture = example["texture"]
    if example["family"] == "nesting" and texture == "striped":
        texture = "outline"  # the nesting family draws striped styles as outlines
    look = f"{size}{_TEXTURE_WORDS.get(texture, '')}{example['colour']}"
    return f"{number_word(count)} {look} {plural(example['shape'])}"


def _family_subject(example: Mapping[str, Any]) -> str:
    family, metadata = example["family"], example["metadata"]
    if family == "progression":
        radii = metadata["radii"]
        line = "column" if metadata["vertical"] else "row"
        return f"{_objects(example, len(radii))} in a {line}, {'growing' if radii[0] < radii[-1] else 'shrinking'},"
    if family == "odd_one_out":
        side, odd_value = metadata["side"], metadata["odd_value"]
        odd = (
            f"{example['colour']} {odd_value}" if metadata["odd_kind"] == "shape" else f"{odd_value} {example['shape']}"
        )
        cells = f"{example['colour']} {plural(example['shape'])}"
        return f"a {number_word(side)} by {number_word(side)} grid of {cells} with one {odd}"
    if family in _ARRANGED:
        count, arrangement = _ARRANGED[family]
        return f"{_objects(example, count(metadata))}{arrangement}"
    if family == "mosaic":
        return f"{_objects(example, metadata['count'], 'small ')} along the outline of a large {metadata['outline']}"
    if family == "counting":
        return f"three panels with one, two and three {example['colour']} {plural(example['shape'])}"
    raise ValueError(f"no literal description for family {family!r}")


def _relation_subject(example: Mapping[str, Any]) -> str:
    """`"six striped teal stars and a heart"`: the compositional world's objects by their shared look, and any other
    shape an exception drew (what a leak check must catch; the arrangement itself is left to the caption)."""
    shapes = [item["shape"] for item in example["metadata"]["objects"]]
    look = f"{_TEXTURE_WORDS.get(example['texture'], '')}{example['colour']}"
    others = [with_article(shape) for shape in dict.fromkeys(shapes) if shape != example["shape"]]
    main = f"{number_word(shapes.count(example['shape']))} {look} {plural(example['shape'])}"
    return " and ".join([main, *others])


# families described as "<count> <look> <shapes><arrangement>": how many objects the metadata draws, and the words after
_ARRANGED: dict[str, tuple[Callable[[Mapping[str, Any]], int], str]] = {
    "mirror_symmetry": (lambda metadata: 2 * metadata["count"], " mirrored left to right"),
    "nesting": (lambda metadata: len(metadata["radii"]), ", one inside another,"),
    "radial": (lambda metadata: metadata["count"], " in a ring"),
    "stacking": (lambda metadata: metadata["count"], " stacked in a tower"),
}


def _negative_description(example: Mapping[str, Any]) -> str:
    kind, metadata = example["kind"], example["metadata"]
    background = f"{'textured ' if metadata['textured_background'] else ''}{example['background']} background"
    if kind == "plain_object":
        (item,) = metadata["objects"]
        look = f"{_TEXTURE_WORDS.get(item['texture'], '')}{item['colour']}"
        return f"a single {look} {item['shape']} on {with_article(background)}"
    if kind == "scatter":
        radii = [item["radius"] for item in metadata["objects"]]
        parts = []
        for item in metadata["objects"]:
            size = "small " if item["radius"] == min(radii) else "large " if item["radius"] == max(radii) else ""
            parts.append(
                with_article(f"{size}{_TEXTURE_WORDS.get(item['texture'], '')}{item['colour']} {item['shape']}")
            )
        return f"{', '.join(parts[:-1])} and {parts[-1]} scattered on {with_article(background)}"
    if kind == "empty_background":
        return f"an empty {example['background']} background with a faint texture"
    raise ValueError(f"no literal description for negative kind {kind!r}")
