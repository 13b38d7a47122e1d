"""Indexing a collection for relational search: embeddings kept shard by shard, a manifest and a FAISS index.

An index folder holds:
- `index.json`: the model identity that made it (name, weights fingerprint, processor settings, text encoder), the
  FAISS factory and the count; an index refuses to be updated or searched with another model;
- `embeddings/`: a `TensorShardStore` of relsim vectors keyed by image hash, each with the sha256 of the bytes it was
  computed from; a shard is written every `shard_size` images, so an interrupted run resumes where it stopped;
- `manifest.jsonl`: one row per indexed image, in FAISS id order: path (absolute and resolved, however the source
  was given; `<dataset>[<row>]` for a dataset row), sha256, size, image_hash, mtime_ns and the shard holding its
  embedding;
- `unreadable.jsonl`: the images left out, each with its reason;
- `vectors.faiss` (+ `vectors.faiss.json`): the FAISS index (`training.vector_index`), rebuilt from the store on
  every run (cheap next to embedding), so deleted files drop out and the ids always follow the manifest.

`index.json` is written last, atomically, and records the generation (`training.search.generation`): the size and
sha256 of `vectors.faiss`, its sidecar and the manifest, and the shards the manifest points into. `SearchIndex` checks
every file against it, so a torn update (an interrupted run, a file copied in from another index) is a
`DamagedIndexError` naming the file, never wrong answers; an index written before the record existed is refused until
`index` is rerun on it.

Rerunning on a grown or changed collection embeds only images whose bytes the store does not hold yet (a file is
read again only when its size or modification time changed; `verify=True` reads every file again, for files replaced
under the same size and modification time).
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

from training.json_lines import read_json_lines, write_json_lines
from training.search.generation import (
    INDEX_FILE,
    INDEX_FORMAT,
    DamagedIndexError,
    check_size,
    file_record,
    read_info,
    read_recorded,
    recorded_files,
)
from training.search.model import SearchModel
from training.search.sources import (
    Collected,
    IndexEntry,
    from_dataset,
    from_folder,
    from_paths,
    is_url,
    read_numbered_path_list,
)
from training.store import DamagedShardError, IdentityMismatchError, TensorShardStore, atomic_write, read_shard
from training.url_fetch import FetchPolicy
from training.vector_index import VectorIndex, sidecar_path


logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
UNREADABLE_FILE = "unreadable.jsonl"
VECTORS_FILE = "vectors.faiss"
VECTORS_SIDECAR = sidecar_path(VECTORS_FILE).name
EMBEDDINGS_FOLDER = "embeddings"
RECORDED_FILES = (VECTORS_FILE, VECTORS_SIDECAR, MANIFEST_FILE)


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


def _read_jsonl(path: Path, data: bytes | None = None) -> list[dict[str, Any]]:
    if data is None and not path.is_file():
        return []
    return [row for _, row in read_json_lines(path, data)]


def read_manifest(folder: str | Path) -> list[IndexEntry]:
    """The indexed images of an index folder, in FAISS id order (as the file stands: `SearchIndex` checks it
    against the index's record first).

    Raises:
        ValueError: a row misses a field (the message names file, line and field).
    """
    path = Path(folder) / MANIFEST_FILE
    return _manifest_entries(path, _read_jsonl(path))


def _manifest_entries(path: Path, rows: Sequence[dict[str, Any]]) -> list[IndexEntry]:
    entries = []
    for number, row in enumerate(rows, start=1):
        try:
            entries.append(
                IndexEntry(row["path"], row["image_hash"], row["sha256"], row["size"], row.get("mtime_ns", 0))
            )
        except KeyError as error:
            raise ValueError(f"{path}:{number}: {error.args[0]}: missing from this manifest row") from error
    return entries


def _committed_manifest(folder: Path) -> list[IndexEntry]:
    """The previous run's manifest when it is the one its record names; otherwise (a torn update, an index from
    before the record) nothing, so every file is read and hashed again rather than trusted by size and time."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return []
    try:
        info = read_info(folder)
        rows = _read_jsonl(path, read_recorded(path, recorded_files(folder, info, RECORDED_FILES)[MANIFEST_FILE]))
        return _manifest_entries(path, rows)
    except (OSError, ValueError, KeyError) as error:
        logger.warning("%s cannot be trusted (%s); every file is read and hashed again", path, error)
        return []


