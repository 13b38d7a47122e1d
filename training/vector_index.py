"""The one FAISS index builder: evaluation retrieval, the search index and the data pipeline's index stage all build,
fill, save and search their indexes here.

- Any FAISS factory string: "Flat" (exact, the default) for pools that fit in memory, "IVF4096,PQ64" and the like
  for large ones (approximate; `nprobe` lists are visited per query).
- Metrics: "inner_product" (cosine on unit vectors: relsim, CLIP, DINO) or "l2" (LPIPS features). Scores always come
  back "higher is closer" (minus the squared distance for "l2").
- A trained index (IVF, PQ) learns its clusters and codebooks from a sample (`train`, or the first chunk `add` is
  given), then is filled chunk by chunk, so a caller can fill it shard by shard without holding the pool in memory.
- Saved with `faiss.write_index` (atomically) beside a small JSON sidecar (`<file>.json`: factory, dim, count,
  metric), which `load` checks against the index it reads.

faiss is imported on first use, so importing this module costs nothing where no index is built.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import import_extra
from training.store import atomic_write


INDEX_METRICS = ("inner_product", "l2")
SIDECAR_FORMAT = "relsim-vector-index-1"


def _faiss() -> Any:
    return import_extra("faiss", "eval", "the FAISS vector index")


def as_float32_rows(vectors: Any, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """`vectors` (numpy array or torch tensor, `(n, dim)`) as the C-contiguous float32 array FAISS reads.

    Raises:
        ValueError: not 2-D, the wrong width, or non-finite values (FAISS would index them silently).
    """
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().float().cpu().numpy()
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (count, dim) array, got shape {array.shape}")
    if dim is not None and array.shape[1] != dim:
        raise ValueError(f"{what} have {array.shape[1]} dimensions; this index holds {dim}-dimensional vectors")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} hold non-finite values (rows {np.flatnonzero(~np.isfinite(array).all(1))[:5]})")
    return array


@dataclass(frozen=True)
class IndexInfo:
    """What the sidecar records: enough to rebuild the same kind of index and to check the one read back."""

    factory: str
    dim: int
    count: int
    metric: str
    format: str = SIDECAR_FORMAT


class VectorIndex:
    """A FAISS index being built or searched.

    Args:
        dim: the vectors' width.
        factory: a FAISS factory string ("Flat", "IVF256,Flat", "IVF4096,PQ64", "HNSW32", ...).
        metric: "inner_product" (unit vectors: cosine) or "l2".

    Raises:
        ValueError: an unknown metric, or a factory string FAISS does not know (the message names it).
    """

    def __init__(self, dim: int, factory: str = "Flat", metric: str = "inner_product") -> None:
        if metric not in INDEX_METRICS:
            raise ValueError(f"unknown index metric {metric!r}; expected one of {INDEX_METRICS}")
        if dim < 1:
            raise ValueError(f"an index needs vectors of at least one dimension, got dim={dim}")
        faiss = _faiss()
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "inner_product" else faiss.METRIC_L2
        try:
            self.index = faiss.index_factory(dim, factory, faiss_metric)
        except RuntimeError as error:
            raise ValueError(f"FAISS cannot build index factory {factory!r} for dim {dim}: {error}") from error
        self.dim, self.factory, self.metric = dim, factory, metric

    @property
    def count(self) -> int:
        """Vectors indexed so far; they are numbered 0..count-1 in the order they were added."""
        return int(self.index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def info(self) -> IndexInfo:
        return IndexInfo(self.factory, self.dim, self.count, self.metric)

    def train(self, sample: Any) -> None:
        """Learns the clusters/codebooks of a trained index from `sample` `(n, dim)`; nothing to do for "Flat".

        Raises:
            ValueError: the sample is too small for the factory (e.g. fewer vectors than IVF lists).
        """
        if self.is_trained:
            return
        sample = as_float32_rows(sample, self.dim, "training vectors")
        try:
            self.index.train(sample)
        except RuntimeError as error:
            raise ValueError(
                f"cannot train FAISS index {self.factory!r} on {len(sample)} vectors ({error}); give it a larger "
                "sample or a smaller factory (fewer IVF lists, fewer PQ bits)"
            ) from error

    def add(self, vectors: Any, chunk_size: int = 65536) -> None:
        """Appends `vectors` `(n, dim)` (ids continue from `count`); an untrained index is first trained on them."""
        vectors = as_float32_rows(vectors, self.dim)
        if len(vectors) == 0:
            return
        if not self.is_trained:
            self.train(vectors)
        for start in range(0, len(vectors), chunk_size):
            self.index.add(vectors[start : start + chunk_size])

    def search(self, queries: Any, k: int, nprobe: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """The `k` nearest indexed vectors of each query.

        Args:
            queries: `(q, dim)`.
            k: neighbours per query; capped at `count`.
            nprobe: IVF lists visited per query (ignored by indexes without lists); all lists make IVF exact.

        Returns:
            `(scores, ids)`, both `(q, min(k, count))`, best first; scores higher-is-closer (inner product, or
            minus the squared L2 distance); an id of -1 (score -inf) where an approximate index found fewer.
        """
        queries = as_float32_rows(queries, self.dim, "queries")
        k = min(k, self.count)
        if k <= 0 or len(queries) == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        faiss = _faiss()
        if _has_lists(self.index):
            faiss.ParameterSpace().set_index_parameter(self.index, "nprobe", nprobe)
        found, ids = self.index.search(queries, k)
        scores = found if self.metric == "inner_product" else -found
        scores = np.where(ids >= 0, scores, -np.inf).astype(np.float32)
        return scores, ids

    def save(self, path: str | Path) -> Path:
        """Writes the index (atomically) to `path` and its sidecar to `<path>.json`; returns `path`."""
        path = Path(path)
        faiss = _faiss()
        atomic_write(path, lambda temporary: faiss.write_index(self.index, str(temporary)))
        atomic_write(sidecar_path(path), json.dumps(asdict(self.info), indent=2).encode())
        return path

    @classmethod
    def load(cls, path: str | Path, sha256: str | None = None) -> VectorIndex:
        """An index written by `save`.

        Args:
            sha256: the checksum recorded for the file; the file is hashed and parsed through one open file, so the
                bytes checked are the bytes read (a file replaced in between cannot slip in).

        Raises:
            FileNotFoundError: the index or its sidecar is missing.
            ValueError: the sidecar is malformed or disagrees with the index (count, dim): a half-replaced pair; the
                file is not one FAISS can read (truncated, foreign); or its sha256 is not `sha256`.
        """
        path = Path(path)
        sidecar = sidecar_path(path)
        if not path.is_file() or not sidecar.is_file():
            raise FileNotFoundError(f"{path} is not a saved vector index (it needs the file and {sidecar.name})")
        try:
            info = IndexInfo(**json.loads(sidecar.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as error:
            raise ValueError(f"{sidecar}: not a vector-index sidecar ({error})") from error
        if info.format != SIDECAR_FORMAT or info.metric not in INDEX_METRICS:
            raise ValueError(f"{sidecar}: format {info.format!r}, metric {info.metric!r}; expected {SIDECAR_FORMAT}")
        index = cls.__new__(cls)
        index.dim, index.factory, index.metric = info.dim, info.factory, info.metric
        faiss = _faiss()
        with path.open("rb") as file:
            if sha256 is not None:
                found = hashlib.file_digest(file, "sha256").hexdigest()
                if found != sha256:
                    raise ValueError(
                        f"{path}: its sha256 ({found[:12]}...) is not the recorded one ({sha256[:12]}...): replaced "
                        "or damaged since it was written"
                    )
                file.seek(0)
            try:
                index.index = faiss.read_index(faiss.PyCallbackIOReader(file.read))
            except RuntimeError as error:
                reason = str(error).strip().splitlines()[0].rsplit("Error: ", 1)[-1] if str(error).strip() else "?"
                raise ValueError(
                    f"{path}: FAISS cannot read it (truncated, or not a FAISS index: {reason}); build it again"
                ) from error
        if index.count != info.count or index.index.d != info.dim:
            raise ValueError(
                f"{path} holds {index.count} vectors of dim {index.index.d}, but {sidecar.name} says {info.count} of "
                f"dim {info.dim}: the pair was not written together; build the index again"
            )
        return index


def sidecar_path(path: str | Path) -> Path:
    """Where the JSON description of the index at `path` lives."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _has_lists(index: Any) -> bool:
    faiss = _faiss()
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def build_index(
    chunks: Any, dim: int, factory: str = "Flat", metric: str = "inner_product", training_sample: Any = None
) -> VectorIndex:
    """An index over `chunks` (an iterable of `(n, dim)` blocks, e.g. one per shard, read once).

    Args:
        training_sample: the vectors a trained index learns from; default the first chunk.
    """
    index = VectorIndex(dim, factory, metric)
    if training_sample is not None:
        index.train(training_sample)
    for chunk in chunks:
        index.add(chunk)
    return index


def search(index: VectorIndex, queries: Any, k: int, nprobe: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """`index.search`: `(scores, ids)` of the `k` nearest vectors of each query (see `VectorIndex.search`)."""
    return index.search(queries, k, nprobe=nprobe)


def recall_against_exact(approximate_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each query's exact top-k found in its approximate top-k (recall@k of an approximate index)."""
    if approximate_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"{approximate_ids.shape[0]} approximate rows against {exact_ids.shape[0]} exact ones")
    if exact_ids.size == 0:
        return 1.0
    found = [
        len(set(a[a >= 0].tolist()) & set(e.tolist())) / len(e) for a, e in zip(approximate_ids, exact_ids, strict=True)
    ]
    return float(np.mean(found))
