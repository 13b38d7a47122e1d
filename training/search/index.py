"""Indexing a collection for relational search: embeddings kept shard by shard, a manifest and a FAISS index.

An index folder holds:
- `index.json`: the model identity that made it (name, weights fingerprint, processor settings, text encoder), the
  FAISS factory and the count; an index refuses to be updated or searched with another model;
- `embeddings/`: a `TensorShardStore` of relsim vectors keyed by image hash, each with the sha256 of the bytes it was
  computed from; a shard is written every `shard_size` images, so an interrupted run resumes where it stopped;
- `manifest.jsonl`: one row per indexed image, in FAISS id order: path, sha256, size, image_hash (and mtime_ns);
- `unreadable.jsonl`: the images left out, each with its reason;
- `vectors.faiss` (+ `vectors.faiss.json`): the FAISS index (`training.vector_index`), rebuilt from the store on
  every run (cheap next to embedding), so deleted files drop out and the ids always follow the manifest.

Rerunning on a grown or changed collection embeds only images whose bytes the store does not hold yet (a file is
read again only when its size or modification time changed).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.search.model import SearchModel
from training.search.sources import Collected, IndexEntry, from_dataset, from_folder, from_paths, read_path_list
from training.store import IdentityMismatchError, TensorShardStore, atomic_write
from training.vector_index import VectorIndex


logger = logging.getLogger(__name__)

INDEX_FORMAT = "relsim-search-index-1"
INDEX_FILE = "index.json"
MANIFEST_FILE = "manifest.jsonl"
UNREADABLE_FILE = "unreadable.jsonl"
VECTORS_FILE = "vectors.faiss"
EMBEDDINGS_FOLDER = "embeddings"


@dataclass
class IndexReport:
    """What one `index` run did."""

    indexed: int = 0
    embedded: int = 0
    reused: int = 0
    dropped: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _check_model(folder: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuses a model whose weights, processor settings or text encoder differ from the index's; the model's name
    may differ (the same weights copied to another folder are the same model)."""
    fields = sorted(
        name for name in stored.keys() | wanted.keys() if name != "model" and stored.get(name) != wanted.get(name)
    )
    if fields:
        raise ValueError(
            f"{folder} was indexed with model {stored.get('model')} ({stored.get('weights')}), not with "
            f"{wanted.get('model')} ({wanted.get('weights')}); they differ in {', '.join(fields)}. Use the model that "
            "made the index, or index into a new folder"
        )


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: malformed JSON ({error})") from error
    return rows


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))


def read_manifest(folder: str | Path) -> list[IndexEntry]:
    """The indexed images of an index folder, in FAISS id order.

    Raises:
        ValueError: a row misses a field (the message names file, line and field).
    """
    path = Path(folder) / MANIFEST_FILE
    entries = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        try:
            entries.append(
                IndexEntry(row["path"], row["image_hash"], row["sha256"], row["size"], row.get("mtime_ns", 0))
            )
        except KeyError as error:
            raise ValueError(f"{path}:{number}: {error.args[0]}: missing from this manifest row") from error
    return entries


