"""The one home of relsim's retrieval metrics: recall@k, average precision, MRR and the attribute trap.

Every caller uses these: the trainer's held-out caption retrieval, the synthetic benchmark, the paper evaluation's
judge-free metrics and the `evaluate` module (`training/evaluation/relational_retrieval`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch


if TYPE_CHECKING:
    from transformers import EvalPrediction


def caption_retrieval_metrics(
    image_embeds: torch.Tensor, caption_ids: torch.Tensor, caption_embeds: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Recall@k of retrieving each image's caption among the set's unique captions.

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings.
        caption_ids: `(n,)` caption identity of each image.
        caption_embeds: `(n, d)` embedding of each image's caption.
    """
    unique_ids, column_of_sample = torch.unique(caption_ids, return_inverse=True)
    unique_embeds = torch.zeros(unique_ids.shape[0], caption_embeds.shape[1], dtype=caption_embeds.dtype)
    unique_embeds = unique_embeds.index_copy(0, column_of_sample, caption_embeds)
    scores = image_embeds.float() @ unique_embeds.float().T
    own_score = scores.gather(1, column_of_sample[:, None])
    rank = (scores > own_score).sum(-1)
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def retrieval_compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer.compute_metrics` for relsim: predictions are image embeddings, labels `(caption_ids, embeds)`."""
    caption_ids, caption_embeds = prediction.label_ids
    return caption_retrieval_metrics(
        torch.as_tensor(np.asarray(prediction.predictions)),
        torch.as_tensor(np.asarray(caption_ids)),
        torch.as_tensor(np.asarray(caption_embeds)),
    )


def ranked_pool(similarity: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool indices by decreasing similarity for every query, and which ranked positions are valid.

    Args:
        similarity: `(queries, pool)`.
        exclude: `(queries,)` pool index to leave out of each query's ranking (the query itself), or -1.

    Returns:
        `order` `(queries, pool)` and `valid` `(queries, pool)`; an excluded item is ranked last and marked invalid.
    """
    scores = similarity.float().clone()
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        excluded[rows, exclude[rows]] = True
    scores[excluded] = float("-inf")
    order = torch.argsort(-scores, dim=1, stable=True)
    return order, ~excluded.gather(1, order)


def _as_tensor(labels: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels
    array = np.asarray(labels)
    if array.dtype.kind in "OUS":
        _, array = np.unique(array, return_inverse=True)
    return torch.as_tensor(array)


def relational_retrieval_metrics(
    similarity: torch.Tensor,
    query_labels: Sequence | torch.Tensor,
    pool_labels: Sequence | torch.Tensor,
    exclude: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """recall@k (a same-label item within the top k) and mean average precision of same-label retrieval."""
    query_labels, pool_labels = _encode_together(query_labels, pool_labels)
    order, valid = ranked_pool(similarity, exclude)
    relevant = (pool_labels[order] == query_labels[:, None]) & valid
    metrics = {f"recall@{k}": float(relevant[:, :k].any(1).float().mean()) for k in ks}
    hits = relevant.float()
    precision_at_hits = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, dtype=torch.float32)
    relevant_count = hits.sum(1)
    average_precision = (precision_at_hits * hits).sum(1) / relevant_count.clamp(min=1)
    metrics["mAP"] = float(average_precision[relevant_count > 0].mean()) if (relevant_count > 0).any() else 0.0
    return metrics


def attribute_trap_rate(
    similarity: torch.Tensor,
    query_labels: Sequence | torch.Tensor,
    pool_labels: Sequence | torch.Tensor,
    query_attributes: Mapping[str, Sequence],
    pool_attributes: Mapping[str, Sequence],
    exclude: torch.Tensor | None = None,
) -> float:
    """Fraction of queries whose nearest neighbour shares any listed attribute (e.g. shape or colour) with the query
    but not its label: retrieval fooled by looks."""
    query_labels, pool_labels = _encode_together(query_labels, pool_labels)
    order, _ = ranked_pool(similarity, exclude)
    top = order[:, 0]
    shares_attribute = torch.zeros_like(top, dtype=torch.bool)
    for name, values in query_attributes.items():
        query_values, pool_values = _encode_together(values, pool_attributes[name])
        shares_attribute |= pool_values[top] == query_values
    return float((shares_attribute & (pool_labels[top] != query_labels)).float().mean())


def _encode_together(
    first: Sequence | torch.Tensor, second: Sequence | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two label lists as integer tensors in one shared code (strings become the same ids on both sides)."""
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return first, second
    combined = _as_tensor(list(np.asarray(first)) + list(np.asarray(second)))
    return combined[: len(first)], combined[len(first) :]
