"""Scoring images with the filter: P(yes) from one forward pass per batch, never generation.

An image that cannot be read is reported (file and reason, logged and appended to `failures`), counted, and given
NaN as its score: it is never replaced by another image or a default score.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
import PIL.Image
from transformers.utils.logging import tqdm

from modeling_relsim.image_decoding import UnreadableImageError, decode_image
from training.pipeline.filter.question import ANSWERS, RELATIONAL_QUESTION
from training.vlm.chat import QwenVLChat


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFailure:
    """An image the filter could not read: its position in the input, its file (or how it was given), why."""

    index: int
    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


def _image_inputs(images: Iterable[Any] | datasets.Dataset) -> Iterator[Any]:
    """Images one by one; a dataset's `image` column is read undecoded so a corrupt file fails here, per image."""
    if isinstance(images, datasets.Dataset):
        if "image" not in images.column_names:
            raise ValueError(f"the dataset has no image column (columns: {images.column_names})")
        for value in images.cast_column("image", datasets.Image(decode=False))["image"]:
            if value is None:
                yield None
            elif value.get("bytes"):
                yield (value["bytes"], value.get("path"))
            else:
                yield value["path"]
        return
    yield from images


def _decode(image: Any, index: int) -> PIL.Image.Image:
    if image is None:
        raise UnreadableImageError(f"image {index}", "no image (not downloaded)")
    if isinstance(image, tuple):  # encoded bytes from a dataset, with the file name they came from
        encoded, name = image
        return decode_image(encoded, source=name or f"image {index}")
    return decode_image(image, source=None if not isinstance(image, PIL.Image.Image) else f"image {index}")


def score_images(
    chat: QwenVLChat,
    images: Iterable[Any] | datasets.Dataset,
    batch_size: int = 16,
    question: str = RELATIONAL_QUESTION,
    failures: list[ImageFailure] | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """P(yes) for each image (PIL images, file paths, encoded bytes, or a dataset with an `image` column).

    Returns:
        `(n,)` float64, NaN where the image could not be read (each such image is logged with its file and reason,
        and appended to `failures` when given).
    """
    scores: list[float] = []
    pending: list[tuple[int, PIL.Image.Image]] = []
    found: list[ImageFailure] = []

    def flush() -> None:
        probabilities = chat.answer_probabilities([([image], question) for _, image in pending], ANSWERS, batch_size)
        for (index, _), probability in zip(pending, probabilities[:, 0].tolist(), strict=True):
            scores[index] = probability
        pending.clear()

    for index, image in enumerate(tqdm(_image_inputs(images), desc="filter", unit="image", disable=not show_progress)):
        scores.append(float("nan"))
        try:
            pending.append((index, _decode(image, index)))
        except (UnreadableImageError, TypeError) as error:
            source = getattr(error, "source", f"image {index}")
            found.append(ImageFailure(index, source, getattr(error, "reason", str(error))))
            logger.warning("filter: cannot read %s: %s", source, found[-1].reason)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    if found:
        logger.warning("filter: %d of %d images could not be read and have no score", len(found), len(scores))
    if failures is not None:
        failures.extend(found)
    return np.asarray(scores, dtype=np.float64)
