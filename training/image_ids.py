"""The one rule for image ids: an `image_hash` is 32 lowercase hexadecimal characters.

Where a row has a URL, the official formats promise `image_hash = md5(url)` (UTF-8 bytes of the URL as written).
A local file with no URL (the pipeline's and search's own images) gets `image_hash = md5(file bytes)`: it is stable
across renames and machines, changes when the content changes, and has the same shape as a URL hash (an in-memory
image with no file gets md5 of its mode, size and pixels: `pixel_hash`), so every
folder that names files after hashes (`<image_hash>.<ext>`, thumbnails, cache rows) can take either.

An image hash is safe as a file name by construction; `require_image_hash` is the check to run at every boundary
where a hash read from a file becomes part of a path.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING


if TYPE_CHECKING:
    import PIL.Image


IMAGE_HASH_PATTERN = re.compile(r"[0-9a-f]{32}")
_READ_CHUNK = 1 << 20


def is_image_hash(value: object) -> bool:
    """True for a string of exactly 32 lowercase hexadecimal characters."""
    return isinstance(value, str) and IMAGE_HASH_PATTERN.fullmatch(value) is not None


def require_image_hash(value: object, where: str = "image_hash") -> str:
    """`value` when it is a valid image hash; otherwise a `ValueError` naming `where` (file, line, field)."""
    if not is_image_hash(value):
        raise ValueError(f"{where}: {value!r} is not an image hash (32 lowercase hexadecimal characters)")
    return value


def url_image_hash(url: str) -> str:
    """The official formats' id of an image with a URL: md5 of the URL's UTF-8 bytes."""
    return hashlib.md5(url.encode("utf-8")).hexdigest()


def file_image_hash(path: str | Path) -> str:
    """The id of a local image that has no URL: md5 of the file's bytes."""
    return _file_digest(path, hashlib.md5())


def pixel_hash(image: PIL.Image.Image) -> str:
    """The id of an in-memory image with no file (a generated one): md5 of its mode, size and pixel bytes, so two
    different pictures never share an id in a per-image cache."""
    digest = hashlib.md5(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes: the content key of caches (detects a file changed under the same name or hash)."""
    return _file_digest(path, hashlib.sha256())


def file_image_hash_and_sha256(path: str | Path) -> tuple[str, str]:
    """`(file_image_hash, file_sha256)` of a file in one read: a folder scan that keeps both (the search index's
    manifest) reads each file once."""
    image_hash, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_READ_CHUNK), b""):
            image_hash.update(chunk)
            sha256.update(chunk)
    return image_hash.hexdigest(), sha256.hexdigest()


def _file_digest(path: str | Path, digest: hashlib._Hash) -> str:
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_READ_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
