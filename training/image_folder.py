"""The one scan of a folder of image files, shared by every command that takes `--images DIR` (the evaluation
pool, the data pipeline's inputs, the search index): which files are images, their ids, and which are unreadable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image

from training.image_ids import file_image_hash


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFile:
    """A readable image file: `image_hash` is md5 of its bytes (the local-file rule of `training.image_ids`)."""

    path: Path
    image_hash: str
    size: int


@dataclass
class FolderScan:
    """What a scan found: readable images in sorted path order, unreadable files with their reason, and files left
    out because their bytes repeat an earlier file's."""

    images: list[ImageFile] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    duplicates: list[tuple[Path, Path]] = field(default_factory=list)


def image_file_extensions() -> frozenset[str]:
    """The file extensions Pillow can open (lowercase, with the dot): what a folder scan takes as images."""
    PIL.Image.init()
    return frozenset(
        extension for extension, format in PIL.Image.registered_extensions().items() if format in PIL.Image.OPEN
    )


def image_paths(folder: str | Path) -> Iterator[Path]:
    """Every file under `folder` (recursive, sorted) with an image extension; symbolic links to files outside the
    folder are left out, so a scan never reaches beyond what it was pointed at."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    root = folder.resolve()
    extensions = image_file_extensions()
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in extensions or not path.is_file():
            continue
        if not path.resolve().is_relative_to(root):
            logger.warning("%s links outside %s; left out", path, folder)
            continue
        yield path


def verify_image_file(path: Path) -> str | None:
    """None when Pillow recognises the file and its structure checks out, else the reason it cannot be read."""
    try:
        with PIL.Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports broken files as any of these
        return f"{type(error).__name__}: {error}"
    return None


def scan_image_folder(folder: str | Path, drop_duplicates: bool = True) -> FolderScan:
    """Scans `folder` recursively: each image file hashed and verified, unreadable ones listed with the reason
    (the caller reports them, in its own words: left out of a pool, of an index, ...).

    Args:
        drop_duplicates: leave out a file whose bytes repeat an earlier file's (retrieval never returns exact
            duplicates); they are listed in `duplicates` as (file, the earlier file).

    Raises:
        NotADirectoryError: when `folder` is not a folder.
    """
    scan = FolderScan()
    first_by_hash: dict[str, Path] = {}
    for path in image_paths(folder):
        try:
            image_hash = file_image_hash(path)
        except OSError as error:
            scan.unreadable.append((path, f"{type(error).__name__}: {error}"))
            continue
        reason = verify_image_file(path)
        if reason is not None:
            scan.unreadable.append((path, reason))
            continue
        if drop_duplicates and image_hash in first_by_hash:
            scan.duplicates.append((path, first_by_hash[image_hash]))
            continue
        first_by_hash.setdefault(image_hash, path)
        scan.images.append(ImageFile(path, image_hash, path.stat().st_size))
    return scan
