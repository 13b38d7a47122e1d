"""Content fingerprints of model weights, the other half of a cache key (the first is an input file's sha256).

A folder's fingerprint is the sha256 of the (name, size, sha256) of its top-level files: what `from_pretrained`
reads from a folder (weights, configs, tokenizer, remote code). Left out are hidden files, `*.md`, and the Trainer's
resumable state (optimizer, scheduler, RNG states, `training_args.bin`, `trainer_state.json`), which do not change
what the model computes. Every byte is hashed, because the cheap shortcuts fail exactly where it matters:
safetensors headers (names, dtypes, shapes, offsets) are identical for two trainings of the same architecture, and
modification times change on a mere copy while an in-place rewrite can keep them. The cost is one read of the
weights (a few seconds per GB per core; the files are hashed on parallel threads, and the page cache serves the
model load that follows). Hub downloads cost nothing: the Hub cache names every large file by its sha256, checked
at download, and a hub id is fingerprinted by its resolved commit (`model_fingerprint`, `adapter_fingerprint`).
Hashes are remembered for the life of the process, keyed by path, size, modification time and inode.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache

from training.image_ids import file_sha256


TRAINER_STATE_FILES = frozenset(
    {"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "trainer_state.json"}
)
_TRAINER_STATE_PATTERN = re.compile(r"rng_state(_\d+)?\.pth")
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")
_known_hashes: dict[tuple[str, int, int, int, int], str] = {}


def _counts_for_weights(path: Path) -> bool:
    name = path.name
    if name.startswith(".") or name.lower().endswith(".md") or not path.is_file():
        return False
    return name not in TRAINER_STATE_FILES and _TRAINER_STATE_PATTERN.fullmatch(name) is None


def content_sha256(path: Path) -> str:
    """sha256 of a file, from the Hub cache's blob name when `path` links there, else hashed (once per process)."""
    if path.is_symlink():
        target = path.resolve()
        if target.parent.name == "blobs" and _SHA256_NAME.fullmatch(target.name):
            return target.name
    status = path.stat()
    memo_key = (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino, status.st_dev)
    if memo_key not in _known_hashes:
        _known_hashes[memo_key] = file_sha256(path)
    return _known_hashes[memo_key]


def weights_fingerprint(folder: str | Path, max_threads: int = 8) -> str:
    """The fingerprint of a model folder's top-level files (see the module docstring for which count and why).

    Raises:
        NotADirectoryError: `folder` is not a folder.
        FileNotFoundError: it holds no file that counts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a model folder; a weights fingerprint needs the files")
    files = sorted(path for path in folder.iterdir() if _counts_for_weights(path))
    if not files:
        raise FileNotFoundError(f"{folder} holds no model files to fingerprint")
    with ThreadPoolExecutor(max_workers=max(1, min(max_threads, len(files), os.cpu_count() or 1))) as pool:
        hashes = list(pool.map(content_sha256, files))
    listing = [[path.name, path.stat().st_size, digest] for path, digest in zip(files, hashes, strict=True)]
    return "sha256:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """The fingerprint of tensors in memory (a model built or changed in this process, with no files behind it):
    sha256 over each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return "tensors-sha256:" + digest.hexdigest()


def hub_fingerprint(repo_id: str, marker_file: str) -> str | None:
    """`hub:<id>@<commit>` when `marker_file` of the hub id is in the local Hub cache (free: a commit names every
    file's content), else None."""
    found = try_to_load_from_cache(repo_id, marker_file)
    if isinstance(found, str):  # .../snapshots/<commit>/<marker_file>
        return f"hub:{repo_id}@{Path(found).parent.name}"
    return None


def model_fingerprint(model_name_or_path: str, model: torch.nn.Module | None = None) -> str:
    """The fingerprint of a model named by folder or hub id: the folder's files, the hub id's commit in the local
    Hub cache, or else the tensors of `model` when one is given.

    Raises:
        FileNotFoundError: `model_name_or_path` is neither a folder nor in the Hub cache, and no model was given.
    """
    if Path(model_name_or_path).is_dir():
        return weights_fingerprint(model_name_or_path)
    fingerprint = hub_fingerprint(model_name_or_path, "config.json")
    if fingerprint is not None:
        return fingerprint
    if model is not None:
        return tensors_fingerprint(model.state_dict().items())
    raise FileNotFoundError(
        f"cannot fingerprint the weights of {model_name_or_path!r}: not a folder, and not in the local Hub cache"
    )


def adapter_fingerprint(adapter: str) -> str | None:
    """A LoRA adapter's folder (its files hashed) or hub id (its commit in the local Hub cache); None when neither
    can be found, and the caller falls back to the loaded weights."""
    if Path(adapter).is_dir():
        return weights_fingerprint(adapter)
    return hub_fingerprint(adapter, "adapter_config.json")
