"""The weights fingerprint of a model named by folder or hub id: the part of a cache key that says which weights
computed a cached row, so new weights at the same path or id never reuse old rows (see `training.store`)."""

from __future__ import annotations

from pathlib import Path

import torch

from training.store import tensors_fingerprint, weights_fingerprint


def model_fingerprint(model_name_or_path: str, model: torch.nn.Module | None = None) -> str:
    """A folder's files (hashed once per process), a hub id's commit in the local Hub cache (free: a commit names
    every file's content), or else the tensors of `model` when one is given.

    Raises:
        FileNotFoundError: `model_name_or_path` is neither a folder nor in the Hub cache, and no model was given.
    """
    folder = Path(model_name_or_path)
    if folder.is_dir():
        return weights_fingerprint(folder)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(model_name_or_path, "config.json")
    if isinstance(config, str):  # .../snapshots/<commit>/config.json
        return f"hub:{model_name_or_path}@{Path(config).parent.name}"
    if model is not None:
        return tensors_fingerprint(model.state_dict().items())
    raise FileNotFoundError(
        f"cannot fingerprint the weights of {model_name_or_path!r}: not a folder, and not in the local Hub cache"
    )
