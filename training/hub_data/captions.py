"""Anonymous captions (train/test jsonl of `{"image_hash", "caption", "url_link"}`) and the random distractor pool
(jsonl of `{"image_hash", "url_link"}` with image_hash = md5(url))."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import ANONYMOUS_CAPTIONS, FEATURES, RANDOM_POOL
from training.hub_data.validation import RejectionLog, accept_hash, clean_caption, read_jsonl


def _string_field(record: dict[str, Any], name: str, path: Path, line: int, log: RejectionLog) -> str | None:
    value = record.get(name)
    if not isinstance(value, str) or not value:
        log.reject(path, line, name, "missing or not a non-empty string")
        return None
    return value


def build_anonymous_captions(splits: dict[str, str | Path], log: RejectionLog) -> datasets.DatasetDict:
    """One split per source file (e.g. `{"train": ..., "test": ...}`); a hash may appear in one split only."""
    seen: dict[str, str] = {}
    built = {}
    for split, source in splits.items():
        path = Path(source)
        rows: dict[str, list[Any]] = {name: [] for name in FEATURES[ANONYMOUS_CAPTIONS]}
        for line, record in read_jsonl(path, log):
            image_hash = _string_field(record, "image_hash", path, line, log)
            url = image_hash and _string_field(record, "url_link", path, line, log)
            if not url:
                continue
            try:
                caption, placeholders = clean_caption(record.get("caption"))
            except ValueError as error:
                log.reject(path, line, "caption", str(error))
                continue
            if image_hash in seen:
                log.reject(path, line, "image_hash", f"duplicate of {seen[image_hash]}")
                continue
            seen[image_hash] = f"{path}:{line}"
            rows["image_hash"].append(image_hash)
            rows["url"].append(url)
            rows["caption"].append(caption)
            rows["placeholders"].append(placeholders)
        built[split] = datasets.Dataset.from_dict(rows, features=FEATURES[ANONYMOUS_CAPTIONS])
    return datasets.DatasetDict(built)


def build_random_pool(path: str | Path, log: RejectionLog) -> datasets.DatasetDict:
    """A `train` split of `image_hash`, `url`; the format promises image_hash = md5(url), which is checked."""
    path = Path(path)
    rows: dict[str, list[Any]] = {name: [] for name in FEATURES[RANDOM_POOL]}
    first_line: dict[str, int] = {}
    for line, record in read_jsonl(path, log):
        image_hash = _string_field(record, "image_hash", path, line, log)
        url = image_hash and _string_field(record, "url_link", path, line, log)
        if not url:
            continue
        if not accept_hash(path, line, image_hash, url, first_line, log, url_field="url_link"):
            continue
        rows["image_hash"].append(image_hash)
        rows["url"].append(url)
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES[RANDOM_POOL])})
