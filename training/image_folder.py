"""The one scan of a folder of image files, shared by every command that takes `--images DIR` (the evaluation
pool, the data pipeline's inputs, the search index): which files are images, their ids, and which are unreadable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image

from training.image_ids import file_image_hash, file_image_hash_and_sha256


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFile:
    """A readable image file: `image_hash` is md5 of its bytes (the local-file rule of `training.image_ids`);
    `sha256` is filled when the scan was asked for it (`with_sha256`), and `mtime_ns` lets a later scan trust an
    unchanged file without reading it again (`known`)."""

    path: Path
    image_hash: str
    size: int
    mtime_ns: int = 0
    sha256: str | None = None


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


def _unchanged(path: Path, known: Mapping[Path, ImageFile] | None, with_sha256: bool) -> ImageFile | None:
    """The earlier scan's entry for `path` when the file's size and modification time are still the same."""
    earlier = known.get(path) if known else None
    if earlier is None or (with_sha256 and earlier.sha256 is None):
        return None
    try:
        status = path.stat()
    except OSError:
        return None
    return earlier if (status.st_size, status.st_mtime_ns) == (earlier.size, earlier.mtime_ns) else None


def scan_image_folder(
    folder: str | Path,
    drop_duplicates: bool = True,
    with_sha256: bool = False,
    known: Mapping[Path, ImageFile] | None = None,
) -> FolderScan:
    """Scans `folder` recursively: each image file hashed and verified, unreadable ones listed with the reason
    (the caller reports them, in its own words: left out of a pool, of an index, ...).

    Args:
        drop_duplicates: leave out a file whose bytes repeat an earlier file's (retrieval never returns exact
            duplicates); they are listed in `duplicates` as (file, the earlier file).
        with_sha256: also fill each image's `sha256` (read in the same pass as its image hash).
        known: an earlier scan's images by path: a file whose size and modification time are unchanged keeps its
            entry without being read again (a rescan of a large folder costs one `stat` per file).

    Raises:
        NotADirectoryError: when `folder` is not a folder.
    """
    scan = FolderScan()
    first_by_hash: dict[str, Path] = {}
    for path in image_paths(folder):
        image = _unchanged(path, known, with_sha256)
        if image is None:
            try:
                status = path.stat()
                if with_sha256:
                    image_hash, sha256 = file_image_hash_and_sha256(path)
                else:
                    image_hash, sha256 = file_image_hash(path), None
            except OSError as error:
                scan.unreadable.append((path, f"{type(error).__name__}: {error}"))
                continue
            reason = verify_image_file(path)
            if reason is not None:
                scan.unreadable.append((path, reason))
                continue
            image = ImageFile(path, image_hash, status.st_size, status.st_mtime_ns, sha256)
        if drop_duplicates and image.image_hash in first_by_hash:
            scan.duplicates.append((path, first_by_hash[image.image_hash]))
            continue
        first_by_hash.setdefault(image.image_hash, path)
        scan.images.append(image)
    return scan
