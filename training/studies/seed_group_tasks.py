"""The seed groups a person verifies: read from a `seed_group.json` by the dataset builder's own reader (so what is
verified is what would be built), each with its images found on disk and the leak checker's flags on its caption.

A seed-group file is data from anyone, and the app serves the local images it names: only an indexed image of the
collection, or an image inside a folder the operator named (`--seed-group-images`), is taken. Any other local entry
(`/etc/passwd`, `file:///etc/hostname`, `../x`, a link leading out) is reported at start-up and left out.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import RejectionLog
from training.image_folder import image_file_extensions
from training.image_ids import url_image_hash
from training.pipeline.leak_check import CaptionCheck, check_caption


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedGroupTask:
    """One group to verify.

    Attributes:
        group_id: its position in the source file (the builder's group id).
        caption: the anonymous caption, normalised as the builder does (outer quotes removed).
        image_urls: as listed in the source.
        files: the local file of each URL that may be served, or None (shown as the URL only, never fetched).
        check: the leak checker's verdict on the caption (format, and leaks against the images' descriptions).
        refused: why each local entry left out was refused (None for a served file or a web URL).
    """

    group_id: int
    caption: str
    image_urls: list[str]
    files: list[str | None]
    check: CaptionCheck
    refused: list[str | None] = field(default_factory=list)


def local_path(url: str, folder: Path) -> Path | None:
    """The path a seed-group URL names on this machine (links resolved; it may not exist): a `file://` URI, an
    absolute path, or a path relative to the seed-group file's folder; None for a web URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        candidate = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:
        return None
    else:
        candidate = Path(url) if Path(url).is_absolute() else folder / url
    return candidate.resolve()


def refusal(path: Path, indexed: Collection[Path], image_folders: Sequence[Path]) -> str | None:
    """Why the app must not serve `path` (resolved), or None: it serves indexed images of the collection and images
    inside the operator's `image_folders` only."""
    if path in indexed:
        return None
    if not any(path.is_relative_to(folder) for folder in image_folders):
        return "not an indexed image of the collection, nor inside a --seed-group-images folder"
    if not path.is_file():
        return "no such file"
    if path.suffix.lower() not in image_file_extensions():
        return "not an image file (no image extension Pillow opens)"
    return None


def read_seed_group_tasks(
    path: str | Path,
    descriptions: Mapping[str, Sequence[str]] | None = None,
    indexed: Collection[str | Path] = (),
    image_folders: Sequence[str | Path] = (),
) -> list[SeedGroupTask]:
    """The groups of `path` the builder accepts (rejected ones are logged with file and line), with the local images
    the app may serve; every local entry refused is logged at start-up with file, group, entry and reason.

    Args:
        descriptions: literal descriptions by image hash (md5 of the URL; see
            `training.pipeline.leak_check_files.read_literal_descriptions`) to check the captions' leaks against.
        indexed: the collection's indexed files (`SearchService.served_files`).
        image_folders: folders the operator allows seed-group images from, beside the indexed ones.
    """
    path = Path(path)
    log = RejectionLog()
    groups = build_seed_groups(path, log)["seed_groups"]["train"]
    for finding in log.findings:
        logger.warning("%s", finding)
    descriptions = descriptions or {}
    indexed = {Path(file).resolve() for file in indexed}
    folders = [Path(folder).resolve() for folder in image_folders]
    tasks = []
    for row in groups:
        urls = list(row["image_urls"])
        literal = [text for url in urls for text in descriptions.get(url_image_hash(url), ())]
        files, refused = [], []
        for entry, url in enumerate(urls):
            try:
                local = local_path(url, path.parent)
                reason = None if local is None else refusal(local, indexed, folders)
            except (OSError, ValueError) as error:
                local, reason = None, f"not a usable path ({error})"
            if reason is not None:
                logger.warning("%s: group %d, image_urls[%d] %r: %s; not served", path, row["group_id"], entry, url,
                               reason)  # fmt: skip
            files.append(str(local) if local is not None and reason is None else None)
            refused.append(reason)
        tasks.append(SeedGroupTask(row["group_id"], row["anonymous_caption"], urls, files,
                                   check_caption(row["anonymous_caption"], literal), refused))  # fmt: skip
    return tasks
