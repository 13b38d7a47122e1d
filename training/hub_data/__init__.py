"""Building, downloading, exporting and publishing relsim's Hub datasets (`python -m training.hub_data ...`).

The names below are imported on first use, so `python -m training.hub_data --help` does not import `datasets`.
"""

from __future__ import annotations

import importlib
from typing import Any


_EXPORTS = {
    "build_anonymous_captions": "training.hub_data.captions",
    "build_random_pool": "training.hub_data.captions",
    "CONFIG_NAMES": "training.hub_data.features",
    "FEATURES": "training.hub_data.features",
    "build_filter_labels": "training.hub_data.filter_labels",
    "build_seed_groups": "training.hub_data.seed_groups",
    "Rejection": "training.hub_data.validation",
    "RejectionLog": "training.hub_data.validation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
