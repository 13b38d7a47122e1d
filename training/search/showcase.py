"""Search shown on the synthetic pool (the end of `make demo`): index the pool, run one image query and one
relation-text query with their top 5 and "why" labels, and measure relation-text mAP and why accuracy."""

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
    synthetic_search_metrics,
)
from training.search.why import CaptionBank, why


logger = logging.getLogger(__name__)

DATASET_NAME = "dataset"


@dataclass
class ShownQuery:
    """One query and its results: each hit with the family it truly shows and its top "why" label."""

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
            'directly; the "why" label of a result is the family caption that fits both the query and the result '
            "best (the smaller of its two cosines).",
            "",
            f"- relation-text mAP (each family's anonymous caption as the query, its images the relevant ones): "
            f"**{self.metrics[RELATION_TEXT_MAP]:.3f}**, beside image->image mAP {self.metrics[IMAGE_MAP]:.3f};",
            f"- why accuracy (the top label of each image and its best-ranked same-family neighbour is that family's "
            f"caption; chance 1/8): **{self.metrics[WHY_ACCURACY]:.3f}**.",
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

    def log_text(self) -> str:
        metrics = self.metrics
        lines = [
            f"search: relation-text mAP {metrics[RELATION_TEXT_MAP]:.3f} (image mAP {metrics[IMAGE_MAP]:.3f}), "
            f"why accuracy {metrics[WHY_ACCURACY]:.3f}"
        ]
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
    model: SearchModel, pool: Any, folder: str | Path, image_query: int = 0, text_family: str | None = None
) -> SearchShowcase:
    """Indexes `pool` (a synthetic `datasets.Dataset`) into `folder` with `model`, measures the search metrics from
    the indexed vectors (no second embedding pass) and runs the two shown queries.

    Args:
        image_query: the pool row whose image is the image query.
        text_family: the family whose caption is the text query; default the one after the image query's family.
    """
    index_collection(folder, model, dataset=pool.select_columns(["image"]), show_progress=True)
    index = SearchIndex(folder)
    rows = [_row(entry) for entry in index.entries]
    stored = index.stored_vectors(range(len(index)))
    embeddings = torch.empty_like(stored)
    embeddings[rows] = stored
    names = pool.features["family"].names
    families = [names[family] for family in pool["family"]]
    captions = family_captions(pool)
    texts = model.encode_texts(captions)
    metrics = synthetic_search_metrics(model, pool, image_embeddings=embeddings)
    bank = CaptionBank(captions, embeddings=texts)

    def shown(title: str, query: torch.Tensor, hits: list[SearchHit]) -> ShownQuery:
        labels = [why(bank, query, embeddings[_row(hit)], top=1)[0].caption for hit in hits]
        return ShownQuery(title, hits, [families[_row(hit)] for hit in hits], labels)

    query_family = families[image_query]
    text_family = text_family or names[(names.index(query_family) + 1) % len(names)]
    text = captions[names.index(text_family)]
    image_hits = search(index, model, image=pool[image_query]["image"], k=5, exclude_ids={rows.index(image_query)})
    text_hits = search(index, model, text=text, k=5)
    return SearchShowcase(
        metrics,
        [
            shown(f"Image query {DATASET_NAME}[{image_query}] ({query_family})", embeddings[image_query], image_hits),
            shown(f'Relation-text query "{text}" ({text_family})', texts[names.index(text_family)], text_hits),
        ],
    )
