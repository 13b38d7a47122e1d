"""The compositional relational world: a relation is one value of each of four independent factors.

Each factor value carries its own phrase, and a relation's anonymous caption is those phrases in a fixed order, so
a model that learnt the phrases could name a combination it never saw. Some combinations cannot be drawn so that
the relation stays true and legible; `invalid_reason` says which and why, and `VALID_RELATIONS` lists the others.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass


# Each factor: value -> phrase. {Object} and {Shape} stay placeholders, as in the eight families' captions.
LAYOUTS = {
    "row": "{Object}s in a row",
    "column": "{Object}s in a column",
    "diagonal": "{Object}s along a diagonal",
    "ring": "{Object}s spaced evenly around a ring",
    "grid": "a grid of {Object}s",
    "outline": "small {Object}s tracing the outline of a large {Shape}",
    "tower": "{Object}s stacked into a tower",
    "panels": "panels each holding {Object}s",
    "scattered": "{Object}s scattered freely",
}
CHANGES = {
    "none": "",
    "growing": ", growing larger step by step",
    "shrinking": ", shrinking step by step",
    "turning": ", turning a little further at each step",
    "darker": ", getting darker step by step",
    "one_more": ", one more {Object} in each panel than in the last",
    "alternating": ", alternating between two kinds",
}
EXCEPTIONS = {
    "none": "",
    "colour": ", exactly one of them a different colour",
    "shape": ", exactly one of them a different shape",
    "size": ", exactly one of them a different size",
    "orientation": ", exactly one of them turned differently",
    "missing": ", with one missing from the pattern",
}
STRUCTURES = {
    "none": "",
    "mirror_left_right": ", mirrored exactly across a vertical axis",
    "mirror_top_bottom": ", mirrored exactly across a horizontal axis",
    "nested": ", each nested inside larger copies of itself",
    "pairs": ", each one a pair side by side",
}
FACTORS = {"layout": LAYOUTS, "change": CHANGES, "exception": EXCEPTIONS, "structure": STRUCTURES}

# Objects along an outline or a ring are small: too small to turn, pair or nest legibly at 112 pixels.
SMALL_OBJECT_LAYOUTS = ("outline", "ring")
# Mirroring a whole ring, outline or row of panels gives back the same picture or breaks its reading order.
UNMIRRORED_LAYOUTS = ("ring", "outline", "panels")
MIRRORS = ("mirror_left_right", "mirror_top_bottom")
# A change that already varies the property an exception would single out hides the exception.
CLASHES = {("growing", "size"), ("shrinking", "size"), ("turning", "orientation"), ("darker", "colour")}
CLASHES |= {("alternating", "shape"), ("one_more", "missing")}


@dataclass(frozen=True, order=True)
class Relation:
    """One combination of factor values; `name` is its stable id, e.g. `row/growing/none/none`."""

    layout: str
    change: str
    exception: str
    structure: str

    @property
    def name(self) -> str:
        return f"{self.layout}/{self.change}/{self.exception}/{self.structure}"

    @property
    def caption(self) -> str:
        """The factors' phrases in a fixed order: the same relation always gets the same caption."""
        return LAYOUTS[self.layout] + CHANGES[self.change] + EXCEPTIONS[self.exception] + STRUCTURES[self.structure]

    @classmethod
    def from_name(cls, name: str) -> Relation:
        parts = name.split("/")
        if len(parts) != 4:
            raise ValueError(f"a relation name is layout/change/exception/structure, got {name!r}")
        return cls(*parts)


def invalid_reason(relation: Relation) -> str | None:
    """Why `relation` cannot be drawn truthfully, or None when it can. Unknown factor values are a ValueError."""
    for factor, values in FACTORS.items():
        value = getattr(relation, factor)
        if value not in values:
            raise ValueError(f"unknown {factor} {value!r}; choose from {tuple(values)}")
    layout, change, exception, structure = relation.layout, relation.change, relation.exception, relation.structure
    if change == "one_more" and layout != "panels":
        return "'one more each step' needs panels: counts are only readable as separate groups"
    if layout == "scattered" and change != "none":
        return "scattered objects have no order for a change to follow"
    if layout == "scattered" and exception == "missing":
        return "nothing can be missing from a scatter: it has no pattern with gaps"
    if layout == "scattered" and exception == "none" and structure == "none":
        return "a plain scatter has no relation to learn"
    if (change, exception) in CLASHES:
        return f"the change '{change}' already varies what the exception '{exception}' would single out"
    if layout == "outline" and change not in ("none", "alternating"):
        return "an outline has too many small objects for a step-by-step change to show at each step"
    if layout == "grid" and change not in ("none", "alternating"):
        return "a grid has no single line for a step-by-step change to follow"
    if layout in SMALL_OBJECT_LAYOUTS and (change == "turning" or exception == "orientation"):
        return f"objects along a {layout} are too small to show their orientation"
    if layout in SMALL_OBJECT_LAYOUTS and structure in ("nested", "pairs"):
        return f"objects along a {layout} are too small to nest or pair"
    if structure in ("nested", "pairs") and (change in ("growing", "shrinking", "one_more") or exception == "size"):
        return f"{structure} copies need every object large: smaller or stacked ones would be illegible"
    if structure == "nested" and {change, exception} in ({"turning", "shape"}, {"alternating", "orientation"}):
        return "the held-out looks have one shape that both turns visibly and nests (a cross): no second kind"
    if layout == "grid" and structure in ("nested", "pairs"):
        return "grid cells are too small to nest or pair objects"
    if structure in MIRRORS and layout in UNMIRRORED_LAYOUTS:
        return f"mirroring a {layout} gives back the same picture or breaks its reading order"
    if structure in MIRRORS and exception != "none":
        return "a mirror image would repeat the exception, so it would no longer be exactly one"
    if layout == "tower" and structure == "mirror_top_bottom":
        return "a tower stands on the ground: upside down it no longer stands"
    if layout == "tower" and exception == "missing":
        return "a tower with a missing object would leave the ones above it floating"
    return None


def check_valid(relation: Relation) -> Relation:
    """`relation` itself, or a ValueError naming the relation and why it cannot be drawn."""
    reason = invalid_reason(relation)
    if reason is not None:
        raise ValueError(f"relation {relation.name} is not valid: {reason}")
    return relation


ALL_COMBINATIONS = tuple(Relation(*values) for values in itertools.product(*(tuple(v) for v in FACTORS.values())))
VALID_RELATIONS = tuple(relation for relation in ALL_COMBINATIONS if invalid_reason(relation) is None)
VALID_NAMES = tuple(relation.name for relation in VALID_RELATIONS)

# The eight families of `families.py` as combinations of this world. progression may run vertically (then it is
# the column), odd_one_out singles out shape or colour (both listed); nesting's single object is the one-item
# scatter and mirror_symmetry's scatter is mirrored, so both map onto the scattered layout.
FAMILY_RELATIONS = {
    "progression": (Relation("row", "growing", "none", "none"), Relation("column", "growing", "none", "none")),
    "odd_one_out": (Relation("grid", "none", "shape", "none"), Relation("grid", "none", "colour", "none")),
    "mirror_symmetry": (Relation("scattered", "none", "none", "mirror_left_right"),),
    "nesting": (Relation("scattered", "none", "none", "nested"),),
    "mosaic": (Relation("outline", "none", "none", "none"),),
    "counting": (Relation("panels", "one_more", "none", "none"),),
    "radial": (Relation("ring", "none", "none", "none"),),
    "stacking": (Relation("tower", "none", "none", "none"),),
}