def _collect(
    folder: str | Path | None,
    paths: Sequence[str] | str | Path | None,
    dataset: Any,
    image_column: str,
    known: dict,
    download_folder: Path,
) -> tuple[Collected, dict[str, Any]]:
    given = [name for name, value in (("folder", folder), ("paths", paths), ("dataset", dataset)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"index needs exactly one source (a folder, a list of paths, or a dataset), got {given or 0}")
    if folder is not None:
        return from_folder(folder, known), {"folder": str(Path(folder).resolve())}
    if dataset is not None:
        return from_dataset(dataset, image_column), {
            "dataset": getattr(dataset, "info", None) and dataset.info.dataset_name
        }
    if isinstance(paths, str | Path):  # a list file: one path per line, relative ones read from its folder
        return from_paths(read_path_list(paths), Path(paths).parent, known, download_folder), {
            "list": str(Path(paths).resolve())
        }
    return from_paths(paths, known=known, download_folder=download_folder), {"paths": len(paths)}


def _embed_missing(
    model: SearchModel, store: TensorShardStore, entries: Sequence[IndexEntry], shard_size: int, show_progress: bool
) -> tuple[int, list[tuple[str, str]]]:
    """Embeds the distinct images the store lacks, one shard per `shard_size` images; returns (embedded, failures)."""
    from transformers.utils.logging import tqdm

    todo: dict[str, IndexEntry] = {}
    for entry in entries:
        if not store.holds(entry.image_hash, entry.sha256) and entry.image_hash not in todo:
            todo[entry.image_hash] = entry
    pending = list(todo.values())
    failures: list[tuple[str, str]] = []
    embedded = 0
    with tqdm(total=len(pending), desc="indexing images", unit="image", disable=not show_progress) as progress:
        for start in range(0, len(pending), shard_size):
            chunk = pending[start : start + shard_size]
            result = model.embed_images([entry.image for entry in chunk])
            failures += [(chunk[failure.index].path, failure.reason) for failure in result.failures]
            kept = [chunk[index] for index in result.indices]
            if kept:
                store.add([e.image_hash for e in kept], [e.sha256 for e in kept], result.embeddings.float())
            embedded += len(kept)
            progress.update(len(chunk))
    return embedded, failures


def index_collection(
    output: str | Path,
    model: SearchModel,
    folder: str | Path | None = None,
    paths: Sequence[str] | str | Path | None = None,
    dataset: Any = None,
    image_column: str = "image",
    factory: str = "Flat",
    shard_size: int = 256,
    show_progress: bool = True,
) -> IndexReport:
    """Builds or updates the search index in `output` from one source.

    Args:
        output: the index folder (created if needed; an existing one is updated incrementally).
        model: the `SearchModel` that embeds; an existing index made by another model is refused.
        folder: a folder of images, searched recursively.
        paths: a list of image paths, or the path of a list file (one path per line; relative paths are read from
            the list's folder and must stay inside it). URLs are fetched by img2dataset into `output/downloads/`.
        dataset: a `datasets.Dataset` whose `image_column` holds the images.
        factory: the FAISS index factory ("Flat" is exact; e.g. "IVF1024,PQ32" for millions of images).
        shard_size: images embedded per saved shard (what an interruption can lose at most).

    Returns:
        counts of indexed, newly embedded, reused and dropped images, and the unreadable ones with their reasons.

    Raises:
        ValueError: the index was made by another model, or not exactly one source was given.
        NotADirectoryError: `folder` is not a folder.
    """
    output = Path(output)
    identity = model.identity()
    info_path = output / INDEX_FILE
    if info_path.is_file():
        _check_model(output, json.loads(info_path.read_text(encoding="utf-8"))["model"], identity)
    previous = {entry.path: entry for entry in read_manifest(output)}
    collected, source = _collect(folder, paths, dataset, image_column, previous, Path(output) / "downloads")
    try:
        store = TensorShardStore(output / EMBEDDINGS_FOLDER, identity)
    except IdentityMismatchError as error:
        _check_model(output, error.stored, identity)
        # the same weights under another name: keep the stored rows, under the identity they were made with
        store = TensorShardStore(output / EMBEDDINGS_FOLDER, error.stored)
        identity = error.stored
    embedded, failures = _embed_missing(model, store, collected.entries, shard_size, show_progress)
    failed = {path for path, _ in failures}
    unreadable = collected.unreadable + failures
    for path, reason in unreadable:
        logger.warning("not indexed: %s (%s)", path, reason)
    entries = [
        entry for entry in collected.entries if entry.path not in failed and store.holds(entry.image_hash, entry.sha256)
    ]
    vectors = VectorIndex(model.model.config.projection_dim, factory, "inner_product")
    ordered = _fill(vectors, store, entries)
    vectors.save(output / VECTORS_FILE)
    _write_jsonl(output / MANIFEST_FILE, [entry.manifest_row() for entry in ordered])
    _write_jsonl(output / UNREADABLE_FILE, [{"path": path, "reason": reason} for path, reason in unreadable])
    info = {"format": INDEX_FORMAT, "model": identity, "factory": factory, "count": len(ordered), "source": source,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    atomic_write(info_path, json.dumps(info, indent=2).encode())
    report = IndexReport(
        indexed=len(ordered),
        embedded=embedded,
        reused=len({e.image_hash for e in entries}) - embedded,
        dropped=len(set(previous) - {entry.path for entry in ordered}),
        unreadable=unreadable,
    )
    logger.info(
        "%s: %d images indexed (%d embedded now, %d reused, %d dropped), %d unreadable",
        output, report.indexed, report.embedded, report.reused, report.dropped, len(unreadable),
    )  # fmt: skip
    return report


def _fill(
    vectors: VectorIndex, store: TensorShardStore, entries: Sequence[IndexEntry], training_sample: int = 65536
) -> list[IndexEntry]:
    """Adds the vectors of `entries` shard by shard; returns the entries in the order their vectors got ids (files
    with the same bytes share one stored vector). A trained factory (IVF, PQ) first learns from up to
    `training_sample` vectors gathered from the leading shards."""
    by_hash: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        by_hash.setdefault(entry.image_hash, []).append(entry)

    def chosen_rows() -> Iterator[tuple[list[IndexEntry], torch.Tensor]]:
        for keys, rows in store.iter_shards():
            chosen = [(row, entry) for row, key in enumerate(keys) for entry in by_hash.get(key, [])]
            if chosen:
                yield [entry for _, entry in chosen], rows[[row for row, _ in chosen]]

    if not vectors.is_trained:
        sample, gathered = [], 0
        for _, rows in chosen_rows():
            sample.append(rows[: training_sample - gathered])
            gathered += len(sample[-1])
            if gathered >= training_sample:
                break
        if sample:
            vectors.train(torch.cat(sample))
    ordered: list[IndexEntry] = []
    for chosen, rows in chosen_rows():
        vectors.add(rows)
        ordered += chosen
    return ordered


class SearchIndex:
    """An index folder opened for searching: its manifest, FAISS index and stored vectors.

    Raises:
        FileNotFoundError: `folder` holds no index (run `index` first).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        info_path = self.folder / INDEX_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no search index ({INDEX_FILE}); run `index` first")
        self.info = json.loads(info_path.read_text(encoding="utf-8"))
        self.entries = read_manifest(self.folder)
        self.vectors = VectorIndex.load(self.folder / VECTORS_FILE)
        if self.vectors.count != len(self.entries):
            raise ValueError(
                f"{self.folder}: {VECTORS_FILE} holds {self.vectors.count} vectors for {len(self.entries)} manifest "
                "rows (an interrupted update); run `index` again"
            )
        self.by_path = {entry.path: position for position, entry in enumerate(self.entries)}

    @property
    def identity(self) -> dict[str, Any]:
        return self.info["model"]

    def check_model(self, model: SearchModel) -> None:
        """Raises ValueError when `model` is not the model that made this index."""
        _check_model(self.folder, self.identity, model.identity())

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, path: str | Path) -> int:
        """The id of an indexed image by its path (as given or resolved).

        Raises:
            ValueError: the image is not in this index (nothing outside the index is ever read through it).
        """
        for candidate in (str(path), str(Path(path).resolve())):
            if candidate in self.by_path:
                return self.by_path[candidate]
        raise ValueError(f"{path} is not in the index {self.folder}; give the path as its manifest lists it")

    def stored_vectors(self, ids: Sequence[int]) -> torch.Tensor:
        """`(len(ids), dim)` stored embeddings of indexed images, by id."""
        wanted = {self.entries[i].image_hash for i in ids}
        found: dict[str, torch.Tensor] = {}
        store = TensorShardStore(self.folder / EMBEDDINGS_FOLDER, self.identity)
        for keys, rows in store.iter_shards():
            for row, key in enumerate(keys):
                if key in wanted:
                    found[key] = rows[row].float()
        return torch.stack([found[self.entries[i].image_hash] for i in ids])
