"""The synthetic relational retrieval benchmark: every held-out image queries all the others."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import datasets
import torch

from training.evaluation.methods.attribute_baselines import Embedder
from training.metrics import attribute_trap_rate, relational_retrieval_metrics
from training.synthetic import synthetic_dataset


logger = logging.getLogger(__name__)

TRAP_ATTRIBUTES = ("shape", "colour")


@dataclass
class BenchmarkRun:
    """The pool, each method's similarity matrix and the metric table."""

    pool: datasets.Dataset
    similarities: dict[str, torch.Tensor] = field(default_factory=dict)
    table: dict[str, dict[str, float]] = field(default_factory=dict)


def held_out_pool(num_per_family: int, seed: int, image_size: int) -> datasets.Dataset:
    """Held-out shapes and colours only, none of which training images show."""
    return synthetic_dataset(num_per_family, "heldout", seed=seed, image_size=image_size, show_progress=True)


def run_benchmark(embedders: Mapping[str, Embedder], pool: datasets.Dataset) -> BenchmarkRun:
    """Scores every method on the pool: recall@1/5 and mAP of the same relation family, and the attribute-trap
    rate (the nearest neighbour shares the query's shape or colour but not its relation)."""
    images = pool["image"]
    families = pool["family"]
    attributes = {name: pool[name] for name in TRAP_ATTRIBUTES}
    everyone = torch.arange(len(pool))
    run = BenchmarkRun(pool=pool)
    for name, embed in embedders.items():
        logger.info("embedding %d images with %s", len(images), name)
        embeddings = embed(images)
        similarity = embeddings @ embeddings.T
        metrics = relational_retrieval_metrics(similarity, families, families, exclude=everyone)
        metrics["attribute trap"] = attribute_trap_rate(
            similarity, families, families, attributes, attributes, exclude=everyone
        )
        run.similarities[name] = similarity
        run.table[name] = metrics
    return run
