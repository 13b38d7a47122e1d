"""Embeddings of a pool on disk, written shard by shard so an interrupted run resumes (a `TensorShardStore`).

One folder per method. Its identity (method, metric, settings and the model's weights fingerprint) is fixed when the
folder is made: a method whose weights changed, even at the same path, is refused instead of served stale vectors.
Each row is keyed by the image hash and carries the sha256 of the image file it was computed from (which also finds
exact duplicates during retrieval); `embed` re-embeds an image whose file changed under the same hash, and the new
row supersedes the old. Shards are named by their content's sha256 and verified on open and on every read (see
`training.store`): a damaged shard is named in a warning and its images are embedded again by the next `embed`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from training.store import IdentityMismatchError, TensorShardStore, read_identity


class EmbeddingCache:
    """Args:
    folder: the cache folder (created if needed).
    identity: what made the embeddings (method name, model and its weights fingerprint, metric, settings); must
        match an existing cache's.

    Raises:
        ValueError: the folder caches another identity's embeddings (the message names the differing fields).
    """

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        try:
            self.store = TensorShardStore(folder, identity)
        except IdentityMismatchError as error:
            raise ValueError(
                f"{error.folder} caches embeddings of {error.stored}, not of {error.wanted} (they differ in "
                f"{', '.join(error.fields)}); use another folder per method and model, or delete this one to embed "
                "afresh"
            ) from error
        self.folder = self.store.folder
        self.identity = self.store.identity

    @classmethod
    def open(cls, folder: str | Path) -> EmbeddingCache:
        """An existing cache, whatever made it."""
        try:
            return cls(folder, read_identity(folder))
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{folder} is not an embedding cache ({error}); run `embed` first") from error

    def made_by(self, identity: dict[str, Any]) -> bool:
        """True when `identity` (as it reads back from JSON) is the one this cache was made with."""
        return self.identity == json.loads(json.dumps(identity))

    @property
    def metric(self) -> str:
        return self.identity["metric"]

    @property
    def damaged_shards(self) -> dict[Path, str]:
        """Shards that failed verification (path -> reason); their images count as not embedded."""
        return dict(self.store.damaged)

    def __contains__(self, image_hash: str) -> bool:
        return image_hash in self.store

    def __len__(self) -> int:
        return len(self.store)

    @property
    def content_digests(self) -> dict[str, str]:
        """image_hash -> sha256 of the image file its embedding was computed from."""
        return self.store.content_keys()

    def holds(self, image_hash: str, content_digest: str) -> bool:
        """True when the cached embedding of `image_hash` was computed from a file with this sha256."""
        return self.store.holds(image_hash, content_digest)

    def add(self, image_hashes: Sequence[str], content_digests: Sequence[str], embeddings: torch.Tensor) -> Path | None:
        """Writes one shard; rows already cached from the same file content are dropped, a row for a changed file
        supersedes the old one. Returns the shard's path, or None when nothing was new.

        Raises:
            ValueError: mismatched lengths, a repeated hash, or a non-finite embedding (nothing is written).
        """
        return self.store.add(image_hashes, content_digests, embeddings.float())

    def iter_shards(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        """`(image_hashes, embeddings)` shard by shard, so a pool larger than memory can be searched in pieces."""
        return self.store.iter_shards()

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
