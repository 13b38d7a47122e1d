"""Embeds the images of a pool that a cache does not hold yet; unreadable images are reported and counted."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from torch.utils.data import DataLoader, Dataset
from transformers.utils.logging import tqdm

from modeling_relsim.image_decoding import DEFAULT_MAX_IMAGE_PIXELS, UnreadableImageError, decode_image
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.pool import PoolItem
from training.image_ids import file_sha256
from training.json_lines import append_json_lines


logger = logging.getLogger(__name__)

FAILURES_FILE = "failures.jsonl"


@dataclass
class EmbedReport:
    embedded: int = 0
    already_cached: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)


# What a method's preprocessing raises on one image it cannot take (an aspect ratio the processor refuses, a size
# an image processor cannot resize); anything else is a bug and stops the run.
PREPROCESSING_ERRORS = (ValueError, TypeError, OSError, RuntimeError)


def read_image(path: str, max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[PIL.Image.Image, str]:
    """The image as every relsim path decodes it (`modeling_relsim.decode_image`: RGB, EXIF-rotated, transparency on
    white, 16-bit scaled, pixel limit) and the sha256 of its file; the file is read once.

    Raises:
        UnreadableImageError: naming `path` (missing, truncated, not an image, too many pixels).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as error:
        raise UnreadableImageError(str(path), "file not found") from error
    except OSError as error:
        raise UnreadableImageError(str(path), f"{type(error).__name__}: {error}") from error
    return decode_image(data, source=str(path), max_image_pixels=max_image_pixels), hashlib.sha256(data).hexdigest()


class _PoolImages(Dataset):
    def __init__(self, items: Sequence[PoolItem]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[PoolItem, PIL.Image.Image | None, str]:
        item = self.items[index]
        try:
            image, digest = read_image(item.image)
        except UnreadableImageError as error:
            return item, None, error.reason
        return item, image, digest


def _failure(item: PoolItem, reason: str) -> dict[str, str]:
    return {"image_hash": item.image_hash, "image": item.image, "reason": reason}


class _Collate:
    """Preprocesses a batch; when the method refuses it, each image is tried alone and the ones it refuses become
    failures, so one image never stops the run."""

    def __init__(self, method: EmbeddingMethod) -> None:
        self.method = method

    def _preprocess_each(self, readable: list) -> tuple[list, Any, list[dict[str, str]]]:
        try:
            return readable, self.method.preprocess([image for _, image, _ in readable]), []
        except PREPROCESSING_ERRORS:
            pass
        kept, failures = [], []
        for item, image, digest in readable:
            try:
                self.method.preprocess([image])
            except PREPROCESSING_ERRORS as error:
                reason = error.reason if isinstance(error, UnreadableImageError) else f"{type(error).__name__}: {error}"
                failures.append(_failure(item, f"{self.method.name} preprocessing refused it: {reason}"))
            else:
                kept.append((item, image, digest))
        return kept, self.method.preprocess([image for _, image, _ in kept]) if kept else None, failures

    def __call__(self, samples: list) -> dict[str, Any]:
        readable = [(item, image, digest) for item, image, digest in samples if image is not None]
        failures = [_failure(item, why) for item, image, why in samples if image is None]
        batch = None
        if readable:
            readable, batch, refused = self._preprocess_each(readable)
            failures += refused
        return {
            "image_hashes": [item.image_hash for item, _, _ in readable],
            "content_digests": [digest for _, _, digest in readable],
            "batch": batch,
            "failures": failures,
        }


def _record_failures(failures: list[dict[str, str]], cache: EmbeddingCache, attempted: int) -> None:
    if not failures:
        return
    append_json_lines(cache.folder / FAILURES_FILE, failures)
    logger.warning("%d of %d images could not be read; see %s", len(failures), attempted, cache.folder / FAILURES_FILE)


def _not_cached(cache: EmbeddingCache, items: Sequence[PoolItem], max_threads: int = 8) -> list[PoolItem]:
    """The items without an embedding computed from their file's current content. The files of cached items are
    hashed again (on threads: hashing and reading release the GIL), so a file changed under the same image hash is
    embedded again; one that cannot be read now goes to the loader, which reports it."""

    def current(item: PoolItem) -> bool:
        try:
            return cache.holds(item.image_hash, file_sha256(item.image))
        except OSError:
            return False

    cached = [item for item in items if item.image_hash in cache]
    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, os.cpu_count() or 1))) as pool:
        stale = {item.image_hash for item, ok in zip(cached, pool.map(current, cached), strict=True) if not ok}
    if stale:
        logger.warning("%d cached images changed on disk (or cannot be read) and are embedded again", len(stale))
    return [item for item in items if item.image_hash not in cache or item.image_hash in stale]


