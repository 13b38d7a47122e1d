"""The joint similarity space of one query: every other image as a point at x = how alike it looks (attribute
similarity), y = how similar each method finds it, coloured by whether it shares the query's relation. Points high
on y whatever their x are what relational similarity is for; a method whose y follows x is matching looks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from training.evaluation.reporting.colours import QUERY, RELEVANT, UNKNOWN, hex_colour


@dataclass
class SimilaritySpace:
    """The points of one query's plot.

    Attributes:
        attribute: `(points,)` x values (an attribute similarity).
        relational: method name -> `(points,)` y values; one panel per method.
        relevant: `(points,)` booleans, True where the image shares the query's relation.
        attribute_label: what x measures, for the axis.
        ticks: x positions and their names when x is a count (drawn with jitter so equal values do not hide
            each other).
        image_ids: which image each point is, when the caller needs to tell (the paper pool's hashes).
    """

    attribute: torch.Tensor
    relational: dict[str, torch.Tensor]
    relevant: torch.Tensor
    attribute_label: str
    relevant_label: str = "same relation"
    other_label: str = "other relation"
    title: str = ""
    query_image: PIL.Image.Image | None = None
    ticks: Mapping[float, str] | None = None
    image_ids: list[str] = field(default_factory=list)


def plot_similarity_space(space: SimilaritySpace, path: str | Path, jitter_seed: int = 0) -> Path:
    """Writes the plot as a PNG: the query image in the first panel, then one scatter panel per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(space.relational)
    figure, axes = plt.subplots(
        1, len(methods) + 1, figsize=(1.8 + 4.8 * len(methods), 4.4), dpi=110, squeeze=False,
        gridspec_kw={"width_ratios": [0.32] + [1.0] * len(methods)},
    )  # fmt: skip
    query_axis, panels = axes[0][0], axes[0][1:]
    query_axis.axis("off")
    if space.query_image is not None:
        query_axis.imshow(np.asarray(space.query_image.convert("RGB")))
        query_axis.axis("on")
        query_axis.set_xticks([])
        query_axis.set_yticks([])
        for spine in query_axis.spines.values():
            spine.set_edgecolor(hex_colour(QUERY))
            spine.set_linewidth(3)
        query_axis.set_title("query", fontsize=10)
    x = space.attribute.float().numpy().copy()
    if space.ticks:
        x = x + np.random.default_rng(jitter_seed).uniform(-0.28, 0.28, size=x.shape)
    relevant = space.relevant.numpy().astype(bool)
    for axis, method in zip(panels, methods, strict=True):
        y = space.relational[method].float().numpy()
        axis.scatter(x[~relevant], y[~relevant], s=9, alpha=0.45, c=hex_colour(UNKNOWN), label=space.other_label)
        axis.scatter(x[relevant], y[relevant], s=16, alpha=0.8, c=hex_colour(RELEVANT), label=space.relevant_label)
        axis.set_xlabel(space.attribute_label, fontsize=9)
        axis.set_ylabel(f"{method} similarity to the query", fontsize=9)
        axis.set_title(method, fontsize=10)
        if space.ticks:
            axis.set_xticks(list(space.ticks), list(space.ticks.values()))
        axis.legend(loc="best", fontsize=8)
        axis.grid(alpha=0.25)
    if space.title:
        figure.suptitle(space.title, fontsize=11)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
