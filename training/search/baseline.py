"""The attribute baseline the web app shows beside relsim: the same collection searched by looks (CLIP-I or DINO when
their weights are on this machine, else a colour histogram), so a user sees what relational search adds.

The baseline's vectors of the collection are embedded once into an `EmbeddingCache` under the index folder
(`baselines/<method>/`) and reused by later launches; only images added since are embedded again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.evaluation.embed import embed_pool, read_image
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.methods.build import MethodOptions, build_method
from training.evaluation.methods.vision_encoders import CLIP_DEFAULT, DINO_DEFAULT
from training.evaluation.pool import PoolItem
from training.image_ids import file_sha256
from training.search.index import SearchIndex
from training.search.sources import IndexEntry
from training.vector_index import VectorIndex


logger = logging.getLogger(__name__)

BASELINE_NAMES = ("auto", "clip-i", "dino", "pixel", "colour-histogram")
# what "auto" falls back to when no image-encoder weights are on this machine: colours are the attribute a
# relational neighbour most often does not share
FALLBACK_BASELINE = "colour-histogram"
BASELINES_FOLDER = "baselines"


def weights_available_locally(model_name_or_path: str) -> bool:
    """True when `model_name_or_path` is a folder holding weights, or a hub id whose config and weights are in the
    local Hugging Face cache (nothing is downloaded to find out)."""
    folder = Path(model_name_or_path)
    weight_files = ("model.safetensors", "pytorch_model.bin")
    if folder.is_dir():
        return any((folder / name).is_file() for name in weight_files)
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        try:
            return isinstance(try_to_load_from_cache(model_name_or_path, filename), str)
        except ValueError:  # not a valid repo id
            return False

    return cached("config.json") and any(cached(name) for name in weight_files)


def choose_baseline(name: str = "auto", model: str | None = None) -> str:
    """The baseline method to run: `name` itself, or for "auto" the first of CLIP-I and DINO whose weights (`model`,
    or the method's default hub id) are available locally, else the colour histogram.

    Raises:
        ValueError: `name` is not one of `BASELINE_NAMES`.
    """
    if name not in BASELINE_NAMES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINE_NAMES)}")
    if name != "auto":
        return name

    for method, default in (("clip-i", CLIP_DEFAULT), ("dino", DINO_DEFAULT)):
        if weights_available_locally(model or default):
            return method
    logger.info("no CLIP or DINO weights on this machine; the baseline is the %s", FALLBACK_BASELINE)
    return FALLBACK_BASELINE


@dataclass(frozen=True)
class BaselineHit:
    """One baseline neighbour: its id in the search index (manifest order) and its cosine to the query."""

    id: int
    score: float


class BaselineNeighbours:
    """An attribute method's vectors of every indexed image, searchable by a query image.

    Args:
        method: a cosine `EmbeddingMethod` (CLIP-I, DINO, pixel, colour histogram).
        entries: the search index's entries (their order gives the ids a hit reports).
        cache_folder: where the method's embeddings of the collection are kept between launches.
    """

    def __init__(
        self, method: Any, entries: Sequence[IndexEntry], cache_folder: str | Path, batch_size: int = 32
    ) -> None:
        if method.metric != "cosine":
            raise ValueError(f"the app's baseline must compare by cosine; {method.name} uses {method.metric}")
        self.method = method
        unique = {entry.image_hash: entry for entry in reversed(entries)}
        items = [PoolItem(image_hash, entry.path, "test") for image_hash, entry in unique.items()]
        cache = EmbeddingCache(cache_folder, method.cache_identity())
        report = embed_pool(method, items, cache, batch_size=batch_size, show_progress=len(items) > batch_size)
        if report.failures:
            logger.warning("%s could not embed %d indexed images; they are left out of its neighbours",
                           method.name, len(report.failures))  # fmt: skip
        embedded = {failure["image_hash"] for failure in report.failures}
        self.ids = [position for position, entry in enumerate(entries) if entry.image_hash not in embedded]
        self.sha256 = [entries[position].sha256 for position in self.ids]
        _, vectors = cache.load([entries[position].image_hash for position in self.ids])
        self.vectors = VectorIndex(vectors.shape[1], "Flat", "inner_product")
        self.vectors.add(vectors)

    @classmethod
    def for_index(
        cls, index: SearchIndex, name: str = "auto", model: str | None = None, device: str = "cpu"
    ) -> BaselineNeighbours:
        """The baseline `choose_baseline(name, model)` over `index`'s collection, cached in the index folder."""
        chosen = choose_baseline(name, model)
        method = build_method(chosen, MethodOptions(model=model, device=device))
        return cls(method, index.entries, Path(index.folder) / BASELINES_FOLDER / chosen)

    @property
    def name(self) -> str:
        return self.method.name

    def query_vector(self, image: str | Path) -> torch.Tensor:
        """`(dim,)` unit vector of a query image file, decoded as every relsim path decodes images.

        Raises:
            UnreadableImageError: naming the file.
        """
        picture, _ = read_image(str(image))
        with torch.inference_mode():
            return self.method.embed(self.method.preprocess([picture]), ["query"])[0].float()

    def search(self, image: str | Path, k: int = 10, exclude_query: bool = True) -> list[BaselineHit]:
        """The `k` indexed images closest to `image` by this baseline, best first; with `exclude_query`, indexed
        files with the query's bytes are left out (as relsim's search does)."""
        query_sha256 = file_sha256(image) if exclude_query else None
        extra = self.sha256.count(query_sha256) if query_sha256 else 0
        scores, rows = self.vectors.search(self.query_vector(image)[None], k + extra)
        hits = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
            if row < 0 or (query_sha256 and self.sha256[row] == query_sha256):
                continue
            hits.append(BaselineHit(self.ids[row], float(score)))
        return hits[:k]
