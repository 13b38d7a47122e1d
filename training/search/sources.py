"""What an index is built from: a folder of images (recursive), a list of image files, or a `datasets` dataset.

Each becomes `IndexEntry`s (where the image is, its image hash and sha256, size) and a list of images that cannot
be read, each with its reason. Nothing outside what the user pointed at is read: the folder scan leaves out links
that lead outside the folder, and a list file's relative paths must stay inside the list's folder. URLs in a list
are fetched by img2dataset (the project's downloader, through `training.hub_data.images`) into the index's own
`downloads/` folder when the index gives one, and reported as unreadable with img2dataset's reason when they fail.
They follow the downloaders' one rule (`training.url_fetch`): http(s) only unless the caller's policy opts in to more
schemes (a `file://`, `ftp://`, `s3://` line is reported as refused, never read), redirects held to the same schemes,
at most 32 MiB an image.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.hub_data.images import download_images, downloaded_images
from training.image_folder import ImageFile, scan_image_folder, verify_image_file
from training.image_ids import file_image_hash_and_sha256, url_image_hash
from training.url_fetch import FetchPolicy


URL_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # any scheme: those not fetched are refused, not read


@dataclass(frozen=True)
class IndexEntry:
    """One image of a collection.

    Attributes:
        path: the file (absolute), or `<dataset>[<row>]` for an image held in a dataset row.
        image_hash: md5 of the image's bytes (`training.image_ids`); the key of its embedding.
        sha256: sha256 of the bytes; the content key that tells a changed file.
        size: bytes.
        mtime_ns: the file's modification time (0 for dataset rows): an unchanged file is not read again.
        data: the encoded bytes of a dataset row (never written to the manifest).
    """

    path: str
    image_hash: str
    sha256: str
    size: int
    mtime_ns: int = 0
    data: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def image(self) -> str | bytes:
        """What the model reads: the bytes of a dataset row, else the file path."""
        return self.data if self.data is not None else self.path

    def manifest_row(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "image_hash": self.image_hash,
            "mtime_ns": self.mtime_ns,
        }


@dataclass
class Collected:
    """The entries of a source and the images that cannot be read, as `(path, reason)`."""

    entries: list[IndexEntry] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)


def _known_files(known: Mapping[str, IndexEntry] | None) -> dict[Path, ImageFile]:
    return {
        Path(path): ImageFile(Path(path), entry.image_hash, entry.size, entry.mtime_ns, entry.sha256)
        for path, entry in (known or {}).items()
        if entry.mtime_ns
    }


def from_folder(folder: str | Path, known: Mapping[str, IndexEntry] | None = None) -> Collected:
    """Every image file under `folder` (recursive, the one folder scan of `training.image_folder`); files whose size
    and modification time match `known` (the previous manifest, by absolute path) are not read again.

    Raises:
        NotADirectoryError: `folder` is not a folder.
    """
    if not Path(folder).is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of images")
    # the resolved folder is scanned, so the scan's names are the manifest's (`root / relative`; links inside the
    # folder keep their own name) however the folder was given: relative, absolute, through a link
    root = Path(folder).resolve()
    known_files = {path: image for path, image in _known_files(known).items() if path.is_relative_to(root)}
    scan = scan_image_folder(root, drop_duplicates=False, with_sha256=True, known=known_files)
    entries = [
        IndexEntry(str(image.path), image.image_hash, image.sha256 or "", image.size, image.mtime_ns)
        for image in scan.images
    ]
    return Collected(entries, [(str(path), why) for path, why in scan.unreadable])


def is_url(text: str) -> bool:
    return URL_PATTERN.match(text) is not None


def download_urls(
    urls: Sequence[str], folder: str | Path, policy: FetchPolicy | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Fetches `urls` with img2dataset into `folder` under `policy` (default: http(s), 32 MiB an image) and returns
    (url -> file, url -> failure reason, a refused scheme's included).

    Each call downloads only the URLs no earlier call fetched, into a sub-folder named by that set of URLs, so a list
    that grows later fetches just its new lines (img2dataset's own resume works per shard of one URL list).
    Images are resized by img2dataset so their shorter side is at most 448 pixels (relsim's processor crops later).
    """
    folder = Path(folder)
    by_hash = {url_image_hash(url): url for url in urls}

    def fetched() -> tuple[dict[str, Path], dict[str, str]]:
        files, failures = {}, {}
        for images in sorted(folder.glob("*/images")):
            found, failed = downloaded_images(images)
            files.update(found)
            failures.update(failed)
        return files, failures

    policy = policy or FetchPolicy()
    _, refused = policy.split(urls)
    files, failures = fetched()
    missing = sorted(
        image_hash for image_hash in by_hash
        if image_hash not in files and image_hash not in failures and by_hash[image_hash] not in refused
    )  # fmt: skip
    if missing:
        batch = hashlib.md5("\n".join(missing).encode()).hexdigest()
        download_images([{"url": by_hash[image_hash], "image_hash": image_hash} for image_hash in missing],
                        folder / batch, processes=1, threads=4, policy=policy)  # fmt: skip
        files, failures = fetched()
    return (
        {by_hash[key]: path for key, path in files.items() if key in by_hash and by_hash[key] not in refused},
        {**{by_hash[key]: reason for key, reason in failures.items() if key in by_hash}, **refused},
    )


