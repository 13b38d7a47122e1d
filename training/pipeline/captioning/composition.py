"""Does a captioner *compose*? On the compositional world a caption is judged three ways: written exactly, right
factor by factor (its phrases read back by `caption_factors`), and nearest (MiniLM) to the right relation's caption
among all of them. Each figure comes with its chance level, since 407 relations make "right" rare by luck."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from training.synthetic.caption_factors import caption_factors
from training.synthetic.factors import FACTORS, VALID_RELATIONS, Relation


@dataclass(frozen=True)
class CompositionScores:
    """How `count` captions of images of known relations name them.

    Attributes:
        exact: share of captions equal to their relation's caption (after trimming whitespace).
        factors: per factor, the share of captions whose phrase for it reads back as the true value.
        nearest: share of captions whose MiniLM embedding is nearest their own relation's caption among all
            `candidates` relation captions.
        chance: the same figures for a guess: exact and nearest 1 / candidates; per factor, the share of the most
            common true value (always answering it), which is at least 1 / its number of values.
    """

    count: int
    exact: float
    factors: dict[str, float]
    nearest: float
    chance: dict[str, float]
    candidates: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def composition_scores(
    captions: Sequence[str],
    relations: Sequence[Relation],
    nearest_names: Sequence[str],
    candidates: int = len(VALID_RELATIONS),
) -> CompositionScores:
    """Scores `captions` (one per image) against the `relations` their images show.

    Args:
        nearest_names: per caption, the name of the relation whose caption is nearest it (e.g. the
            `predicted_family` of `evaluate_captioner` with every relation's caption as a family).
        candidates: how many relation captions the nearest one was chosen from.

    Raises:
        ValueError: lists of different lengths, or no caption.
    """
    if not (len(captions) == len(relations) == len(nearest_names)):
        raise ValueError(
            f"got {len(captions)} captions, {len(relations)} relations and {len(nearest_names)} nearest names; "
            "give one of each per image"
        )
    if not captions:
        raise ValueError("no captions to score")
    count = len(captions)
    pairs = list(zip(captions, relations, strict=True))
    read = [(caption_factors(caption), relation) for caption, relation in pairs]
    factors = {
        factor: sum(values[factor] == getattr(relation, factor) for values, relation in read) / count
        for factor in FACTORS
    }
    chance = {"exact": 1 / candidates, "nearest": 1 / candidates}
    for factor in FACTORS:
        chance[factor] = Counter(getattr(relation, factor) for relation in relations).most_common(1)[0][1] / count
    return CompositionScores(
        count=count,
        exact=sum(caption.strip() == relation.caption for caption, relation in pairs) / count,
        factors=factors,
        nearest=sum(name == relation.name for name, relation in zip(nearest_names, relations, strict=True)) / count,
        chance=chance,
        candidates=candidates,
    )