def _from_list_file(
    list_file: Path,
    known: dict,
    download_folder: Path,
    allow_outside_list_folder: bool = False,
    fetch_policy: FetchPolicy | None = None,
) -> Collected:
    """The images a list file names. Every path, relative or absolute, must lead inside the list's folder (links
    resolved) unless `allow_outside_list_folder`: one that leads out is reported with its line and left out."""
    root = list_file.parent.resolve()
    kept, refused = [], []
    for number, text in read_numbered_path_list(list_file):
        if is_url(text):
            kept.append(text)
            continue
        path = root / text  # an absolute `text` stays itself
        if allow_outside_list_folder or path.resolve().is_relative_to(root):
            kept.append(str(path))
        else:
            reason = f"leads outside {root}, the folder of the list; left out (--allow-outside-list-folder reads it)"
            refused.append((text, f"{list_file}:{number}: {reason}"))
    collected = from_paths(kept, known=known, download_folder=download_folder, policy=fetch_policy)
    collected.unreadable = refused + collected.unreadable
    return collected


def _collect(
    folder: str | Path | None,
    paths: Sequence[str] | str | Path | None,
    dataset: Any,
    image_column: str,
    known: dict,
    download_folder: Path,
    allow_outside_list_folder: bool = False,
    fetch_policy: FetchPolicy | None = None,
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
        collected = _from_list_file(Path(paths), known, download_folder, allow_outside_list_folder, fetch_policy)
        return collected, {"list": str(Path(paths).resolve())}
    collected = from_paths(paths, known=known, download_folder=download_folder, policy=fetch_policy)
    return collected, {"paths": len(paths)}


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
    verify: bool = False,
    allow_outside_list_folder: bool = False,
    fetch_policy: FetchPolicy | None = None,
) -> IndexReport:
    """Builds or updates the search index in `output` from one source.

    Args:
        output: the index folder (created if needed; an existing one is updated incrementally).
        model: the `SearchModel` that embeds; an existing index made by another model is refused.
        folder: a folder of images, searched recursively.
        paths: a list of image paths, or the path of a list file (one path per line; relative paths are read from
            the list's folder; every path must lead inside that folder). URLs are fetched by img2dataset into
            `output/downloads/`.
        dataset: a `datasets.Dataset` whose `image_column` holds the images.
        factory: the FAISS index factory ("Flat" is exact; e.g. "IVF1024,PQ32" for millions of images).
        shard_size: images embedded per saved shard (what an interruption can lose at most).
        verify: read and hash every file again instead of trusting an unchanged size and modification time, so a
            file replaced under the same size and time is embedded again.
        allow_outside_list_folder: let a list file name images outside its own folder (absolute or `../` paths).
        fetch_policy: which URL schemes are fetched and how many bytes an image may have (default: http and https,
            32 MiB); a URL of another scheme is listed as unreadable with its reason, never read.

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
        try:
            _check_model(output, read_info(output)["model"], identity)
        except DamagedIndexError as error:  # the store's own identity still refuses another model's rows
            logger.warning("%s: %s; this run writes it anew", error.path, error.reason)
    previous = {entry.path: entry for entry in _committed_manifest(output)}
    collected, source = _collect(
        folder, paths, dataset, image_column, {} if verify else previous, output / "downloads",
        allow_outside_list_folder, fetch_policy,
    )  # fmt: skip
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
    ordered, shard_files = _fill(vectors, store, entries)
    shards = list(dict.fromkeys(shard_files))
    position = {name: number for number, name in enumerate(shards)}
    vectors.save(output / VECTORS_FILE)
    write_json_lines(
        output / MANIFEST_FILE,
        [entry.manifest_row() | {"shard": position[name]} for entry, name in zip(ordered, shard_files, strict=True)],
    )
    write_json_lines(output / UNREADABLE_FILE, [{"path": path, "reason": reason} for path, reason in unreadable])
    # the commit: written last, it names the one generation of files that belong together
    files = {name: file_record(output / name) for name in RECORDED_FILES}
    info = {"format": INDEX_FORMAT, "model": identity, "factory": factory, "count": len(ordered), "source": source,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files, "shards": shards}  # fmt: skip
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
) -> tuple[list[IndexEntry], list[str]]:
    """Adds the vectors of `entries` shard by shard; returns the entries in the order their vectors got ids (files
    with the same bytes share one stored vector) and the name of the shard file holding each one's vector. A trained
    factory (IVF, PQ) first learns from up to `training_sample` vectors gathered from the leading shards."""
    by_hash: dict[str, list[IndexEntry]] = {}
    for entry in entries:
        by_hash.setdefault(entry.image_hash, []).append(entry)

    def chosen_rows() -> Iterator[tuple[str, list[IndexEntry], torch.Tensor]]:
        for path, keys, rows in store.iter_shard_files():
            chosen = [(row, entry) for row, key in enumerate(keys) for entry in by_hash.get(key, [])]
            if chosen:
                yield path.name, [entry for _, entry in chosen], rows[[row for row, _ in chosen]]

    if not vectors.is_trained:
        sample, gathered = [], 0
        for _, _, rows in chosen_rows():
            sample.append(rows[: training_sample - gathered])
            gathered += len(sample[-1])
            if gathered >= training_sample:
                break
        if sample:
            vectors.train(torch.cat(sample))
    ordered: list[IndexEntry] = []
    shard_files: list[str] = []
    for name, chosen, rows in chosen_rows():
        vectors.add(rows)
        ordered += chosen
        shard_files += [name] * len(chosen)
    return ordered, shard_files


class SearchIndex:
    """An index folder opened for searching: its manifest, FAISS index and stored vectors, each checked against the
    generation `index.json` records.

    Raises:
        FileNotFoundError: `folder` holds no index (run `index` first).
        DamagedIndexError: a file is missing, damaged, or from another generation (named, with the repair).
        ValueError: an index written before its files were recorded together (rerun `index` to upgrade it).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        info_path = self.folder / INDEX_FILE
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.folder} holds no search index ({INDEX_FILE}); run `index` first")
        try:
            self._open()
        except DamagedIndexError:
            if self._info_bytes == info_path.read_bytes():
                raise
            self._open()  # an `index` run committed a new generation while this one was being read

    @property
    def record(self) -> bytes:
        """The bytes of the `index.json` this index was opened from: the generation it answers from (a service
        compares them with the file on disk to pick up a rebuilt index)."""
        return self._info_bytes

    def _open(self) -> None:
        self._info_bytes = (self.folder / INDEX_FILE).read_bytes()
        self.info = read_info(self.folder, self._info_bytes)
        files = recorded_files(self.folder, self.info, RECORDED_FILES)
        manifest = self.folder / MANIFEST_FILE
        rows = _read_jsonl(manifest, read_recorded(manifest, files[MANIFEST_FILE]))
        self.entries = _manifest_entries(manifest, rows)
        shards = self.info["shards"]
        self._shard_of = [row.get("shard") for row in rows]
        for number, shard in enumerate(self._shard_of, start=1):
            if not (isinstance(shard, int) and 0 <= shard < len(shards)):
                raise DamagedIndexError(manifest, f"line {number}: shard {shard!r} is not one of the recorded shards")
        vectors = self.folder / VECTORS_FILE
        read_recorded(self.folder / VECTORS_SIDECAR, files[VECTORS_SIDECAR])
        check_size(vectors, files[VECTORS_FILE])  # a truncated file is named before FAISS reads it
        try:
            self.vectors = VectorIndex.load(vectors, sha256=files[VECTORS_FILE]["sha256"])
        except ValueError as error:
            raise DamagedIndexError(vectors, str(error).removeprefix(f"{vectors}: ")) from error
        if self.vectors.count != len(self.entries):
            raise DamagedIndexError(
                vectors, f"holds {self.vectors.count} vectors for {len(self.entries)} manifest rows"
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
        """`(len(ids), dim)` stored embeddings of indexed images, by id, read from the shards that hold them.

        Raises:
            DamagedIndexError: a shard that holds one of them is missing or damaged (named, with the repair).
        """
        ids = list(ids)
        wanted: dict[int, dict[str, int]] = {}
        for id in ids:
            wanted.setdefault(self._shard_of[id], {})[self.entries[id].image_hash] = id
        found: dict[str, torch.Tensor] = {}
        for shard, hashes in wanted.items():
            path = self.folder / EMBEDDINGS_FOLDER / self.info["shards"][shard]
            example = self.entries[next(iter(hashes.values()))].path
            if not path.is_file():
                raise DamagedIndexError(path, f"missing (it holds the embedding of {example})")
            try:
                manifest, rows = read_shard(path)
            except DamagedShardError as error:
                raise DamagedIndexError(path, f"{error.reason} (it holds the embedding of {example})") from error
            for row, key in enumerate(manifest.keys):
                if key in hashes:
                    found[key] = rows[row].float()
            absent = [self.entries[id].path for key, id in hashes.items() if key not in found]
            if absent:
                raise DamagedIndexError(path, f"does not hold the embedding of {absent[0]}, as the manifest says")
        return torch.stack([found[self.entries[i].image_hash] for i in ids])
