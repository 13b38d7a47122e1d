"""Building, downloading, exporting and publishing relsim's Hub datasets (`python -m training.datasets ...`)."""

from training.datasets.captions import build_anonymous_captions, build_random_pool
from training.datasets.features import CONFIG_NAMES, FEATURES
from training.datasets.filter_labels import build_filter_labels
from training.datasets.seed_groups import build_seed_groups
from training.datasets.validation import Rejection, RejectionLog


__all__ = [
    "CONFIG_NAMES",
    "FEATURES",
    "Rejection",
    "RejectionLog",
    "build_anonymous_captions",
    "build_filter_labels",
    "build_random_pool",
    "build_seed_groups",
]
