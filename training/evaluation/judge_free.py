"""Metrics that need no judge: exact ground truth from the seed groups, and agreement of anonymous captions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import Retrieval, closeness
from training.metrics import average_precision, ranked_hits, recall_at_k


def seed_group_map(cache: EmbeddingCache, items: Sequence[PoolItem], chunk_size: int = 256) -> dict[str, float]:
    """Every seed-group image queries the whole pool; the other images of its group are the relevant set.

    The query and exact duplicates of it are left out, as in retrieval. Returns `seed_group_mAP`, its recall@1 and
    the number of queries (groups whose other images all failed to download give no query).
    """
    embedded = [item for item in items if item.image_hash in cache]
    digests = cache.content_digests
    pool_hashes, pool = cache.load([item.image_hash for item in embedded])
    groups = torch.tensor([-1 if item.group_id is None else item.group_id for item in embedded])
    codes = {digest: code for code, digest in enumerate(sorted({digests[h] for h in pool_hashes}))}
    pool_codes = torch.tensor([codes[digests[h]] for h in pool_hashes])
    query_rows = torch.nonzero(groups >= 0).flatten()
    precisions, first_hits = [], []
    for start in range(0, len(query_rows), chunk_size):
        rows = query_rows[start : start + chunk_size]
        duplicates = pool_codes[rows][:, None] == pool_codes[None, :]
        relevant = groups[rows][:, None] == groups[None, :]
        hits = ranked_hits(closeness(pool[rows], pool, cache.metric), relevant, exclude=duplicates)
        precisions.append(average_precision(hits))
        first_hits.append(recall_at_k(hits, 1))
    if not precisions:
        raise ValueError("the pool has no image with a group_id: seed-group mAP needs the seed-group images")
    precision = torch.cat(precisions)
    answered = ~torch.isnan(precision)
    return {
        "seed_group_mAP": float(precision[answered].mean()) if answered.any() else 0.0,
        "seed_group_recall@1": float(torch.cat(first_hits)[answered].mean()) if answered.any() else 0.0,
        "seed_group_queries": int(answered.sum()),
    }


def caption_agreement(
    retrievals: Sequence[Retrieval], items: dict[str, PoolItem], text_encoder, top: int = 1
) -> dict[str, float]:
    """Mean all-MiniLM cosine between the query's anonymous caption and each of its first `top` neighbours'.

    A neighbour without a caption (a random distractor: it was never found to share any logic) counts as 0, so the
    number rewards retrieving captioned test images with the same logic; `caption_coverage` says how often the
    neighbour had a caption at all.

    Args:
        text_encoder: a sentence-transformers model (all-MiniLM-L6-v2 in the paper's setting).
    """
    pairs = [
        (items[retrieval.query].caption, items[neighbour].caption)
        for retrieval in retrievals
        if items[retrieval.query].caption is not None
        for neighbour in retrieval.neighbours[:top]
    ]
    if not pairs:
        raise ValueError("no query has an anonymous caption: caption agreement needs the captioned test split")
    captions = sorted({caption for pair in pairs for caption in pair if caption is not None})
    vectors = text_encoder.encode(captions, convert_to_tensor=True, normalize_embeddings=True).float().cpu()
    row = {caption: index for index, caption in enumerate(captions)}
    agreements = [
        float(vectors[row[query]] @ vectors[row[found]]) if found is not None else 0.0 for query, found in pairs
    ]
    return {
        "caption_agreement": sum(agreements) / len(agreements),
        "caption_coverage": sum(found is not None for _, found in pairs) / len(pairs),
    }
