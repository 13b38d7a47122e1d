"""Conceptual distance by description length: how far apart two images are, measured by how well short, then longer,
descriptions of one explain the other.

For images A and B and a description budget L (in tokens), descriptions h are sampled from a describer shown A
(h ~ q_A, at most L tokens) and scored by their teacher-forced log-likelihood under each image:

    d_L(A, B) = 1/2 [ mean_{h ~ q_A} (log p(h | A) - log p(h | B)) + mean_{h ~ q_B} (log p(h | B) - log p(h | A)) ]

Short descriptions say only what is most salient, so images that share their gist stay close at small L and drift
apart as L grows and the descriptions turn specific. The distance is the area under d_L over the length grid
(trapezoid rule), and the curve is kept: it says at which level of detail two images part ways. This follows the
complexity-constrained description distance of CC:DAE (CVPR 2024), written with the likelihood of the description
under each image instead of that of the image under each description.

This module holds the arithmetic only; `conceptual_distance_runner` supplies sampled descriptions and scores from a
chat model, batched and cached.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import trapezoid


# describe(image, length) -> the descriptions of `image` sampled at `length` (any hashable handles)
Describe = Callable[[Hashable, int], Sequence[Hashable]]
# score(description, image) -> log p(description | image)
Score = Callable[[Hashable, Hashable], float]


@dataclass(frozen=True)
class PairDistance:
    """The conceptual distance of one image pair.

    Attributes:
        lengths: the description budgets, in tokens, increasing.
        curve: d_L at each length (same order).
        area: the trapezoid area under `curve` over `lengths`.
        halves: per length, (mean gap over descriptions of A, mean gap over descriptions of B): each half of d_L.
    """

    lengths: tuple[int, ...]
    curve: tuple[float, ...]
    area: float
    halves: tuple[tuple[float, float], ...]

    def as_dict(self) -> dict:
        return {"lengths": list(self.lengths), "curve": list(self.curve), "area": self.area,
                "halves": [list(half) for half in self.halves]}  # fmt: skip


def check_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
    """The length grid as a tuple; it must be strictly increasing positive token budgets."""
    lengths = tuple(int(length) for length in lengths)
    if not lengths or lengths[0] < 1 or any(b <= a for a, b in itertools.pairwise(lengths)):
        raise ValueError(f"description lengths must be strictly increasing positive token budgets, got {list(lengths)}")
    return lengths


def explanation_gap(descriptions: Sequence[Hashable], own: Hashable, other: Hashable, score: Score) -> float:
    """mean over `descriptions` of log p(h | own) - log p(h | other): how much better the image they were written
    for explains them."""
    if not descriptions:
        raise ValueError(f"no descriptions of image {own!r} to score")
    return float(np.mean([score(h, own) - score(h, other) for h in descriptions]))


def pair_distance(a: Hashable, b: Hashable, lengths: Sequence[int], describe: Describe, score: Score) -> PairDistance:
    """d_L(a, b) at every length of the grid and the area under it (see the module docstring)."""
    lengths = check_lengths(lengths)
    halves = tuple(
        (explanation_gap(describe(a, length), a, b, score), explanation_gap(describe(b, length), b, a, score))
        for length in lengths
    )
    curve = tuple(0.5 * (from_a + from_b) for from_a, from_b in halves)
    return PairDistance(lengths, curve, area_under_curve(lengths, curve), halves)


def area_under_curve(lengths: Sequence[int], curve: Sequence[float]) -> float:
    """The trapezoid area under `curve` over `lengths`; a single length has no width, so its area is its value."""
    if len(lengths) != len(curve):
        raise ValueError(f"{len(curve)} curve values for {len(lengths)} lengths")
    if len(lengths) == 1:
        return float(curve[0])
    return float(trapezoid(np.asarray(curve, dtype=np.float64), np.asarray(lengths, dtype=np.float64)))
