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
        exclude: what to leave out of each query's ranking: `(queries,)` one pool index per query (the query
            itself) or -1, or a `(queries, pool)` boolean mask (e.g. exact duplicates of the query).

    Returns:
        `order` `(queries, pool)` and `valid` `(queries, pool)`; excluded items are ranked last and marked invalid.
    """
    scores = similarity.float().clone()
    excluded = torch.zeros_like(scores, dtype=torch.bool)
    if exclude is not None and exclude.dtype == torch.bool:
        excluded |= exclude
    elif exclude is not None:
        rows = torch.nonzero(exclude >= 0).flatten()
        excluded[rows, exclude[rows]] = True
    scores[excluded] = float("-inf")
    order = torch.argsort(-scores, dim=1, stable=True)
    return order, ~excluded.gather(1, order)


def ranked_hits(similarity: torch.Tensor, relevant: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """`(queries, pool)` booleans in rank order: True where the item at that rank is relevant (never an excluded one).

    Args:
        similarity: `(queries, pool)`, higher is closer.
        relevant: `(queries, pool)` booleans.
        exclude: as in `ranked_pool`.
    """
    order, valid = ranked_pool(similarity, exclude)
    return relevant.gather(1, order) & valid


def average_precision(hits: torch.Tensor, relevant_count: torch.Tensor | None = None) -> torch.Tensor:
    """Average precision of each ranking: the precision at every relevant hit, summed, over the number of relevant
    items. The one AP formula of the project (the tensor metrics, ranked id lists and the paper's judge-free mAP).

    Args:
        hits: `(queries, ranked)` booleans in rank order.
        relevant_count: `(queries,)` how many relevant items each query has. Default: its hits, right for a ranking
            of the whole pool; a larger count (a truncated list) counts the relevant items it misses as misses.

    Returns:
        `(queries,)` float32; NaN for a query with nothing relevant.
    """
    hits = hits.float()
    precision = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1, dtype=torch.float32)
    count = hits.sum(1) if relevant_count is None else relevant_count.float()
    return torch.where(count > 0, (precision * hits).sum(1) / count.clamp(min=1), torch.nan)


def recall_at_k(hits: torch.Tensor, k: int) -> torch.Tensor:
    """`(queries,)` 1.0 where a relevant item is within the first `k` ranks of `hits` `(queries, ranked)`."""
    return hits[:, :k].any(1).float()


def reciprocal_rank(hits: torch.Tensor) -> torch.Tensor:
    """`(queries,)` 1 / rank of the first relevant item, 0.0 where there is none."""
    first = hits.float().argmax(1)
    return torch.where(hits.any(1), 1.0 / (first + 1).float(), 0.0)


def relational_retrieval_metrics(
    similarity: torch.Tensor,
    query_labels: Sequence | torch.Tensor,
    pool_labels: Sequence | torch.Tensor,
    exclude: torch.Tensor | None = None,
    ks: Sequence[int] = (1, 5),
) -> dict[str, float]:
    """recall@k (a same-label item within the top k, over all queries) and mean average precision of same-label
    retrieval (over the queries that have a same-label item)."""
    query_labels, pool_labels = _encode_together(query_labels, pool_labels)
    hits = ranked_hits(similarity, pool_labels[None, :] == query_labels[:, None], exclude)
    metrics = {f"recall@{k}": float(recall_at_k(hits, k).mean()) for k in ks}
    precision = average_precision(hits)
    answered = ~torch.isnan(precision)
    metrics["mAP"] = float(precision[answered].mean()) if answered.any() else 0.0
    return metrics


def ranked_list_metrics(
    predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """recall@k, MRR and mAP of ranked id lists against the ids relevant to each query (what the `evaluate` module
    `training/evaluation/relational_retrieval` computes).

    Args:
        predictions: per query, the retrieved ids, best first (the query itself already removed); an id repeated
            later in a list counts once, at its first rank.
        references: per query, the relevant ids. A relevant id missing from a (truncated) list counts as a miss.

    Raises:
        ValueError: no queries, lists of different lengths, or a query with no relevant id.
    """
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no queries to score")
    width = max(1, *(len(ranked) for ranked in predictions))
    rows, counts = [], []
    for number, (ranked, relevant_ids) in enumerate(zip(predictions, references, strict=True)):
        relevant = set(relevant_ids)
        if not relevant:
            raise ValueError(f"query {number} has no relevant id in references")
        first_ranks = {found: rank for rank, found in reversed(list(enumerate(ranked)))}
        rows.append([found in relevant and first_ranks[found] == rank for rank, found in enumerate(ranked)])
        rows[-1] += [False] * (width - len(ranked))
        counts.append(len(relevant))
    hits, relevant_count = torch.tensor(rows, dtype=torch.bool), torch.tensor(counts)
    metrics = {f"recall@{k}": float(recall_at_k(hits, k).mean()) for k in ks}
    metrics["mrr"] = float(reciprocal_rank(hits).mean())
    metrics["mAP"] = float(average_precision(hits, relevant_count).mean())
    metrics["queries"] = len(predictions)
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


def _as_tensor(labels: Sequence | np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels
    array = np.asarray(labels)
    if array.dtype.kind in "OUS":
        _, array = np.unique(array, return_inverse=True)
    return torch.as_tensor(array)


def _encode_together(
    first: Sequence | torch.Tensor, second: Sequence | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two label lists as integer tensors in one shared code (strings become the same ids on both sides)."""
    if isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor):
        return first, second
    combined = _as_tensor(list(np.asarray(first)) + list(np.asarray(second)))
    return combined[: len(first)], combined[len(first) :]
