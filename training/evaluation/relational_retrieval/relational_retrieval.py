"""Relational retrieval metrics as an `evaluate` module: recall@k, mean reciprocal rank and mean average precision
of ranked retrievals against known relevant sets (e.g. the other images of a query's seed group).

    metric = evaluate.load("training/evaluation/relational_retrieval")
    metric.compute(predictions=[["b", "x", "c"]], references=[["b", "c"]], ks=[1, 5])

Self-contained on purpose: `evaluate` copies this file into its module cache.
"""

from __future__ import annotations

import datasets
import evaluate


_DESCRIPTION = """For each query, `predictions` is the ranked list of retrieved ids (best first, the query itself
already removed) and `references` the ids relevant to it. recall@k: a relevant id within the first k. MRR: mean of
1/rank of the first relevant id (0 when none). mAP: mean over queries of the average precision, the precision at each
relevant hit summed and divided by the number of relevant ids (so relevant ids missing from a truncated list count
as misses)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of ranked lists of ids (strings).
    references: list of lists of relevant ids; a query with none raises.
    ks: the k of recall@k (default [1, 5, 10]).
Returns:
    dict with `recall@k` per k, `mrr`, `mAP` and `queries`.
Examples:
    >>> metric = evaluate.load("training/evaluation/relational_retrieval")
    >>> metric.compute(predictions=[["b", "x", "c"]], references=[["b", "c"]], ks=[1])
    {'recall@1': 1.0, 'mrr': 1.0, 'mAP': 0.8333333333333333, 'queries': 1}
"""

_CITATION = """@article{relsim2025, title={Relational Visual Similarity}, year={2025}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RelationalRetrieval(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)) -> dict[str, float]:
        recalls = {k: 0.0 for k in ks}
        reciprocal_ranks, average_precisions = [], []
        for number, (ranked, relevant_ids) in enumerate(zip(predictions, references, strict=True)):
            relevant = set(relevant_ids)
            if not relevant:
                raise ValueError(f"query {number} has no relevant id in references")
            hit_ranks = [rank for rank, found in enumerate(ranked, start=1) if found in relevant]
            for k in ks:
                recalls[k] += float(bool(hit_ranks) and hit_ranks[0] <= k)
            reciprocal_ranks.append(1.0 / hit_ranks[0] if hit_ranks else 0.0)
            precisions = [hits / rank for hits, rank in enumerate(hit_ranks, start=1)]
            average_precisions.append(sum(precisions) / len(relevant))
        count = len(reciprocal_ranks)
        if count == 0:
            raise ValueError("no queries to score")
        result = {f"recall@{k}": recalls[k] / count for k in ks}
        result["mrr"] = sum(reciprocal_ranks) / count
        result["mAP"] = sum(average_precisions) / count
        result["queries"] = count
        return result
