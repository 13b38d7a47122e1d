"""The relational benchmark on the compositional world: relations training saw and relations it never saw, scored
apart.

The pool is held-out looks of every valid relation; a column `unseen` marks the relations held out of training
(`relation_split("heldout")`). Every image queries the whole pool (itself left out) and a neighbour is right when it
shows the same relation; each relation's caption queries the pool as text too, for the methods whose embeddings live
in the caption space. Per-factor scores (same layout, same change, ...) on unseen queries show which factors transfer.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import datasets
import torch

from training.evaluation.methods.base import EmbeddingMethod, embed_image_list
from training.evaluation.retrieval import closeness
from training.evaluation.synthetic_retrieval import TRAP_ATTRIBUTES
from training.metrics import attribute_trap_rate, relational_retrieval_metrics
from training.synthetic.factors import FACTORS, Relation
from training.synthetic.relations import relation_dataset, relation_split
from training.trainer.caption_encoder import CaptionEncoder
from training.trainer.losses import caption_id


logger = logging.getLogger(__name__)

SPLITS = ("seen", "unseen")
DEFAULT_TEXT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
UNSEEN_POOL_TEXT_MAP = "unseen text mAP (unseen pool)"
FACTOR_METRICS = tuple(f"unseen {factor} mAP" for factor in FACTORS)
# the table's columns, unseen relations first
UNSEEN_METRICS = ("unseen mAP", "unseen recall@1", "unseen text mAP", UNSEEN_POOL_TEXT_MAP, "unseen attribute trap")
SEEN_METRICS = ("seen mAP", "seen recall@1", "seen text mAP", "seen attribute trap")
METRICS = (*UNSEEN_METRICS, *FACTOR_METRICS, *SEEN_METRICS)
TEXT_METRICS = ("seen text mAP", "unseen text mAP", UNSEEN_POOL_TEXT_MAP)


@dataclass
class RelationBenchmarkRun:
    """The pool, each method's embeddings and similarity matrix (higher is closer), the metric table and the
    chance level of every mAP and recall@1.

    `text_similarities[method]` is `(len(text_relations), pool)`: each relation's caption against every pool image,
    for the methods in the caption space only.
    """

    pool: datasets.Dataset
    similarities: dict[str, torch.Tensor] = field(default_factory=dict)
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    table: dict[str, dict[str, float]] = field(default_factory=dict)
    chance: dict[str, float] = field(default_factory=dict)
    text_similarities: dict[str, torch.Tensor] = field(default_factory=dict)
    text_relations: list[str] = field(default_factory=list)


def relation_pool(
    num_per_relation: int = 5,
    seed: int = 1,
    image_size: int = 112,
    relations: str | Sequence[Relation] = "all",
) -> datasets.Dataset:
    """Held-out looks (shapes and colours training never shows) of every valid relation (or of `relations`), with a
    bool column `unseen`: the relation itself is held out of training."""
    pool = relation_dataset(num_per_relation, "heldout", relations=relations, seed=seed, image_size=image_size)
    held_out = {relation.name for relation in relation_split("heldout")}
    return pool.add_column("unseen", [name in held_out for name in pool["relation"]])


def random_ranking_ap(relevant: int, ranked: int) -> float:
    """The expected average precision of a uniformly random ranking of `ranked` items, `relevant` of them right:
    each right item at rank r (uniform) has precision (1 + the right items expected above it) / r, so
    E[AP] = (R - 1) / (N - 1) + H_N / N * (N - R) / (N - 1), with H_N the N-th harmonic number. It is above R / N
    when R is small (one right item among two: 0.75, not 0.5)."""
    if relevant < 1:
        return float("nan")
    if ranked == 1:
        return 1.0
    harmonic = sum(1.0 / rank for rank in range(1, ranked + 1))
    return (relevant - 1) / (ranked - 1) + harmonic / ranked * (ranked - relevant) / (ranked - 1)


def random_ranking_levels(query_labels: Sequence, pool_labels: Sequence, excluded_self: bool) -> tuple[float, float]:
    """A random ranking's mAP and recall@1 (relevant / ranked items), each the mean over queries; the query itself
    neither counts nor is ranked when `excluded_self`. Queries with nothing relevant are left out of the mAP, as
    `relational_retrieval_metrics` leaves them out."""
    counts = Counter(pool_labels)
    offset = 1 if excluded_self else 0
    ranked = len(pool_labels) - offset
    relevant = [counts[label] - offset for label in query_labels]
    answered = [count for count in relevant if count > 0]
    mean_ap = sum(random_ranking_ap(count, ranked) for count in answered) / len(answered) if answered else math.nan
    return mean_ap, sum(relevant) / ranked / len(relevant)


def chance_levels(pool: datasets.Dataset) -> dict[str, float]:
    """Every mAP's and recall@1's value under a random ranking; it depends on the pool only."""
    unseen = list(pool["unseen"])
    relations = list(pool["relation"])
    chance: dict[str, float] = {}
    for split in SPLITS:
        queries = [index for index, flag in enumerate(unseen) if flag == (split == "unseen")]
        if not queries:
            continue
        labels = [relations[index] for index in queries]
        chance[f"{split} mAP"], chance[f"{split} recall@1"] = random_ranking_levels(labels, relations, True)
        text_queries = list(dict.fromkeys(labels))
        chance[f"{split} text mAP"] = random_ranking_levels(text_queries, relations, False)[0]
        if split == "unseen":
            chance[UNSEEN_POOL_TEXT_MAP] = random_ranking_levels(text_queries, labels, False)[0]
            for factor in FACTORS:
                values = list(pool[factor])
                factor_labels = [values[index] for index in queries]
                chance[f"unseen {factor} mAP"] = random_ranking_levels(factor_labels, values, True)[0]
    return chance


def image_metrics(similarity: torch.Tensor, pool: datasets.Dataset) -> dict[str, float]:
    """Image->image mAP, recall@1 and attribute trap on seen and on unseen queries, and per-factor mAP on unseen
    queries; a split without queries is left out, and relation mAP and recall@1 are NaN when every relation has a
    single image (nothing to find)."""
    unseen = torch.tensor(list(pool["unseen"]), dtype=torch.bool)
    relations = list(pool["relation"])
    attributes = {name: list(pool[name]) for name in TRAP_ATTRIBUTES}
    metrics: dict[str, float] = {}
    for split in SPLITS:
        queries = torch.nonzero(unseen == (split == "unseen")).flatten()
        if len(queries) == 0:
            continue
        rows, labels = similarity[queries], [relations[index] for index in queries.tolist()]
        retrieval = relational_retrieval_metrics(rows, labels, relations, exclude=queries, ks=(1,))
        metrics[f"{split} mAP"], metrics[f"{split} recall@1"] = retrieval["mAP"], retrieval["recall@1"]
        if len(relations) == len(set(relations)):  # one image per relation: no query has anything to find
            metrics[f"{split} mAP"] = metrics[f"{split} recall@1"] = math.nan
        query_attributes = {name: [values[index] for index in queries.tolist()] for name, values in attributes.items()}
        metrics[f"{split} attribute trap"] = attribute_trap_rate(
            rows, labels, relations, query_attributes, attributes, exclude=queries
        )
        if split == "unseen":
            for factor in FACTORS:
                values = list(pool[factor])
                factor_labels = [values[index] for index in queries.tolist()]
                metrics[f"unseen {factor} mAP"] = relational_retrieval_metrics(
                    rows, factor_labels, values, exclude=queries, ks=(1,)
                )["mAP"]
    return metrics


def text_metrics(text_similarity: torch.Tensor, text_relations: Sequence[str], pool: datasets.Dataset) -> dict:
    """Relation-text->image mAP: each caption ranks the whole pool (seen and unseen relations apart), and the unseen
    captions rank the unseen-relation images only (the usual zero-shot setting).

    Args:
        text_similarity: `(len(text_relations), pool)`.
    """
    unseen_names = {name for name, flag in zip(pool["relation"], pool["unseen"], strict=True) if flag}
    relations = list(pool["relation"])
    metrics: dict[str, float] = {}
    for split in SPLITS:
        rows = [index for index, name in enumerate(text_relations) if (name in unseen_names) == (split == "unseen")]
        if not rows:
            continue
        labels = [text_relations[index] for index in rows]
        metrics[f"{split} text mAP"] = relational_retrieval_metrics(text_similarity[rows], labels, relations)["mAP"]
        if split == "unseen":
            columns = [index for index, name in enumerate(relations) if name in unseen_names]
            metrics[UNSEEN_POOL_TEXT_MAP] = relational_retrieval_metrics(
                text_similarity[rows][:, columns], labels, [relations[index] for index in columns]
            )["mAP"]
    return metrics


def run_relation_benchmark(
    methods: Mapping[str, EmbeddingMethod],
    pool: datasets.Dataset,
    batch_size: int = 64,
    text_encoder: str | None = DEFAULT_TEXT_ENCODER,
    caption_encoder: CaptionEncoder | None = None,
) -> RelationBenchmarkRun:
    """Scores every method on `relation_pool`'s pool, seen and unseen relations apart (see `METRICS`).

    Text metrics are NaN for a method whose `caption_space` is False (its vectors cannot be compared with a
    caption's), and for every method when neither `text_encoder` nor `caption_encoder` is given.

    Args:
        text_encoder: the sentence-transformers model that embeds each relation's caption (the one relsim trained
            against); `caption_encoder`, when given, is used instead of loading it again.
    """
    images = list(pool["image"])
    run = RelationBenchmarkRun(pool=pool, chance=chance_levels(pool))
    captions = dict(zip(pool["relation"], pool["caption"], strict=True))
    run.text_relations = list(captions)
    caption_embeddings = None
    if any(method.caption_space for method in methods.values()) and (text_encoder or caption_encoder):
        caption_encoder = caption_encoder or CaptionEncoder(text_encoder)
        texts = list(captions.values())
        caption_embeddings = caption_encoder(texts, [caption_id(text) for text in texts]).float().cpu()
    for name, method in methods.items():
        logger.info("embedding %d images with %s", len(images), name)
        embeddings = embed_image_list(method, images, batch_size=batch_size)
        run.embeddings[name] = embeddings
        run.similarities[name] = closeness(embeddings, embeddings, method.metric)
        metrics = {metric: float("nan") for metric in METRICS}
        metrics.update(image_metrics(run.similarities[name], pool))
        if method.caption_space and caption_embeddings is not None:
            run.text_similarities[name] = closeness(caption_embeddings, embeddings, method.metric)
            metrics.update(text_metrics(run.text_similarities[name], run.text_relations, pool))
        run.table[name] = metrics
    return run
