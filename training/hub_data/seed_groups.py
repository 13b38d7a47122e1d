"""Seed groups: images sharing one relational logic, captioned together, from the official `seed_group.json`.

Source: a JSON list of `{"anonymous_caption": str (often wrapped in literal quotes), "image_urls": [str, ...]}`.
Two configurations come out: one row per group, and one row per image of a group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import FEATURES, SEED_GROUP_IMAGES, SEED_GROUPS
from training.hub_data.validation import RejectionLog, clean_caption, md5_of, read_json_array


MINIMUM_GROUP_SIZE = 2  # a shared logic needs at least two images to be seen


def build_seed_groups(path: str | Path, log: RejectionLog) -> dict[str, datasets.DatasetDict]:
    """`{"seed_groups": ..., "seed_group_images": ...}`, each with a `train` split.

    Group ids are the groups' positions in the source list, so they stay stable when other groups are rejected.
    """
    path = Path(path)
    groups: dict[str, list[Any]] = {name: [] for name in FEATURES[SEED_GROUPS]}
    images: dict[str, list[Any]] = {name: [] for name in FEATURES[SEED_GROUP_IMAGES]}
    for group_id, (line, element) in enumerate(read_json_array(path)):
        if not isinstance(element, dict):
            log.reject(path, line, "<group>", f"expected an object, got {type(element).__name__}")
            continue
        try:
            caption, placeholders = clean_caption(element.get("anonymous_caption"))
        except ValueError as error:
            log.reject(path, line, "anonymous_caption", str(error))
            continue
        urls = element.get("image_urls")
        if not isinstance(urls, list) or not all(isinstance(url, str) and url for url in urls):
            log.reject(path, line, "image_urls", "expected a list of non-empty strings")
            continue
        unique_urls = list(dict.fromkeys(urls))
        for duplicate_count in range(len(urls) - len(unique_urls)):
            log.reject(path, line, "image_urls", f"a URL is listed twice in group {group_id} ({duplicate_count + 1})")
        if len(unique_urls) < MINIMUM_GROUP_SIZE:
            log.reject(path, line, "image_urls", f"a seed group needs at least {MINIMUM_GROUP_SIZE} images")
            continue
        groups["group_id"].append(group_id)
        groups["anonymous_caption"].append(caption)
        groups["placeholders"].append(placeholders)
        groups["image_urls"].append(unique_urls)
        for url in unique_urls:
            images["group_id"].append(group_id)
            images["image_hash"].append(md5_of(url))
            images["url"].append(url)
            images["anonymous_caption"].append(caption)
            images["placeholders"].append(placeholders)
    return {
        SEED_GROUPS: datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict(groups, features=FEATURES[SEED_GROUPS])}
        ),
        SEED_GROUP_IMAGES: datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict(images, features=FEATURES[SEED_GROUP_IMAGES])}
        ),
    }
