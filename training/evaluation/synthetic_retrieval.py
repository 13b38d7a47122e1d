"""The synthetic relational retrieval benchmark: every held-out image queries all the others."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import datasets
import torch

from training.evaluation.methods.attribute_baselines import ColourHistogramMethod, PixelCosineMethod
from training.evaluation.methods.base import EmbeddingMethod, embed_image_list
from training.evaluation.retrieval import closeness
from training.metrics import attribute_trap_rate, relational_retrieval_metrics
from training.synthetic.dataset import synthetic_dataset


logger = logging.getLogger(__name__)

TRAP_ATTRIBUTES = ("shape", "colour")
# what an image looks like, as the generator drew it; the similarity-space plot counts the ones two images share
LOOK_ATTRIBUTES = ("shape", "colour", "texture", "background")
PIXEL_COSINE = "pixel cosine"
COLOUR_HISTOGRAM = "colour histogram (objects)"


@dataclass
class BenchmarkRun:
    """The pool, each method's similarity matrix (higher is closer) and the metric table."""

    pool: datasets.Dataset
    similarities: dict[str, torch.Tensor] = field(default_factory=dict)
    table: dict[str, dict[str, float]] = field(default_factory=dict)

    def family_names(self) -> list[str]:
        """The relation family of every pool image, by name."""
        names = self.pool.features["family"].names
        return [names[family] for family in self.pool["family"]]


def attribute_baselines() -> dict[str, EmbeddingMethod]:
    """The look-matching methods relsim is compared with, under their report names."""
    return {PIXEL_COSINE: PixelCosineMethod(), COLOUR_HISTOGRAM: ColourHistogramMethod()}


def held_out_pool(num_per_family: int, seed: int, image_size: int) -> datasets.Dataset:
    """Held-out shapes and colours only, none of which training images show."""
    return synthetic_dataset(num_per_family, "heldout", seed=seed, image_size=image_size, show_progress=True)


def shared_look_attributes(pool: datasets.Dataset, query: int) -> torch.Tensor:
    """`(pool,)` how many of the generator's look attributes (shape, colour, texture, background) each image shares
    with `query`: an attribute similarity known exactly, with no model in between."""
    shared = torch.zeros(len(pool))
    for name in LOOK_ATTRIBUTES:
        values = pool[name]
        shared += torch.tensor([value == values[query] for value in values], dtype=torch.float32)
    return shared


def run_benchmark(methods: Mapping[str, EmbeddingMethod], pool: datasets.Dataset, batch_size: int = 64) -> BenchmarkRun:
    """Scores every method on the pool: recall@1/5 and mAP of the same relation family, and the attribute-trap
    rate (the nearest neighbour shares the query's shape or colour but not its relation)."""
    images = pool["image"]
    families = pool["family"]
    attributes = {name: pool[name] for name in TRAP_ATTRIBUTES}
    everyone = torch.arange(len(pool))
    run = BenchmarkRun(pool=pool)
    for name, method in methods.items():
        logger.info("embedding %d images with %s", len(images), name)
        embeddings = embed_image_list(method, images, batch_size=batch_size)
        similarity = closeness(embeddings, embeddings, method.metric)
        metrics = relational_retrieval_metrics(similarity, families, families, exclude=everyone)
        metrics["attribute trap"] = attribute_trap_rate(
            similarity, families, families, attributes, attributes, exclude=everyone
        )
        run.similarities[name] = similarity
        run.table[name] = metrics
    return run
