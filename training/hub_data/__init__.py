"""Building, downloading, exporting and publishing relsim's Hub datasets (`python -m training.hub_data ...`)."""

from training.hub_data.captions import build_anonymous_captions, build_random_pool
from training.hub_data.features import CONFIG_NAMES, FEATURES
from training.hub_data.filter_labels import build_filter_labels
from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import Rejection, RejectionLog


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
