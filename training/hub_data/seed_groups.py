"""Seed groups: images sharing one relational logic, captioned together, from the official `seed_group.json`.

Source: a JSON list of `{"anonymous_caption": str (often wrapped in literal quotes), "image_urls": [str, ...]}`.
Two configurations come out: one row per group, and one row per image of a group. An image's `image_hash` is
md5(url). A URL listed in two groups is kept in both and reported with both group numbers: the paper's 532 groups
hold 1,529 distinct images with none shared, so it is most likely a copy-paste slip, but an image can show two
relations and only a person can tell which group it belongs to.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import FEATURES, SEED_GROUP_IMAGES, SEED_GROUPS
from training.hub_data.validation import RejectionLog, accept_caption, read_json_array, warn_if_still_quoted
from training.image_ids import url_image_hash


MINIMUM_GROUP_SIZE = 2  # a shared logic needs at least two images to be seen


def build_seed_groups(path: str | Path, log: RejectionLog) -> dict[str, datasets.DatasetDict]:
    """`{"seed_groups": ..., "seed_group_images": ...}`, each with a `train` split.

    Group ids are the groups' positions in the source list, so they stay stable when other groups are rejected.
    """
    path = Path(path)
    groups: dict[str, list[Any]] = {name: [] for name in FEATURES[SEED_GROUPS]}
    images: dict[str, list[Any]] = {name: [] for name in FEATURES[SEED_GROUP_IMAGES]}
    first_group: dict[str, tuple[int, int]] = {}  # URL -> (group id, line) of the first built group listing it
    for group_id, (line, element) in enumerate(read_json_array(path)):
        if not isinstance(element, dict):
            log.reject(path, line, "<group>", f"expected an object, got {type(element).__name__}")
            continue
        accepted = accept_caption(element.get("anonymous_caption"), path, line, "anonymous_caption", log)
        if accepted is None:
            continue
        caption, placeholders = accepted
        urls = element.get("image_urls")
        if not isinstance(urls, list) or not all(isinstance(url, str) and url for url in urls):
            log.reject(path, line, "image_urls", "expected a list of non-empty strings")
            continue
        unique_urls = list(dict.fromkeys(urls))
        if len(unique_urls) < MINIMUM_GROUP_SIZE:
            log.reject(path, line, "image_urls", f"a seed group needs at least {MINIMUM_GROUP_SIZE} distinct images")
            continue
        warn_if_still_quoted(caption, path, line, "anonymous_caption", log)
        listed = Counter(urls)
        for url in unique_urls:
            if listed[url] > 1:
                log.warn(
                    path, line, "image_urls", f"{url} is listed {listed[url]} times in group {group_id}; kept once"
                )
            if url in first_group:
                other, other_line = first_group[url]
                log.warn(
                    path,
                    line,
                    "image_urls",
                    f"{url} is in group {other} (line {other_line}) and group {group_id}; kept in both",
                )
            else:
                first_group[url] = (group_id, line)
        groups["group_id"].append(group_id)
        groups["anonymous_caption"].append(caption)
        groups["placeholders"].append(placeholders)
        groups["image_urls"].append(unique_urls)
        for url in unique_urls:
            images["group_id"].append(group_id)
            images["image_hash"].append(url_image_hash(url))
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
