"""The folder of built datasets between pipeline steps: one `save_to_disk` DatasetDict per configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import datasets

from training.hub_data.features import CONFIG_NAMES


def save_built(root: str | Path, config: str, splits: datasets.DatasetDict) -> Path:
    """Saves through a temporary folder, so a dataset loaded from the old copy can be replaced safely."""
    target = Path(root) / config
    staging = Path(root) / f".{config}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    splits.save_to_disk(str(staging))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def load_built(root: str | Path) -> dict[str, datasets.DatasetDict]:
    """Every configuration found under `root`, in the canonical order."""
    root = Path(root)
    built = {
        config: datasets.load_from_disk(str(root / config))
        for config in CONFIG_NAMES
        if (root / config / "dataset_dict.json").is_file()
    }
    if not built:
        raise FileNotFoundError(f"{root} holds no built dataset; run `python -m training.hub_data build ...` first")
    return built
