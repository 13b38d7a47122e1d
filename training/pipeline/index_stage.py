"""The index stage: a FAISS index over the embeddings of a run's output shards, built with the one index builder
(`training.vector_index`), trained on a seeded random sample and filled shard by shard, so no step holds more than
one shard's embeddings beside the sample.

It then measures what an approximate factory (IVF, PQ) costs in quality: recall@k (k = `recall_k`, 10) of the
index, searched with the recipe's `nprobe`, against exact search over the same vectors, on `recall_queries` seeded
pool vectors used as queries (each is among its own exact neighbours). Exact search streams shard by shard too
(a Flat index per shard, top-k merged), so its cost is queries x pool dot products; `recall_queries: 0` skips it.

Writes `<output>/index/embeddings.faiss` (+ its sidecar), `<output>/index/ids.jsonl` (vector id -> image_hash, url)
and `<output>/index/report.json` (the `IndexReport`, also in the run's `summary.json`); `built_from.json` records the
shards' fingerprints and the settings, so a rerun over the same finished shards keeps the index and its report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from training.json_lines import read_json_lines
from training.pipeline.run.recipe import IndexSettings
from training.pipeline.run.shards import ShardPlan, shard_path
from training.store import atomic_write
from training.vector_index import VectorIndex, recall_against_exact


logger = logging.getLogger(__name__)

INDEX_FOLDER = "index"
INDEX_FILE = "embeddings.faiss"
IDS_FILE = "ids.jsonl"
REPORT_FILE = "report.json"
BUILT_FROM_FILE = "built_from.json"


@dataclass
class IndexReport:
    """What was built and how close it is to exact search: `recall` is the mean share of each query's exact
    `recall_k` nearest found among the index's `recall_k` (None when `recall_queries` is 0)."""

    path: str
    factory: str
    metric: str
    vectors: int
    nprobe: int
    recall_k: int
    recall_queries: int
    recall: float | None


def _shard_embeddings(output_dir: Path, index: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    table = pq.read_table(shard_path(output_dir, index), columns=["image_hash", "url", "embedding"])
    ids, vectors = [], []
    for image_hash, url, embedding in zip(*(table[name].to_pylist() for name in table.column_names), strict=True):
        if embedding is not None:
            ids.append({"image_hash": image_hash, "url": url or ""})
            vectors.append(embedding)
    return np.asarray(vectors, dtype=np.float32), ids


def _embedded_counts(output_dir: Path, plan: ShardPlan) -> list[int]:
    counts = []
    for spec in plan.specs:
        column = pq.read_table(shard_path(output_dir, spec.index), columns=["embedding"])["embedding"]
        counts.append(len(column) - column.null_count)
    return counts


def _gather(output_dir: Path, plan: ShardPlan, counts: list[int], positions: np.ndarray) -> np.ndarray:
    """The embedded vectors at `positions` (sorted, numbered over all shards' embedded rows), reading only the
    shards that hold some."""
    chunks, offset = [], 0
    for spec, count in zip(plan.specs, counts, strict=True):
        in_shard = positions[(positions >= offset) & (positions < offset + count)] - offset
        if len(in_shard):
            vectors, _ = _shard_embeddings(output_dir, spec.index)
            chunks.append(vectors[in_shard])
        offset += count
    return np.concatenate(chunks)


def exact_neighbours(output_dir: Path, plan: ShardPlan, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    """`(len(queries), k)` ids (numbered over all shards' embedded rows) of each query's exact nearest, found shard
    by shard with a Flat index and merged (ties keep the lower id)."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    offset = 0
    for spec in plan.specs:
        vectors, _ = _shard_embeddings(output_dir, spec.index)
        if len(vectors):
            flat = VectorIndex(vectors.shape[1], "Flat", metric)
            flat.add(vectors)
            scores, ids = flat.search(queries, k)
            scores, ids = np.concatenate([best_scores, scores], 1), np.concatenate([best_ids, ids + offset], 1)
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            best_scores, best_ids = np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)
        offset += len(vectors)
    return best_ids


def build_shard_index(
    output_dir: str | Path, plan: ShardPlan, settings: IndexSettings, seed: int = 0, folder: str | Path | None = None
) -> IndexReport:
    """Builds (or keeps, when already built from the same shards and settings) the index of every embedded row of
    `plan` in `folder` (default `<output_dir>/index`), and reports its recall against exact search."""
    output_dir = Path(output_dir)
    folder = Path(folder) if folder is not None else output_dir / INDEX_FOLDER
    built_from = {
        "factory": settings.factory, "metric": settings.metric, "training_sample": settings.training_sample,
        "nprobe": settings.nprobe, "recall_queries": settings.recall_queries, "recall_k": settings.recall_k,
        "seed": seed, "shards": [spec.fingerprint for spec in plan.specs],
    }  # fmt: skip
    marker, report_file = folder / BUILT_FROM_FILE, folder / REPORT_FILE
    if marker.is_file() and report_file.is_file() and json.loads(marker.read_text(encoding="utf-8")) == built_from:
        logger.info("index: %s is up to date", folder / INDEX_FILE)
        return IndexReport(**json.loads(report_file.read_text(encoding="utf-8")))
    counts = _embedded_counts(output_dir, plan)
    total = sum(counts)
    if total == 0:
        raise ValueError(f"{output_dir}: no row has an embedding; run the embed stage before the index stage")
    chosen = np.sort(np.random.default_rng(seed).permutation(total)[: settings.training_sample])
    sample = _gather(output_dir, plan, counts, chosen)
    index = VectorIndex(sample.shape[1], settings.factory, settings.metric)
    index.train(sample)
    del sample

    def fill(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8") as out:
            for spec in plan.specs:
                vectors, shard_ids = _shard_embeddings(output_dir, spec.index)
                if shard_ids:
                    index.add(vectors)
                    out.writelines(json.dumps(row) + "\n" for row in shard_ids)

    atomic_write(folder / IDS_FILE, fill)
    index.save(folder / INDEX_FILE)
    recall = None
    if settings.recall_queries > 0:
        positions = np.sort(np.random.default_rng(seed + 1).permutation(total)[: settings.recall_queries])
        queries = _gather(output_dir, plan, counts, positions)
        exact = exact_neighbours(output_dir, plan, queries, min(settings.recall_k, total), settings.metric)
        _, found = index.search(queries, settings.recall_k, nprobe=settings.nprobe)
        recall = recall_against_exact(found, exact)
    report = IndexReport(
        str(folder / INDEX_FILE), settings.factory, settings.metric, index.count, settings.nprobe, settings.recall_k,
        min(settings.recall_queries, total), recall,
    )  # fmt: skip
    atomic_write(report_file, (json.dumps(asdict(report), indent=1) + "\n").encode("utf-8"))
    atomic_write(marker, json.dumps(built_from).encode("utf-8"))
    logger.info(
        "index: %d vectors, %s, in %s; recall@%d against exact search on %d queries (nprobe %d): %s", index.count,
        settings.factory, folder / INDEX_FILE, settings.recall_k, report.recall_queries, settings.nprobe,
        "not measured" if recall is None else f"{recall:.3f}",
    )  # fmt: skip
    return report


def read_index_ids(output_dir: str | Path) -> list[dict[str, str]]:
    """Vector id -> `{"image_hash", "url"}` of the index built in `output_dir`."""
    path = Path(output_dir) / INDEX_FOLDER / IDS_FILE
    return [row for _, row in read_json_lines(path)]