def from_paths(
    paths: Sequence[str | Path],
    base: str | Path | None = None,
    known: Mapping[str, IndexEntry] | None = None,
    download_folder: str | Path | None = None,
    policy: FetchPolicy | None = None,
) -> Collected:
    """Image files named one by one. With `base` (the folder of a list file), relative paths are read from there and
    must stay inside it: a `../x` line or a link out of that folder is reported, never read.

    URLs (`scheme://...`) that `policy` fetches (default: http and https, 32 MiB an image) are fetched by img2dataset
    into `download_folder` and indexed from there; one that fails is reported with img2dataset's reason, one of
    another scheme (file, ftp, s3, ...) with the refusal. Without `download_folder` they are reported, not fetched.
    """
    collected = Collected()
    root = Path(base).resolve() if base is not None else None
    known = known or {}
    policy = policy or FetchPolicy()
    urls, refused = policy.split(str(raw).strip() for raw in paths if is_url(str(raw).strip()))
    collected.unreadable += list(refused.items())
    downloaded: dict[str, Path] = {}
    if urls and download_folder is not None:
        downloaded, failures = download_urls(urls, download_folder, policy)
        collected.unreadable += [(url, f"download failed: {reason}") for url, reason in failures.items()]
    for raw in paths:
        text = str(raw).strip()
        if is_url(text):
            if text in downloaded:
                fetched = from_paths([downloaded[text]], known=known)
                collected.entries += fetched.entries
                collected.unreadable += [(text, reason) for _, reason in fetched.unreadable]
            elif download_folder is None and text not in refused:
                collected.unreadable.append((text, "a URL, and no download folder was given to fetch it into"))
            continue
        path = Path(text)
        if root is not None and not path.is_absolute():
            path = root / path
            if not path.resolve().is_relative_to(root):
                collected.unreadable.append((text, f"leads outside {root}, the folder of the list; left out"))
                continue
        resolved = path.resolve()
        try:
            status = resolved.stat()
        except OSError as error:
            collected.unreadable.append((text, f"{type(error).__name__}: {error.strerror or error}"))
            continue
        earlier = known.get(str(resolved))
        if earlier is not None and (earlier.size, earlier.mtime_ns) == (status.st_size, status.st_mtime_ns):
            collected.entries.append(earlier)
            continue
        reason = verify_image_file(resolved)
        if reason is not None:
            collected.unreadable.append((text, reason))
            continue
        try:
            image_hash, sha256 = file_image_hash_and_sha256(resolved)
        except OSError as error:
            collected.unreadable.append((text, f"{type(error).__name__}: {error}"))
            continue
        collected.entries.append(IndexEntry(str(resolved), image_hash, sha256, status.st_size, status.st_mtime_ns))
    return collected


def read_numbered_path_list(list_file: str | Path) -> list[tuple[int, str]]:
    """`(line number, path)` of the non-empty, non-comment lines of a list file, for messages that name the line."""
    lines = Path(list_file).read_text(encoding="utf-8").splitlines()
    return [
        (number, line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def from_dataset(dataset: Any, image_column: str = "image", name: str = "dataset") -> Collected:
    """The images of a `datasets.Dataset` column (an `Image` feature, or encoded bytes): each row becomes the entry
    `<name>[<row>]`, embedded from its bytes. A row that holds only a relative path is reported, not read.

    Raises:
        KeyError: the dataset has no `image_column`.
    """
    import datasets

    if image_column not in dataset.column_names:
        raise KeyError(f"the dataset has no column {image_column!r}; its columns are {dataset.column_names}")
    column = dataset.cast_column(image_column, datasets.Image(decode=False))[image_column]
    collected = Collected()
    for row, value in enumerate(column):
        where = f"{name}[{row}]"
        data, path = (value.get("bytes"), value.get("path")) if isinstance(value, dict) else (value, None)
        if data is None and path and Path(path).is_absolute() and Path(path).is_file():
            data = Path(path).read_bytes()
        if not isinstance(data, bytes | bytearray):
            collected.unreadable.append((where, "the row holds no image bytes (nor an absolute file path)"))
            continue
        data = bytes(data)
        entry = IndexEntry(where, hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest(), len(data), 0, data)
        collected.entries.append(entry)
    return collected
