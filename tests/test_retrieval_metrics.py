import pytest
import torch

from training.metrics import attribute_trap_rate, ranked_pool, relational_retrieval_metrics


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
