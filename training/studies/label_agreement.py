"""What the labels say: each annotator's current answer per image, and Cohen's kappa between annotators.

A judgement table is append-only, so an annotator who changes their mind adds a row; their current label of an image
is their latest row for it. Kappa compares two annotators on the images both have labelled (scikit-learn's
`cohen_kappa_score`), the paper's "agreement with people" check of the filter labels.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from training.studies.judgement_store import LabelJudgement


@dataclass(frozen=True)
class Agreement:
    """Two annotators' agreement over the `shared` images both labelled; `kappa` is None when undefined (no shared
    image, or both gave one single label to everything)."""

    first: str
    second: str
    shared: int
    agreed: int
    kappa: float | None


def current_labels(judgements: Sequence[LabelJudgement]) -> dict[str, dict[str, bool]]:
    """`annotator -> image -> label`, each the annotator's latest judgement of the image."""
    labels: dict[str, dict[str, bool]] = {}
    for judgement in sorted(judgements, key=lambda row: row.id):
        labels.setdefault(judgement.annotator, {})[judgement.image] = judgement.relational
    return labels


def cohen_kappa(first: dict[str, bool], second: dict[str, bool]) -> tuple[int, int, float | None]:
    """`(shared images, agreements, kappa)` of two annotators' current labels."""
    from sklearn.metrics import cohen_kappa_score

    shared = sorted(set(first) & set(second))
    if not shared:
        return 0, 0, None
    a, b = [int(first[image]) for image in shared], [int(second[image]) for image in shared]
    agreed = sum(x == y for x, y in zip(a, b, strict=True))
    if len(set(a) | set(b)) < 2:
        return len(shared), agreed, None  # one class only: chance agreement is 1 and kappa is 0/0
    return len(shared), agreed, float(cohen_kappa_score(a, b))


def pairwise_agreement(judgements: Sequence[LabelJudgement]) -> list[Agreement]:
    """Cohen's kappa for every pair of annotators (names in order)."""
    labels = current_labels(judgements)
    rows = []
    for first, second in itertools.combinations(sorted(labels), 2):
        shared, agreed, kappa = cohen_kappa(labels[first], labels[second])
        rows.append(Agreement(first, second, shared, agreed, kappa))
    return rows


def agreement_markdown(rows: Sequence[Agreement]) -> str:
    if not rows:
        return "Agreement needs two annotators who labelled the same images."
    lines = ["| annotators | shared images | agreed | Cohen's kappa |", "| --- | ---: | ---: | ---: |"]
    for row in rows:
        kappa = "undefined" if row.kappa is None else f"{row.kappa:.3f}"
        lines.append(f"| {row.first} vs {row.second} | {row.shared} | {row.agreed} | {kappa} |")
    return "\n".join(lines)
