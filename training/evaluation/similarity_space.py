"""The joint similarity space: one query against a few thousand images, relational similarity (relsim) against
attribute similarity (an image encoder such as CLIP-I or DINO). Images high on one axis and low on the other are
where the two notions of similarity part ways."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import closeness


def similarity_space(
    relational: EmbeddingCache,
    attribute: EmbeddingCache,
    items: dict[str, PoolItem],
    query: str,
    points: int = 3000,
    seed: int = 0,
) -> dict[str, torch.Tensor | list[str]]:
    """Both similarities of `query` to up to `points` other images embedded by both methods (seeded sample)."""
    shared = sorted(h for h in items if h in relational and h in attribute and h != query)
    if query not in relational or query not in attribute:
        raise KeyError(f"query {query} is not embedded by both methods")
    sample = random.Random(seed).sample(shared, min(points, len(shared)))
    axes = {}
    for name, cache in (("relational", relational), ("attribute", attribute)):
        _, query_vector = cache.load([query])
        _, vectors = cache.load(sample)
        axes[name] = closeness(query_vector, vectors, cache.metric)[0]
    same_group = torch.tensor(
        [items[h].group_id is not None and items[h].group_id == items[query].group_id for h in sample]
    )
    return {"image_hashes": sample, **axes, "same_group": same_group}


def plot_similarity_space(space: dict, output: str | Path, relational_name: str, attribute_name: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 5), dpi=150)
    same = space["same_group"]
    axis.scatter(space["attribute"][~same], space["relational"][~same], s=4, alpha=0.35, c="tab:gray", label="pool")
    if same.any():
        axis.scatter(space["attribute"][same], space["relational"][same], s=24, c="tab:red", label="same seed group")
    axis.set_xlabel(f"attribute similarity ({attribute_name})")
    axis.set_ylabel(f"relational similarity ({relational_name})")
    axis.set_title(f"one query against {len(space['image_hashes'])} images")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output)
    plt.close(figure)
    return output
