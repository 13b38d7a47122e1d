"""The seed groups a person verifies: read from a `seed_group.json` by the dataset builder's own reader (so what is
verified is what would be built), each with its images found on disk and the leak checker's flags on its caption.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import RejectionLog
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
        files: the local file of each URL, or None where none was found (shown as the URL only).
        check: the leak checker's verdict on the caption (format, and leaks against the images' descriptions).
    """

    group_id: int
    caption: str
    image_urls: list[str]
    files: list[str | None]
    check: CaptionCheck


def local_file(url: str, folder: Path) -> str | None:
    """The file a seed-group URL names on this machine: a `file://` URI, an absolute path, or a path relative to the
    seed-group file's folder; None for a web URL or a missing file."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        candidate = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:
        return None
    else:
        candidate = Path(url) if Path(url).is_absolute() else folder / url
    return str(candidate.resolve()) if candidate.is_file() else None


def read_seed_group_tasks(
    path: str | Path, descriptions: Mapping[str, Sequence[str]] | None = None
) -> list[SeedGroupTask]:
    """The groups of `path` the builder accepts (rejected ones are logged with file and line).

    Args:
        descriptions: literal descriptions by image hash (md5 of the URL; see
            `training.pipeline.leak_check_files.read_literal_descriptions`) to check the captions' leaks against.
    """
    path = Path(path)
    log = RejectionLog()
    groups = build_seed_groups(path, log)["seed_groups"]["train"]
    for finding in log.findings:
        logger.warning("%s", finding)
    descriptions = descriptions or {}
    tasks = []
    for row in groups:
        urls = list(row["image_urls"])
        literal = [text for url in urls for text in descriptions.get(url_image_hash(url), ())]
        files = [local_file(url, path.parent) for url in urls]
        tasks.append(SeedGroupTask(row["group_id"], row["anonymous_caption"], urls, files,
                                   check_caption(row["anonymous_caption"], literal)))  # fmt: skip
    return tasks
