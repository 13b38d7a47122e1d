"""The paper's retrieval protocol: seeded queries from the test split, nearest neighbours in the whole pool (test
split + distractors), never the query itself nor an exact duplicate of it (same file content).

Search is exact: a matrix product over the cache shard by shard (a pool larger than memory streams through), or a
FAISS flat index. Scores are "higher is closer": cosine similarity, or minus the squared distance for `l2` methods.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.pool import PoolItem
from training.evaluation.records import read_records, write_records
from training.vector_index import VectorIndex


@dataclass
class Retrieval:
    method: str
    query: str
    neighbours: list[str]
    scores: list[float]


def sample_queries(items: Sequence[PoolItem], count: int = 1000, seed: int = 0) -> list[str]:
    """`count` test-split image hashes, the same for every method and run with the same seed."""
    candidates = sorted(item.image_hash for item in items if item.split == "test")
    if not candidates:
        raise ValueError("the pool has no test-split image to query with")
    return random.Random(seed).sample(candidates, min(count, len(candidates)))


def closeness(queries: torch.Tensor, pool: torch.Tensor, metric: str) -> torch.Tensor:
    """`(queries, pool)` scores, higher is closer."""
    if metric == "cosine":
        return queries @ pool.T
    if metric == "l2":
        return 2 * queries @ pool.T - (queries * queries).sum(1, keepdim=True) - (pool * pool).sum(1)[None]
    raise ValueError(f"unknown metric {metric!r}; expected 'cosine' or 'l2'")


def search_exact(
    cache: EmbeddingCache,
    query_hashes: Sequence[str],
    pool_hashes: Sequence[str],
    top_k: int = 10,
    chunk_size: int = 65536,
) -> tuple[list[list[str]], torch.Tensor]:
    """Top-k neighbours of each query among `pool_hashes` by streaming matrix products.

    Returns:
        the neighbours' hashes per query and their scores `(queries, top_k)`.
    """
    digests = cache.content_digests
    _, queries = cache.load(query_hashes)
    in_pool = set(pool_hashes)
    codes: dict[str, int] = {}
    query_codes = torch.tensor([codes.setdefault(digests[h], len(codes)) for h in query_hashes])
    searched: list[str] = []  # pool hashes in the order they were scored; best_index points into it
    best_scores = torch.full((len(query_hashes), 0), float("-inf"))
    best_index = torch.zeros((len(query_hashes), 0), dtype=torch.long)
    for shard_hashes, shard in cache.iter_shards():
        keep = [index for index, image_hash in enumerate(shard_hashes) if image_hash in in_pool]
        for start in range(0, len(keep), chunk_size):
            rows = keep[start : start + chunk_size]
            chunk_codes = torch.tensor([codes.setdefault(digests[shard_hashes[row]], len(codes)) for row in rows])
            scores = closeness(queries, shard[rows].float(), cache.metric)
            scores[query_codes[:, None] == chunk_codes[None, :]] = float("-inf")
            chunk_index = torch.arange(len(searched), len(searched) + len(rows)).expand(len(query_hashes), -1)
            searched += [shard_hashes[row] for row in rows]
            merged_scores = torch.cat([best_scores, scores], dim=1)
            best_scores, order = merged_scores.topk(min(top_k, merged_scores.shape[1]), dim=1)
            best_index = torch.cat([best_index, chunk_index], dim=1).gather(1, order)
    neighbours = [[searched[index] for index in row] for row in best_index.tolist()]
    return _drop_excluded(neighbours, best_scores)


def search_faiss(
    cache: EmbeddingCache,
    query_hashes: Sequence[str],
    pool_hashes: Sequence[str],
    top_k: int = 10,
    index_factory: str = "Flat",
    nprobe: int = 64,
) -> tuple[list[list[str]], torch.Tensor]:
    """The same search through a FAISS index built shard by shard: "Flat" is exact; a compressed factory string
    (e.g. "IVF4096,PQ64") keeps a pool larger than memory searchable, approximately. A trained index learns its
    clusters and codebooks from the first shard (`training.vector_index`, the one FAISS builder)."""
    digests = cache.content_digests
    _, queries = cache.load(query_hashes)
    in_pool = set(pool_hashes)
    index = VectorIndex(queries.shape[1], index_factory, "inner_product" if cache.metric == "cosine" else "l2")
    indexed: list[str] = []
    for shard_hashes, shard in cache.iter_shards():
        rows = [row for row, image_hash in enumerate(shard_hashes) if image_hash in in_pool]
        index.add(shard[rows])
        indexed += [shard_hashes[row] for row in rows]
    copies: dict[str, int] = {}
    for image_hash in indexed:
        copies[digests[image_hash]] = copies.get(digests[image_hash], 0) + 1
    extra = max(copies.get(digests[h], 0) for h in query_hashes)
    found, labels = index.search(queries, top_k + extra, nprobe=nprobe)
    scores = torch.from_numpy(found)
    neighbours, kept_scores = [], torch.full((len(query_hashes), top_k), float("-inf"))
    for row, query_hash in enumerate(query_hashes):
        kept = [
            (indexed[label], float(score))
            for label, score in zip(labels[row].tolist(), scores[row].tolist(), strict=True)
            if label >= 0 and digests[indexed[label]] != digests[query_hash]
        ][:top_k]
        neighbours.append([image_hash for image_hash, _ in kept])
        kept_scores[row, : len(kept)] = torch.tensor([score for _, score in kept])
    return neighbours, kept_scores


def _drop_excluded(hashes: list[list[str]], scores: torch.Tensor) -> tuple[list[list[str]], torch.Tensor]:
    finite = torch.isfinite(scores)
    return [
        [h for h, ok in zip(row, mask, strict=True) if ok] for row, mask in zip(hashes, finite.tolist(), strict=True)
    ], scores


def retrieve(
    cache: EmbeddingCache,
    items: Sequence[PoolItem],
    query_hashes: Sequence[str],
    top_k: int = 10,
    backend: str = "exact",
    index_factory: str = "Flat",
) -> list[Retrieval]:
    """Neighbours of every query among the embedded pool items (images that failed to embed are not in the pool)."""
    pool_hashes = [item.image_hash for item in items if item.image_hash in cache]
    missing = [query for query in query_hashes if query not in cache]
    if missing:
        raise KeyError(f"{len(missing)} queries have no embedding in {cache.folder}, e.g. {missing[:3]}")
    if backend == "exact":
        neighbours, scores = search_exact(cache, query_hashes, pool_hashes, top_k)
    elif backend == "faiss":
        neighbours, scores = search_faiss(cache, query_hashes, pool_hashes, top_k, index_factory=index_factory)
    else:
        raise ValueError(f"unknown search backend {backend!r}; expected 'exact' or 'faiss'")
    method = cache.identity["method"]
    return [
        Retrieval(method, query, found, scores[row, : len(found)].tolist())
        for row, (query, found) in enumerate(zip(query_hashes, neighbours, strict=True))
    ]


def write_retrievals(retrievals: Sequence[Retrieval], path: str | Path) -> Path:
    return write_records(retrievals, path)


def read_retrievals(path: str | Path) -> list[Retrieval]:
    return read_records(path, Retrieval, "retrieval")
