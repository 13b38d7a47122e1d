"""Relational search over a user's own images: index a collection, query it by image or by relation text, and name
why two images match.

    from training.search import SearchModel, SearchIndex, index_collection, search, CaptionBank, why

    model = SearchModel.load("relsim-demo/run/final")
    index_collection("photos.index", model, folder="photos/")            # incremental, resumable
    index = SearchIndex("photos.index")
    hits = search(index, model, text="{Object}s stacked one on top of another into a tower", k=5)
    bank = CaptionBank.read("synthetic", model)                          # or a seed_group.json / captions file
    labels = why(bank, model.embed_image("photos/q.png"), index.stored_vectors([hits[0].id])[0])

Modules: `model` (the relsim model + its text encoder), `sources` (folder / list / dataset inputs), `index` (the
index folder: embeddings store, manifest, FAISS), `generation` (the record that makes its files one generation),
`query` (search by image, text or both), `why` (caption-bank
labels), `synthetic_metrics` (relation-text mAP and why accuracy on the synthetic benchmark), `pairwise` (scores of
image pairs, the official quick start's one call), `official_example` (the check of the official README's table). The
names below are imported on first use, so `python -m training.search --help` stays instant.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "SearchModel": "training.search.model",
    "IndexEntry": "training.search.sources",
    "DamagedIndexError": "training.search.generation",
    "IndexReport": "training.search.index",
    "SearchIndex": "training.search.index",
    "index_collection": "training.search.index",
    "read_manifest": "training.search.index",
    "SearchHit": "training.search.query",
    "query_vector": "training.search.query",
    "search": "training.search.query",
    "hits_as_json": "training.search.query",
    "hits_as_table": "training.search.query",
    "CaptionBank": "training.search.why",
    "WhyLabel": "training.search.why",
    "read_caption_bank": "training.search.why",
    "why": "training.search.why",
    "synthetic_search_metrics": "training.search.synthetic_metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
