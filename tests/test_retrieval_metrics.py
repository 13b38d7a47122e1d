import evaluate
import pytest
import torch

from training.metrics import (
    attribute_trap_rate,
    average_precision,
    ranked_hits,
    ranked_list_metrics,
    ranked_pool,
    relational_retrieval_metrics,
)


# Three queries against a pool of five; each row lists the pool's similarity to that query.
SIMILARITY = torch.tensor(
    [
        [0.9, 0.8, 0.1, 0.7, 0.2],  # query 0 (label a): ranking 0, 1, 3, 4, 2
        [0.1, 0.2, 0.9, 0.3, 0.8],  # query 1 (label b): ranking 2, 4, 3, 1, 0
        [0.5, 0.4, 0.3, 0.2, 0.1],  # query 2 (label c): no relevant item
    ]
)
QUERY_LABELS = ["a", "b", "c"]
POOL_LABELS = ["b", "a", "b", "a", "a"]


def test_ranking_puts_the_excluded_item_last():
    order, valid = ranked_pool(SIMILARITY, exclude=torch.tensor([0, -1, 4]))
    assert order[0].tolist() == [1, 3, 4, 2, 0]
    assert valid[0].tolist() == [True, True, True, True, False]
    assert valid[1].all()


def test_recall_and_average_precision_by_hand():
    metrics = relational_retrieval_metrics(SIMILARITY, QUERY_LABELS, POOL_LABELS)
    # query 0: relevant {1, 3, 4} at ranks 2, 3, 4 -> AP = (1/2 + 2/3 + 3/4) / 3; query 1: {0, 2} at ranks 1, 5
    ap0 = (1 / 2 + 2 / 3 + 3 / 4) / 3
    ap1 = (1 / 1 + 2 / 5) / 2
    assert metrics["recall@1"] == pytest.approx(1 / 3)  # only query 1 hits at rank 1
    assert metrics["recall@5"] == pytest.approx(2 / 3)
    assert metrics["mAP"] == pytest.approx((ap0 + ap1) / 2)  # query 2 has nothing relevant and is left out


def test_excluding_the_query_itself():
    similarity = torch.tensor([[1.0, 0.2, 0.9], [0.2, 1.0, 0.1], [0.9, 0.1, 1.0]])
    labels = ["x", "y", "x"]
    metrics = relational_retrieval_metrics(similarity, labels, labels, exclude=torch.arange(3))
    assert metrics["recall@1"] == pytest.approx(2 / 3)  # x queries find each other; y has no other y
    assert metrics["mAP"] == pytest.approx(1.0)


def test_attribute_trap_counts_look_alikes_of_another_relation():
    query_attributes = {"shape": ["star", "cross", "star"], "colour": ["pink", "teal", "olive"]}
    pool_attributes = {
        "shape": ["star", "arrow", "cross", "star", "arrow"],
        "colour": ["teal", "pink", "teal", "olive", "olive"],
    }
    # top-1: query 0 -> 0 (star, label b != a: trap), query 1 -> 2 (same label b: no trap),
    # query 2 -> 0 (star, label b != c: trap)
    rate = attribute_trap_rate(SIMILARITY, QUERY_LABELS, POOL_LABELS, query_attributes, pool_attributes)
    assert rate == pytest.approx(2 / 3)


def test_ranking_leaves_out_a_boolean_mask_of_items():
    mask = torch.tensor([[True, False, False, True, False], [False] * 5, [False] * 5])
    order, valid = ranked_pool(SIMILARITY, exclude=mask)
    assert order[0].tolist() == [1, 4, 2, 0, 3] and valid[0].tolist() == [True, True, True, False, False]


def test_average_precision_by_hand():
    hits = torch.tensor([[True, False, True, False], [False, False, False, False], [False, True, False, False]])
    precision = average_precision(hits)
    torch.testing.assert_close(precision[0], torch.tensor((1 / 1 + 2 / 3) / 2))
    assert torch.isnan(precision[1])  # nothing relevant: no AP
    assert precision[2] == pytest.approx(1 / 2)
    # a truncated list: the third query has 4 relevant items, three of them never retrieved
    assert average_precision(hits, torch.tensor([2, 1, 4]))[2] == pytest.approx((1 / 2) / 4)


def test_an_excluded_relevant_item_is_never_a_hit():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    relevant = torch.tensor([[True, False, False, True]])
    hits = ranked_hits(scores, relevant, exclude=torch.tensor([0]))
    assert hits.tolist() == [[False, False, True, False]]
    assert average_precision(hits)[0] == pytest.approx(1 / 3)


# The same three queries as ranked id lists: ids are pool positions, references the pool items with the query's label.
RANKED = [["p0", "p1", "p3", "p4", "p2"], ["p2", "p4", "p3", "p1", "p0"]]
RELEVANT = [["p1", "p3", "p4"], ["p0", "p2"]]


def test_ranked_list_metrics_by_hand():
    metrics = ranked_list_metrics(
        [["b", "x", "c"], ["x", "y", "z"], ["y", "a"]], [["b", "c"], ["w"], ["a", "q"]], [1, 2]
    )
    assert metrics["queries"] == 3
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    assert metrics["recall@2"] == pytest.approx(2 / 3)
    assert metrics["mrr"] == pytest.approx((1 + 0 + 1 / 2) / 3)
    # "q" is relevant but never retrieved: it counts as a miss in the second list's divisor of 2
    assert metrics["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 0 + (1 / 2) / 2) / 3)


def test_a_repeated_id_counts_once():
    assert ranked_list_metrics([["b", "b", "c"]], [["b", "c"]], [1])["mAP"] == pytest.approx((1 + 2 / 3) / 2)


def test_ranked_lists_refuse_a_query_with_nothing_relevant():
    with pytest.raises(ValueError, match="query 1 has no relevant id"):
        ranked_list_metrics([["a"], ["b"]], [["a"], []])


def test_ranked_lists_and_the_similarity_matrix_agree():
    from_lists = ranked_list_metrics(RANKED, RELEVANT, ks=(1, 5))
    from_matrix = relational_retrieval_metrics(SIMILARITY[:2], QUERY_LABELS[:2], POOL_LABELS)
    for key in ("recall@1", "recall@5", "mAP"):
        assert from_lists[key] == pytest.approx(from_matrix[key])


def test_the_evaluate_module_wraps_training_metrics():
    metric = evaluate.load("training/evaluation/relational_retrieval")
    predictions = [["b", "x", "c"], ["x", "y", "z"], ["y", "a"]]
    references = [["b", "c"], ["w"], ["a", "q"]]
    result = metric.compute(predictions=predictions, references=references, ks=[1, 2])
    assert result == ranked_list_metrics(predictions, references, [1, 2])
    assert result["mAP"] == pytest.approx(((1 + 2 / 3) / 2 + 0 + (1 / 2) / 2) / 3)
