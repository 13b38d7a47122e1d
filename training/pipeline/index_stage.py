"""The index stage: a FAISS index over the embeddings of a run's output shards, built with the one index builder
(`training.vector_index`), trained on a seeded random sample and filled shard by shard, so no step holds more than
one shard's embeddings beside the sample.

Writes `<output>/index/embeddings.faiss` (+ its sidecar) and `<output>/index/ids.jsonl` (vector id -> image_hash,
url); `<output>/index/built_from.json` records the shards' fingerprints, so a rerun over the same finished shards
keeps the index instead of rebuilding it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from training.pipeline.scale_recipe import IndexSettings
from training.pipeline.shards import ShardPlan, shard_path
from training.store import atomic_write
from training.vector_index import VectorIndex


logger = logging.getLogger(__name__)

INDEX_FOLDER = "index"
INDEX_FILE = "embeddings.faiss"
IDS_FILE = "ids.jsonl"
BUILT_FROM_FILE = "built_from.json"


def _shard_embeddings(output_dir: Path, index: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    table = pq.read_table(shard_path(output_dir, index), columns=["image_hash", "url", "embedding"])
    ids, vectors = [], []
    for image_hash, url, embedding in zip(*(table[name].to_pylist() for name in table.column_names), strict=True):
        if embedding is not None:
            ids.append({"image_hash": image_hash, "url": url or ""})
            vectors.append(embedding)
    return np.asarray(vectors, dtype=np.float32), ids


def build_shard_index(
    output_dir: str | Path, plan: ShardPlan, settings: IndexSettings, seed: int = 0, folder: str | Path | None = None
) -> Path:
    """Builds (or keeps, when already built from the same shards) the index of every embedded row of `plan`, in
    `folder` (default `<output_dir>/index`)."""
    output_dir = Path(output_dir)
    folder = Path(folder) if folder is not None else output_dir / INDEX_FOLDER
    built_from = {"factory": settings.factory, "metric": settings.metric, "shards": [s.fingerprint for s in plan.specs]}
    marker = folder / BUILT_FROM_FILE
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == built_from:
        logger.info("index: %s is up to date", folder / INDEX_FILE)
        return folder / INDEX_FILE
    counts = [pq.read_table(shard_path(output_dir, spec.index), columns=["embedding"]) for spec in plan.specs]
    embedded = [table["embedding"].null_count for table in counts]
    totals = [table.num_rows - nulls for table, nulls in zip(counts, embedded, strict=True)]
    total = sum(totals)
    if total == 0:
        raise ValueError(f"{output_dir}: no row has an embedding; run the embed stage before the index stage")
    chosen = np.sort(np.random.default_rng(seed).permutation(total)[: settings.training_sample])
    sample, offset = [], 0
    for spec, count in zip(plan.specs, totals, strict=True):
        in_shard = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
        if len(in_shard):
            vectors, _ = _shard_embeddings(output_dir, spec.index)
            sample.append(vectors[in_shard])
        offset += count
    sample_vectors = np.concatenate(sample)
    index = VectorIndex(sample_vectors.shape[1], settings.factory, settings.metric)
    index.train(sample_vectors)
    ids: list[dict[str, str]] = []
    for spec in plan.specs:
        vectors, shard_ids = _shard_embeddings(output_dir, spec.index)
        if shard_ids:
            index.add(vectors)
            ids += shard_ids
    index.save(folder / INDEX_FILE)
    atomic_write(folder / IDS_FILE, "".join(json.dumps(row) + "\n" for row in ids).encode("utf-8"))
    atomic_write(marker, json.dumps(built_from).encode("utf-8"))
    logger.info("index: %d vectors, %s, in %s", index.count, settings.factory, folder / INDEX_FILE)
    return folder / INDEX_FILE


def read_index_ids(output_dir: str | Path) -> list[dict[str, str]]:
    """Vector id -> `{"image_hash", "url"}` of the index built in `output_dir`."""
    path = Path(output_dir) / INDEX_FOLDER / IDS_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
