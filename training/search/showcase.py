"""Search shown on a synthetic pool (the end of `make demo`): index the pool, run one image query and one
relation-text query with their top 5 and "why" labels, and measure relation-text mAP and why accuracy. On the
compositional world (a pool with `relation` and `unseen` columns) both queries show relations training never saw and
the figures are split into seen and unseen relations."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.search.index import SearchIndex, index_collection
from training.search.model import SearchModel
from training.search.query import SearchHit, search
from training.search.synthetic_metrics import (
    IMAGE_MAP,
    RELATION_TEXT_MAP,
    WHY_ACCURACY,
    family_captions,
    relation_search_metrics,
    synthetic_search_metrics,
)
from training.search.why import CaptionBank, why
from training.synthetic.factors import VALID_RELATIONS


logger = logging.getLogger(__name__)

DATASET_NAME = "dataset"


@dataclass
class ShownQuery:
    """One query and its results: each hit with the relation (or family) it truly shows and its top "why" label."""

    title: str
    hits: list[SearchHit]
    families: list[str]
    labels: list[str]


@dataclass
class SearchShowcase:
    metrics: dict[str, float]
    queries: list[ShownQuery]

    def markdown(self) -> str:
        """The report section: the metrics, then each query's top 5 as a table."""
        lines = [
            "## Search by image and by relation text",
            "",
            "The held-out pool indexed for search (`python -m training.search index`). A relation written as text is "
            "encoded by the text encoder relsim was trained against (all-MiniLM-L6-v2) and searches the images "
            'directly; the "why" label of a result is the caption of the bank that fits both the query and the '
            "result best (the smaller of its two cosines).",
            "",
            *self.metric_lines(),
        ]
        for query in self.queries:
            lines += [
                "",
                f"{query.title}:",
                "",
                "| rank | score | image | its relation | why |",
                "| ---: | ---: | --- | --- | --- |",
            ]
            lines += [
                f"| {hit.rank} | {hit.score:.3f} | {hit.path} | {family} | {label} |"
                for hit, family, label in zip(query.hits, query.families, query.labels, strict=True)
            ]  # fmt: skip
        return "\n".join(lines) + "\n"

    def metric_lines(self) -> list[str]:
        """The measures as markdown bullets: once for the families, or for unseen then seen relations."""
        metrics = self.metrics
        if RELATION_TEXT_MAP in metrics:
            return [
                f"- relation-text mAP (each family's anonymous caption as the query, its images the relevant ones): "
                f"**{metrics[RELATION_TEXT_MAP]:.3f}**, beside image->image mAP {metrics[IMAGE_MAP]:.3f};",
                f"- why accuracy (the top label of each image and its best-ranked same-family neighbour is that "
                f"family's caption; chance 1/8): **{metrics[WHY_ACCURACY]:.3f}**.",
            ]
        lines = []
        for split, which in (("unseen", "relations training never saw"), ("seen", "relations seen in training")):
            lines += [
                f"- {which}: relation-text mAP **{metrics[f'{split} {RELATION_TEXT_MAP}']:.3f}** (each relation's "
                f"anonymous caption as the query, the whole pool ranked), image->image mAP "
                f"{metrics[f'{split} {IMAGE_MAP}']:.3f}, why accuracy **{metrics[f'{split} {WHY_ACCURACY}']:.3f}** "
                f"(the exact caption among all {len(VALID_RELATIONS)}; chance {metrics['why chance']:.4f});"
            ]
        return lines

    def log_text(self) -> str:
        lines = ["search: " + " ".join(line.removeprefix("- ").replace("**", "") for line in self.metric_lines())]
        for query in self.queries:
            lines.append(query.title)
            lines += [
                f"  {hit.rank}. {hit.score:.3f} {hit.path} ({family}) why: {label}"
                for hit, family, label in zip(query.hits, query.families, query.labels, strict=True)
            ]
        return "\n".join(lines)


def _row(hit: SearchHit) -> int:
    return int(hit.path.removeprefix(f"{DATASET_NAME}[").removesuffix("]"))


def search_showcase(
    model: SearchModel, pool: Any, folder: str | Path, image_query: int | None = None, text_label: str | None = None
) -> SearchShowcase:
    """Indexes `pool` (a synthetic `datasets.Dataset`: `held_out_pool` or `relation_pool`) into `folder` with `model`,
    measures the search metrics from the indexed vectors (no second embedding pass) and runs the two shown queries.

    Args:
        image_query: the pool row whose image is the image query; default the first row (of an unseen relation, on
            the compositional world).
        text_label: the family or relation whose caption is the text query; default the one after the image query's
            (among the unseen relations, on the compositional world).
    """
    index_collection(folder, model, dataset=pool.select_columns(["image"]), show_progress=True)
    index = SearchIndex(folder)
    rows = [_row(entry) for entry in index.entries]
    stored = index.stored_vectors(range(len(index)))
    embeddings = torch.empty_like(stored)
    embeddings[rows] = stored
    if "relation" in pool.column_names:
        labels = list(pool["relation"])
        captions = dict(zip(labels, pool["caption"], strict=True))
        candidates = list(dict.fromkeys(name for name, unseen in zip(labels, pool["unseen"], strict=True) if unseen))
        metrics = relation_search_metrics(model, pool, image_embeddings=embeddings)
        bank_captions = [relation.caption for relation in VALID_RELATIONS]
    else:
        names = pool.features["family"].names
        labels = [names[family] for family in pool["family"]]
        captions = dict(zip(names, family_captions(pool), strict=True))
        candidates = list(names)
        metrics = synthetic_search_metrics(model, pool, image_embeddings=embeddings)
        bank_captions = list(captions.values())
    bank = CaptionBank(bank_captions, embeddings=model.encode_texts(bank_captions))
    if image_query is None:
        image_query = labels.index(candidates[0])
    if text_label is None:
        following = [name for name in candidates if name != labels[image_query]]
        text_label = (
            following[candidates.index(labels[image_query]) % len(following)]
            if labels[image_query] in (candidates)
            else candidates[0]
        )
    text = captions[text_label]

    def shown(title: str, query: torch.Tensor, hits: list[SearchHit]) -> ShownQuery:
        labels_of_hits = [why(bank, query, embeddings[_row(hit)], top=1)[0].caption for hit in hits]
        return ShownQuery(title, hits, [labels[_row(hit)] for hit in hits], labels_of_hits)

    image_hits = search(index, model, image=pool[image_query]["image"], k=5, exclude_ids={rows.index(image_query)})
    text_hits = search(index, model, text=text, k=5)
    text_query = model.encode_texts([text])[0]
    return SearchShowcase(
        metrics,
        [
            shown(
                f"Image query {DATASET_NAME}[{image_query}] ({labels[image_query]})",
                embeddings[image_query],
                image_hits,
            ),
            shown(f'Relation-text query "{text}" ({text_label})', text_query, text_hits),
        ],
    )
