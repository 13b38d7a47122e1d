"""Embeddings of a pool on disk, keyed by image hash, written shard by shard so an interrupted run resumes.

Layout of a cache folder (one per method): `cache.json` (which method and settings made it, so two methods' vectors
never mix) and `shard-NNNNN.safetensors` files, each holding `embeddings` `(n, dim)` and, in its metadata, the
`image_hashes` and `content_digests` (sha256 of the file bytes, which finds exact duplicates) of its rows. A shard is
written to a temporary name and renamed, so a killed run leaves only whole shards behind.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


CACHE_INFO = "cache.json"


class EmbeddingCache:
    """Args:
    folder: the cache folder (created if needed).
    identity: what made the embeddings (method name, model, metric, settings); must match an existing cache's.
    """

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        info_path = self.folder / CACHE_INFO
        if info_path.is_file():
            stored = json.loads(info_path.read_text())
            if stored != identity:
                raise ValueError(
                    f"{self.folder} caches embeddings of {stored}, not of {identity}; use another folder per method"
                )
        else:
            info_path.write_text(json.dumps(identity, indent=2, sort_keys=True))
        self.identity = identity
        self._digests: dict[str, str] = {}
        for _, hashes, digests in self._shard_index():
            self._digests.update(zip(hashes, digests, strict=True))

    @classmethod
    def open(cls, folder: str | Path) -> EmbeddingCache:
        """An existing cache, whatever made it."""
        info_path = Path(folder) / CACHE_INFO
        if not info_path.is_file():
            raise FileNotFoundError(f"{folder} is not an embedding cache (no {CACHE_INFO}); run `embed` first")
        return cls(folder, json.loads(info_path.read_text()))

    @property
    def metric(self) -> str:
        return self.identity["metric"]

    def _shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def _shard_index(self) -> Iterator[tuple[Path, list[str], list[str]]]:
        for path in self._shard_paths():
            with safe_open(str(path), framework="pt") as shard:
                metadata = shard.metadata()
            yield path, json.loads(metadata["image_hashes"]), json.loads(metadata["content_digests"])

    def __contains__(self, image_hash: str) -> bool:
        return image_hash in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    @property
    def content_digests(self) -> dict[str, str]:
        """image_hash -> sha256 of the image file."""
        return dict(self._digests)

    def add(self, image_hashes: Sequence[str], content_digests: Sequence[str], embeddings: torch.Tensor) -> Path:
        """Writes one shard; hashes already cached are dropped (the first embedding of an image is kept)."""
        if not (len(image_hashes) == len(content_digests) == embeddings.shape[0]):
            raise ValueError(
                f"{len(image_hashes)} hashes, {len(content_digests)} digests and {embeddings.shape[0]} embeddings"
            )
        keep = [index for index, image_hash in enumerate(image_hashes) if image_hash not in self._digests]
        hashes = [image_hashes[index] for index in keep]
        digests = [content_digests[index] for index in keep]
        number = len(self._shard_paths())
        path = self.folder / f"shard-{number:05d}.safetensors"
        temporary = self.folder / f".shard-{number:05d}.tmp"
        metadata = {"image_hashes": json.dumps(hashes), "content_digests": json.dumps(digests)}
        save_file({"embeddings": embeddings[keep].contiguous().cpu()}, str(temporary), metadata=metadata)
        os.replace(temporary, path)
        self._digests.update(zip(hashes, digests, strict=True))
        return path

    def iter_shards(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        """`(image_hashes, embeddings)` shard by shard, so a pool larger than memory can be searched in pieces."""
        for path, hashes, _ in self._shard_index():
            with safe_open(str(path), framework="pt") as shard:
                yield hashes, shard.get_tensor("embeddings")

    def load(self, image_hashes: Sequence[str] | None = None) -> tuple[list[str], torch.Tensor]:
        """All cached embeddings `(hashes, (n, dim) float32)`, or those of `image_hashes` in that order."""
        all_hashes: list[str] = []
        blocks: list[torch.Tensor] = []
        for hashes, embeddings in self.iter_shards():
            all_hashes += hashes
            blocks.append(embeddings.float())
        if not blocks:
            raise ValueError(f"{self.folder} holds no embeddings yet")
        matrix = torch.cat(blocks)
        if image_hashes is None:
            return all_hashes, matrix
        row_of = {image_hash: row for row, image_hash in enumerate(all_hashes)}
        missing = [image_hash for image_hash in image_hashes if image_hash not in row_of]
        if missing:
            raise KeyError(f"{len(missing)} images are not in {self.folder}, e.g. {missing[:3]}; run `embed` first")
        return list(image_hashes), matrix[[row_of[image_hash] for image_hash in image_hashes]]