def embed_pool(
    method: EmbeddingMethod,
    items: Sequence[PoolItem],
    cache: EmbeddingCache,
    batch_size: int = 32,
    num_workers: int = 0,
    flush_every: int = 16,
    show_progress: bool = True,
) -> EmbedReport:
    """Embeds what `cache` lacks (missing, in a damaged shard, or from a file that changed since); a shard is written
    every `flush_every` batches, and the finished batches are saved when the run stops on an error or an
    interruption. An image that cannot be read or that the method's preprocessing refuses, and a non-finite
    embedding, is a failure, not a crash: failures go to the log and to `failures.jsonl` in the cache folder, with
    the file and the reason."""
    if not cache.made_by(method.cache_identity()):
        raise ValueError(f"cache {cache.folder} is for {cache.identity}, not {method.cache_identity()}")
    report = EmbedReport()
    todo = _not_cached(cache, items)
    report.already_cached = len(items) - len(todo)
    path_of = {item.image_hash: item.image for item in todo}
    if not todo:
        return report
    loader = DataLoader(
        _PoolImages(todo),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_Collate(method),
        pin_memory=method.device.type == "cuda",
    )
    pending_hashes: list[str] = []
    pending_digests: list[str] = []
    pending: list[torch.Tensor] = []

    def flush() -> None:
        if pending:
            embeddings = torch.cat(pending)
            finite = torch.isfinite(embeddings).all(dim=1).tolist()
            for image_hash, ok in zip(pending_hashes, finite, strict=True):
                if not ok:
                    reason = "the method returned a non-finite embedding"
                    logger.error("cannot embed image %s (%s): %s", path_of[image_hash], image_hash, reason)
                    report.failures.append({"image_hash": image_hash, "image": path_of[image_hash], "reason": reason})
            keep = [index for index, ok in enumerate(finite) if ok]
            if keep:
                cache.add([pending_hashes[i] for i in keep], [pending_digests[i] for i in keep], embeddings[keep])
            report.embedded += len(keep)
            pending_hashes.clear()
            pending_digests.clear()
            pending.clear()

    try:
        with torch.inference_mode():
            for step, loaded in enumerate(
                tqdm(loader, desc=f"embedding with {method.name}", disable=not show_progress)
            ):
                for failure in loaded["failures"]:
                    logger.error(
                        "cannot read image %s (%s): %s", failure["image"], failure["image_hash"], failure["reason"]
                    )
                report.failures += loaded["failures"]
                if loaded["image_hashes"]:
                    pending.append(method.embed(loaded["batch"], loaded["image_hashes"]).float().cpu())
                    pending_hashes += loaded["image_hashes"]
                    pending_digests += loaded["content_digests"]
                if (step + 1) % flush_every == 0:
                    flush()
    except BaseException:
        # the batches finished before the error are kept, so a rerun embeds only the rest
        try:
            flush()
        except Exception:
            logger.exception("could not save the %d embeddings finished before the error", len(pending_hashes))
        _record_failures(report.failures, cache, len(todo))
        raise
    flush()
    _record_failures(report.failures, cache, len(todo))
    return report
