"""What the web app asks of an indexed collection, without any web code: relsim's neighbours of a query (image,
relation text or both) and an attribute baseline's, each with its score and "why" label, and the collection a page
at a time.

Everything the app shows comes from here, so what a person sees in the browser is what `search` and `why` return in
Python; the app only lays it out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.search.baseline import BaselineNeighbours
from training.search.index import SearchIndex
from training.search.model import SearchModel
from training.search.query import query_vector, search
from training.search.why import CaptionBank, why


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbour:
    """One result as the app shows it.

    Attributes:
        rank: 1 = closest.
        id: the image's id in the search index (manifest order).
        path: the indexed file.
        name: `path` relative to the collection folder (the file name a person recognises).
        score: the method's cosine to the query.
        why: the caption-bank label that best fits both the query and this image (relsim's space).
        why_score: that label's score: the smaller of its cosines to the query and to this image.
    """

    rank: int
    id: int
    path: str
    name: str
    score: float
    why: str
    why_score: float


@dataclass(frozen=True)
class Results:
    """The neighbours of one query: relsim's, and the attribute baseline's (empty without a baseline or an image)."""

    relsim: list[Neighbour]
    baseline: list[Neighbour]


@dataclass(frozen=True)
class GalleryPage:
    """One page of the collection: `(path, name)` of its images, the page number (from 1) and the page count."""

    images: list[tuple[str, str]]
    number: int
    pages: int
    total: int


def collection_folder(index: SearchIndex) -> Path | None:
    """The folder the index was built from, or None when it was built from a list of files."""
    folder = index.info.get("source", {}).get("folder")
    return Path(folder) if folder else None


class SearchService:
    """An index, the model that made it, a caption bank for "why" labels and an optional attribute baseline.

    Args:
        index: the opened search index (built from a folder or a list of files).
        model: the `SearchModel` that made `index` (checked).
        bank: the captions "why" labels are chosen from.
        baseline: the attribute baseline shown beside relsim; None shows relsim alone.
        k: neighbours per method.
        page_size: images per gallery page.

    Raises:
        ValueError: `model` did not make `index`, or the index holds images with no file (a dataset index: the app
            shows files).
    """

    def __init__(
        self,
        index: SearchIndex,
        model: SearchModel,
        bank: CaptionBank,
        baseline: BaselineNeighbours | None = None,
        k: int = 8,
        page_size: int = 24,
    ) -> None:
        index.check_model(model)
        if k < 1 or page_size < 1:
            raise ValueError(f"k and page_size must be at least 1, got k={k}, page_size={page_size}")
        if "dataset" in index.info.get("source", {}):
            raise ValueError(
                f"{index.folder} was indexed from a dataset, whose images are not files the app can show; index a "
                "folder of images (or a list of files) for the web app"
            )
        self.index, self.model, self.bank, self.baseline = index, model, bank, baseline
        self.k, self.page_size = k, page_size
        self.folder = collection_folder(index)

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        model: SearchModel | str | None = None,
        baseline: str | None = "auto",
        baseline_model: str | None = None,
        caption_bank: str | Path = "synthetic",
        device: str = "cpu",
        **settings: Any,
    ) -> SearchService:
        """Opens `index_dir` with its model (default: the one the index records), the caption bank and the baseline
        (`training.search.baseline.choose_baseline`; None for none). `settings` go to the constructor."""
        index = SearchIndex(index_dir)
        if not isinstance(model, SearchModel):
            model = SearchModel.load(model or index.identity["model"], device=device)
        bank = CaptionBank.read(caption_bank, model)
        neighbours = None
        if baseline is not None:
            neighbours = BaselineNeighbours.for_index(index, baseline, baseline_model, device=device)
        return cls(index, model, bank, neighbours, **settings)

    @property
    def served_files(self) -> list[str]:
        """The indexed files (the manifest's paths): all the web app may serve of the collection."""
        return [entry.path for entry in self.index.entries]

    @property
    def allowed_paths(self) -> list[str]:
        """The folders Gradio's own check admits: the collection folder, or the folders of the indexed files of a
        list. The app narrows them to `served_files` (`served_files.ServedFiles`); folders rather than the files one
        by one, because Gradio resolves every listed path on each request."""
        if self.folder is not None:
            return [str(self.folder)]
        return sorted({str(Path(path).resolve().parent) for path in self.served_files})

    @property
    def blocked_paths(self) -> list[str]:
        """The index folder when it sits inside the collection: its manifest and caches are not images to serve."""
        index_folder = Path(self.index.folder).resolve()
        return [str(index_folder)] if self.folder is not None and index_folder.is_relative_to(self.folder) else []

    @property
    def baseline_name(self) -> str | None:
        return self.baseline.name if self.baseline is not None else None

    def display_name(self, path: str) -> str:
        if self.folder is not None and Path(path).is_relative_to(self.folder):
            return Path(path).relative_to(self.folder).as_posix()
        return path

    def _neighbours(self, query: torch.Tensor, found: Sequence[tuple[int, float]]) -> list[Neighbour]:
        if not found:
            return []
        ids = [id for id, _ in found]
        results = self.index.stored_vectors(ids)
        rows = []
        for rank, ((id, score), result) in enumerate(zip(found, results, strict=True), start=1):
            label = why(self.bank, query, result, top=1)[0]
            path = self.index.entries[id].path
            rows.append(Neighbour(rank, id, path, self.display_name(path), score, label.caption, label.score))
        return rows

    def find(self, image: str | Path | None = None, text: str | None = None, text_weight: float = 0.5) -> Results:
        """relsim's `k` nearest indexed images of an image file, a relation text or both (`search`), and the
        baseline's of the image (none without an image: the attribute baselines compare pictures only). Every
        neighbour carries its top "why" label in relsim's space for this query, so the baseline's neighbours show how
        well a relation fits them too.

        Raises:
            ValueError: no query, or a bad `text_weight`.
            UnreadableImageError: the image cannot be read (named).
        """
        text = text.strip() if text else None
        hits = search(self.index, self.model, image=image, text=text, text_weight=text_weight, k=self.k)
        query = query_vector(self.model, image, text, text_weight)
        relsim = self._neighbours(query, [(hit.id, hit.score) for hit in hits])
        baseline = []
        if self.baseline is not None and image is not None:
            found = self.baseline.search(image, k=self.k)
            baseline = self._neighbours(query, [(hit.id, hit.score) for hit in found])
        return Results(relsim, baseline)

    @property
    def page_count(self) -> int:
        return max(1, -(-len(self.index.entries) // self.page_size))

    def page(self, number: int) -> GalleryPage:
        """Page `number` (from 1; clamped to the pages there are) of the collection in index order."""
        number = min(max(1, int(number)), self.page_count)
        start = (number - 1) * self.page_size
        entries = self.index.entries[start : start + self.page_size]
        images = [(entry.path, self.display_name(entry.path)) for entry in entries]
        return GalleryPage(images, number, self.page_count, len(self.index.entries))
