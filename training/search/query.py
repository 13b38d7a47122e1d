"""Searching an index by image, by relation text, or both.

A relation text ("a {Subject} shown at several stages of growth") is encoded with the model's configured text
encoder; relsim's image space was trained against that encoder's caption embeddings, so the text vector is a query
in the same space. Image and text together: `(1 - text_weight) * image + text_weight * text` of the two unit vectors,
renormalised.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.image_ids import file_sha256
from training.search.index import SearchIndex
from training.search.model import SearchModel


@dataclass(frozen=True)
class SearchHit:
    """One result: rank (1 = best), the indexed image's path, its cosine to the query, its image hash and id."""

    rank: int
    path: str
    score: float
    image_hash: str
    id: int


def query_vector(
    model: SearchModel, image: Any = None, text: str | None = None, text_weight: float = 0.5
) -> torch.Tensor:
    """`(dim,)` unit query vector of an image (path, bytes or PIL image), a relation text, or both.

    Raises:
        ValueError: neither given, or `text_weight` outside [0, 1].
        UnreadableImageError: the image cannot be read (named).
    """
    if image is None and not text:
        raise ValueError("a search needs an image, a relation text, or both")
    if not 0.0 <= text_weight <= 1.0:
        raise ValueError(f"text_weight must be between 0 and 1, got {text_weight}")
    image_vector = model.embed_image(image) if image is not None else None
    text_vector = model.encode_texts([text])[0] if text else None
    return combined_query(image_vector, text_vector, text_weight)


def combined_query(
    image_vector: torch.Tensor | None, text_vector: torch.Tensor | None, text_weight: float = 0.5
) -> torch.Tensor:
    """`(dim,)` unit query of an image's and/or a text's `(dim,)` unit vectors (already embedded, e.g. in a batch
    of a service's requests): `(1 - text_weight) * image + text_weight * text`, renormalised."""
    parts = []
    if image_vector is not None:
        parts.append((1.0 - text_weight if text_vector is not None else 1.0, image_vector))
    if text_vector is not None:
        parts.append((text_weight if image_vector is not None else 1.0, text_vector))
    combined = sum(weight * vector for weight, vector in parts)
    return torch.nn.functional.normalize(combined, dim=-1)


def search(
    index: SearchIndex,
    model: SearchModel,
    image: Any = None,
    text: str | None = None,
    text_weight: float = 0.5,
    k: int = 10,
    exclude_query: bool = True,
    exclude_ids: Collection[int] = (),
    nprobe: int = 64,
) -> list[SearchHit]:
    """The `k` indexed images closest to the query (see `query_vector`), best first.

    Args:
        exclude_query: leave out indexed images with the same bytes as a query image file or bytes (an image's
            nearest neighbour is otherwise itself).
        exclude_ids: indexed images to leave out as well (e.g. the query's own row when it is an in-memory image).

    Raises:
        ValueError: `model` is not the model that made `index`, or the query is empty.
    """
    index.check_model(model)
    vector = query_vector(model, image, text, text_weight)
    query_sha256 = None
    if exclude_query and isinstance(image, bytes):
        query_sha256 = hashlib.sha256(image).hexdigest()
    elif exclude_query and isinstance(image, str | Path) and Path(image).is_file():
        query_sha256 = file_sha256(image)
    return nearest(index, vector, k, query_sha256, exclude_ids, nprobe)


def nearest(
    index: SearchIndex,
    vector: torch.Tensor,
    k: int = 10,
    query_sha256: str | None = None,
    exclude_ids: Collection[int] = (),
    nprobe: int = 64,
) -> list[SearchHit]:
    """The `k` indexed images closest to a `(dim,)` unit query vector, best first, leaving out the images whose
    bytes have `query_sha256` (the query image itself) and `exclude_ids`."""
    excluded = set(exclude_ids)
    excluded |= {i for i, entry in enumerate(index.entries) if query_sha256 and entry.sha256 == query_sha256}
    scores, ids = index.vectors.search(vector[None], k + len(excluded), nprobe=nprobe)
    hits: list[SearchHit] = []
    for score, found in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
        if found < 0 or found in excluded:
            continue
        entry = index.entries[found]
        hits.append(SearchHit(len(hits) + 1, entry.path, float(score), entry.image_hash, found))
        if len(hits) == k:
            break
    return hits


def hits_as_json(hits: Sequence[SearchHit], **extra: Any) -> str:
    """The hits as a JSON document: `{"results": [{"rank", "path", "score", "image_hash", "id"}, ...], **extra}`."""
    return json.dumps({**extra, "results": [asdict(hit) for hit in hits]}, indent=2, ensure_ascii=False)


def hits_as_table(hits: Sequence[SearchHit]) -> str:
    """The hits as a plain-text table (rank, score, path)."""
    lines = [f"{'rank':>4}  {'score':>7}  path"]
    lines += [f"{hit.rank:>4}  {hit.score:>7.4f}  {hit.path}" for hit in hits]
    return "\n".join(lines)
