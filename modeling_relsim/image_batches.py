"""Feeding a list of images to relsim in batches, with unreadable images carried as data, not as exceptions.

An exception raised inside a DataLoader worker reaches the caller re-wrapped (a `RuntimeError` naming the worker)
and ends the whole loop. So each image is prepared on its own and a failure travels back as an `ImageFailure`
record: the caller decides, in its own process, to raise `UnreadableImageError` (the same error with or without
workers) or to keep the other images.

This file travels as remote code next to saved weights, so it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset
from transformers.feature_extraction_utils import BatchFeature

from .image_decoding import UnreadableImageError
from .processing_relsim import RelSimProcessor


ON_ERROR_POLICIES = ("raise", "skip")


class ImageFailure(NamedTuple):
    """An image that could not be embedded: its position in the input, how it is named (file path or position) and
    why."""

    index: int
    source: str
    reason: str


@dataclass
class ImageEmbeddings:
    """What `RelSimModel.embed_images(..., on_error="skip")` returns.

    Args:
        embeddings (`torch.FloatTensor` of shape `(len(indices), projection_dim)`): L2-normalised, on the CPU; row
            `i` embeds `images[indices[i]]`.
        indices (`list[int]`): positions in the input of the embedded images, ascending.
        failures (`list[ImageFailure]`): the images left out, in input order, each with its position, name and
            reason.
    """

    embeddings: torch.FloatTensor
    indices: list[int]
    failures: list[ImageFailure]


class PreparedImages(Dataset):
    """Decodes, crops and resizes image `index` (in a DataLoader worker when there are any); an unreadable image
    becomes an `ImageFailure` instead of an exception."""

    def __init__(self, images: Sequence[Any], processor: RelSimProcessor) -> None:
        self.images = images
        self.processor = processor

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, Any, ImageFailure | None]:
        try:
            return index, self.processor.prepare_image(self.images[index], index), None
        except UnreadableImageError as error:
            return index, None, ImageFailure(index, error.source, error.reason)


class BatchPreparedImages:
    """DataLoader `collate_fn`: the readable images of a batch as one processor batch, plus the failures."""

    def __init__(self, processor: RelSimProcessor) -> None:
        self.processor = processor

    def __call__(
        self, samples: Sequence[tuple[int, Any, ImageFailure | None]]
    ) -> tuple[list[int], BatchFeature | None, list[ImageFailure]]:
        kept = [(index, image) for index, image, _ in samples if image is not None]
        failures = [failure for _, _, failure in samples if failure is not None]
        batch = self.processor.batch_prepared_images([image for _, image in kept]) if kept else None
        return [index for index, _ in kept], batch, failures


__all__ = ["ImageEmbeddings", "ImageFailure"]
