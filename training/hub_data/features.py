"""The published dataset configurations and their `datasets.Features`."""

from __future__ import annotations

import datasets


FILTER_LABEL_NAMES = ["not_relational", "relational"]

FILTER_LABELS = "filter_labels"
SEED_GROUPS = "seed_groups"
SEED_GROUP_IMAGES = "seed_group_images"
ANONYMOUS_CAPTIONS = "anonymous_captions"
RANDOM_POOL = "random_pool"
CONFIG_NAMES = (FILTER_LABELS, SEED_GROUPS, SEED_GROUP_IMAGES, ANONYMOUS_CAPTIONS, RANDOM_POOL)

_PLACEHOLDERS = datasets.List(datasets.Value("string"))

FEATURES = {
    FILTER_LABELS: datasets.Features(
        {
            "image_hash": datasets.Value("string"),
            "url": datasets.Value("string"),
            "label": datasets.ClassLabel(names=FILTER_LABEL_NAMES),
            "annotator": datasets.Value("string"),
        }
    ),
    SEED_GROUPS: datasets.Features(
        {
            "group_id": datasets.Value("int32"),
            "anonymous_caption": datasets.Value("string"),
            "placeholders": _PLACEHOLDERS,
            "image_urls": datasets.List(datasets.Value("string")),
        }
    ),
    SEED_GROUP_IMAGES: datasets.Features(
        {
            "group_id": datasets.Value("int32"),
            "image_hash": datasets.Value("string"),
            "url": datasets.Value("string"),
            "anonymous_caption": datasets.Value("string"),
            "placeholders": _PLACEHOLDERS,
        }
    ),
    ANONYMOUS_CAPTIONS: datasets.Features(
        {
            "image_hash": datasets.Value("string"),
            "url": datasets.Value("string"),
            "caption": datasets.Value("string"),
            "placeholders": _PLACEHOLDERS,
        }
    ),
    RANDOM_POOL: datasets.Features({"image_hash": datasets.Value("string"), "url": datasets.Value("string")}),
}

# which column the images attach to: a single image per row, or one per URL of a group
IMAGE_COLUMNS = {
    FILTER_LABELS: ("image", datasets.Image()),
    SEED_GROUPS: ("images", datasets.List(datasets.Image())),
    SEED_GROUP_IMAGES: ("image", datasets.Image()),
    ANONYMOUS_CAPTIONS: ("image", datasets.Image()),
    RANDOM_POOL: ("image", datasets.Image()),
}
