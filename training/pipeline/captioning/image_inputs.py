"""Reading the captioners' images: any input the project's one decoder takes, plus the rows of built datasets, each
with the id the caches key it by; an image that cannot be read is reported (file and reason), never replaced."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import UnreadableImageError, decode_image
from training.image_ids import file_image_hash, pixel_hash


@dataclass(frozen=True)
class UnreadableImage:
    """An image a captioner could not read: `source` is its file (or its place in the input), `reason` why."""

    source: str
    reason: str
    group_id: str | None = None

    def as_dict(self) -> dict[str, str]:
        found = {"file": self.source, "reason": self.reason}
        return found if self.group_id is None else {"group_id": self.group_id, **found}


@dataclass(frozen=True)
class ReadImage:
    """A decoded RGB image and its id: md5 of the file's bytes for files and encoded bytes (the local-file rule of
    `training.image_ids`), md5 of the pixels for an image given in memory."""

    image: PIL.Image.Image
    image_hash: str
    source: str


def image_name(value: Any, fallback: str) -> str:
    """How reports and outputs name an image input: its path, the file of a dataset cell, else `fallback`."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    filename = getattr(value, "filename", None)
    return str(filename) if filename else fallback


def read_image(value: Any, source: str) -> ReadImage:
    """Decodes one image input: a path, encoded bytes, a PIL image, an array, or a `datasets.Image(decode=False)`
    cell (`{"bytes", "path"}`).

    Raises:
        UnreadableImageError: a missing value (a dataset row whose download failed), a missing, truncated or
            corrupt file; it names `source`.
    """
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if value is None:
        raise UnreadableImageError(source, "no image (the row has none: was it downloaded?)")
    if isinstance(value, (str, os.PathLike)):
        try:
            image_hash = file_image_hash(value)
        except FileNotFoundError as error:
            raise UnreadableImageError(source, "file not found") from error
        except OSError as error:
            raise UnreadableImageError(source, f"{type(error).__name__}: {error}") from error
        return ReadImage(decode_image(Path(value), source=source), image_hash, source)
    if isinstance(value, (bytes, bytearray)):
        return ReadImage(decode_image(value, source=source), hashlib.md5(value).hexdigest(), source)
    image = decode_image(value, source=source)
    return ReadImage(image, pixel_hash(image), source)
