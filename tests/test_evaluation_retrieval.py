"""Retrieval protocol, exact and FAISS search, judge-free metrics and the `evaluate` module, on hand-made data."""

import pytest
import torch
import torch.nn.functional as F

from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.judge_free import caption_agreement, seed_group_map
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import retrieve, sample_queries


def items_for(hashes, split="test", groups=None, captions=None):
    return [
        PoolItem(h, f"{h}.png", split, None if captions is None else captions[i], None if groups is None else groups[i])
        for i, h in enumerate(hashes)
    ]


def filled_cache(folder, vectors, hashes, digests=None, metric="cosine", shard=3):
    cache = EmbeddingCache(folder, {"method": "hand", "metric": metric})
    digests = digests or [f"digest-{h}" for h in hashes]
    for start in range(0, len(hashes), shard):
        cache.add(hashes[start : start + shard], digests[start : start + shard], vectors[start : start + shard])
    return cache


def test_sample_queries_is_seeded_and_takes_test_images_only():
    items = items_for([f"t{i}" for i in range(50)]) + items_for([f"d{i}" for i in range(50)], split="distractor")
    first, again = sample_queries(items, 20, seed=3), sample_queries(list(reversed(items)), 20, seed=3)
    assert first == again and len(set(first)) == 20 and all(h.startswith("t") for h in first)
    assert sample_queries(items, 20, seed=4) != first
    assert len(sample_queries(items, 1000)) == 50


def test_exact_search_skips_the_query_and_its_exact_duplicates(tmp_path):
    vectors = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    hashes = ["q", "copy", "near", "far", "mid"]
    digests = ["same", "same", "n", "f", "m"]  # "copy" is the query's file under another name
    cache = filled_cache(tmp_path / "c", vectors, hashes, digests, shard=2)
    [found] = retrieve(cache, items_for(hashes), ["q"], top_k=3)
    assert found.neighbours == ["near", "mid", "far"]
    torch.testing.assert_close(torch.tensor(found.scores), (vectors[[2, 4, 3]] @ vectors[0]), atol=1e-6, rtol=0)


def test_l2_search_ranks_by_squared_distance(tmp_path):
    torch.manual_seed(0)
    vectors = torch.randn(20, 6)
    hashes = [f"h{i}" for i in range(20)]
    cache = filled_cache(tmp_path / "c", vectors, hashes, metric="l2", shard=7)
    results = retrieve(cache, items_for(hashes), ["h0", "h5"], top_k=4)
    for result, row in zip(results, (0, 5), strict=True):
        distances = ((vectors - vectors[row]) ** 2).sum(1)
        distances[row] = float("inf")
        expected = distances.argsort()[:4]
        assert result.neighbours == [hashes[i] for i in expected]
        torch.testing.assert_close(torch.tensor(result.scores), -distances[expected], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("metric", "factory"), [("cosine", "Flat"), ("l2", "Flat"), ("cosine", "IVF4,Flat")])
def test_faiss_search_equals_exact_search(tmp_path, metric, factory):
    torch.manual_seed(1)
    vectors = F.normalize(torch.randn(200, 16), dim=-1) if metric == "cosine" else torch.randn(200, 16)
    hashes = [f"h{i}" for i in range(200)]
    digests = [f"d{i}" for i in range(200)]
    digests[7] = digests[3]  # a duplicate of query h3
    cache = filled_cache(tmp_path / "c", vectors, hashes, digests, metric=metric, shard=64)
    items = items_for(hashes[:150]) + items_for(hashes[150:], split="distractor")
    queries = [*sample_queries(items, 10, seed=0), "h3"]
    exact = retrieve(cache, items, queries, top_k=5)
    # an IVF index probing all of its 4 lists is exact too; it is trained on the first shard
    approximate = retrieve(cache, items, queries, top_k=5, backend="faiss", index_factory=factory)
    assert [r.neighbours for r in exact] == [r.neighbours for r in approximate]
    assert "h7" not in exact[-1].neighbours
    for left, right in zip(exact, approximate, strict=True):
        torch.testing.assert_close(torch.tensor(left.scores), torch.tensor(right.scores), atol=1e-4, rtol=0)


def test_seed_group_map_is_one_when_groups_are_separable_and_lower_when_not(tmp_path):
    groups = [0, 0, 1, 1, None, None]
    hashes = ["a0", "a1", "b0", "b1", "x", "y"]
    items = items_for(hashes[:4], groups=groups[:4]) + items_for(hashes[4:], split="distractor")
    separable = F.normalize(torch.tensor([[1, 0.1], [1, 0.0], [0, 1], [0.1, 1], [-1, 0.2], [0.2, -1]]), dim=-1)
    metrics = seed_group_map(filled_cache(tmp_path / "s", separable, hashes), items)
    assert metrics == {"seed_group_mAP": 1.0, "seed_group_recall@1": 1.0, "seed_group_queries": 4}
    # swap a0 and b0's vectors: each of them now ranks the other group first
    mixed = separable[[2, 1, 0, 3, 4, 5]]
    metrics = seed_group_map(filled_cache(tmp_path / "m", mixed, hashes), items)
    assert metrics["seed_group_recall@1"] == 0.0 and 0.0 < metrics["seed_group_mAP"] < 1.0


def test_caption_agreement_uses_minilm_and_scores_distractors_zero(caption_encoder):
    items = {
        "q": PoolItem("q", "q.png", "test", "arrange {Object}s from small to large", 0),
        "same": PoolItem("same", "s.png", "test", "arrange {Object}s from small to large", 0),
        "other": PoolItem("other", "o.png", "test", "one {Object} differs from the others", 1),
        "d": PoolItem("d", "d.png", "distractor"),
    }
    from training.evaluation.retrieval import Retrieval

    def agreement(neighbour):
        return caption_agreement([Retrieval("m", "q", [neighbour], [1.0])], items, caption_encoder.model)

    assert agreement("same")["caption_agreement"] == pytest.approx(1.0, abs=1e-5)
    assert agreement("d") == {"caption_agreement": 0.0, "caption_coverage": 0.0}
    other = agreement("other")["caption_agreement"]
    vectors = caption_encoder.model.encode([items["q"].caption, items["other"].caption], normalize_embeddings=True)
    assert other == pytest.approx(float(vectors[0] @ vectors[1]), abs=1e-5) and other < 0.9
