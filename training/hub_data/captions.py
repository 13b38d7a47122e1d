"""Anonymous captions (train/test jsonl of `{"image_hash", "caption", "url_link"}`) and the random distractor pool
(jsonl of `{"image_hash", "url_link"}`).

Both formats promise image_hash = md5(url_link), and both are checked: the official random pool keeps it on every
row, the official seed-group downloader names images by it, and this package's download step, evaluation pool and
image folders identify an image by md5(url) — a caption row with any other hash would never meet its image.

One exception, for captions of **local images** (the data pipeline's hand-off of a folder without URLs): a caption
row whose `url_link` is empty ("") is accepted when its `image_hash` is a valid hash (md5 of the file's bytes, the
local-file rule of `training.image_ids`); its `url` is "" and its image cannot be downloaded, so it comes from the
folder of `<image_hash>.<ext>` files given to `build anonymous-captions --image-dir` (`attach_local_images`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import ANONYMOUS_CAPTIONS, FEATURES, RANDOM_POOL
from training.hub_data.validation import (
    RejectionLog,
    accept_caption,
    accept_hash,
    accept_local_hash,
    read_jsonl,
    warn_if_still_quoted,
)


def _string_field(record: dict[str, Any], name: str, path: Path, line: int, log: RejectionLog) -> str | None:
    value = record.get(name)
    if not isinstance(value, str) or not value:
        log.reject(path, line, name, "missing or not a non-empty string")
        return None
    return value


def build_anonymous_captions(splits: dict[str, str | Path], log: RejectionLog) -> datasets.DatasetDict:
    """One split per source file (e.g. `{"train": ..., "test": ...}`); a hash may appear in one split only."""
    first_seen: dict[str, str] = {}
    built = {}
    for split, source in splits.items():
        path = Path(source)
        rows: dict[str, list[Any]] = {name: [] for name in FEATURES[ANONYMOUS_CAPTIONS]}
        for line, record in read_jsonl(path, log):
            image_hash = _string_field(record, "image_hash", path, line, log)
            local = image_hash is not None and record.get("url_link") == ""
            url = "" if local else image_hash and _string_field(record, "url_link", path, line, log)
            if not url and not local:
                continue
            accepted = accept_caption(record.get("caption"), path, line, "caption", log)
            if accepted is None or not (
                accept_local_hash(path, line, image_hash, first_seen, log)
                if local
                else accept_hash(path, line, image_hash, url, first_seen, log, "url_link")
            ):
                continue
            warn_if_still_quoted(accepted[0], path, line, "caption", log)
            rows["image_hash"].append(image_hash)
            rows["url"].append(url)
            rows["caption"].append(accepted[0])
            rows["placeholders"].append(accepted[1])
        built[split] = datasets.Dataset.from_dict(rows, features=FEATURES[ANONYMOUS_CAPTIONS])
    return datasets.DatasetDict(built)


def build_random_pool(path: str | Path, log: RejectionLog) -> datasets.DatasetDict:
    """A `train` split of `image_hash`, `url`."""
    path = Path(path)
    rows: dict[str, list[Any]] = {name: [] for name in FEATURES[RANDOM_POOL]}
    first_seen: dict[str, str] = {}
    for line, record in read_jsonl(path, log):
        image_hash = _string_field(record, "image_hash", path, line, log)
        url = image_hash and _string_field(record, "url_link", path, line, log)
        if not url:
            continue
        if not accept_hash(path, line, image_hash, url, first_seen, log, url_field="url_link"):
            continue
        rows["image_hash"].append(image_hash)
        rows["url"].append(url)
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES[RANDOM_POOL])})
