"""Relational retrieval metrics as an `evaluate` module: recall@k, mean reciprocal rank and mean average precision
of ranked retrievals against known relevant sets (e.g. the other images of a query's seed group).

    metric = evaluate.load("training/evaluation/relational_retrieval")
    metric.compute(predictions=[["b", "x", "c"]], references=[["b", "c"]], ks=[1, 5])

A thin wrapper over `training.metrics.ranked_list_metrics`, the project's one implementation of these metrics:
`evaluate` copies this file into its module cache and imports `training` from there, so the relsim training package
must be installed (or on `PYTHONPATH`) wherever this module is loaded.
"""

from __future__ import annotations

import datasets
import evaluate

from training.metrics import ranked_list_metrics


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
        return ranked_list_metrics(predictions, references, ks)
