"""A folder of immutable tensor shards, each named by the sha256 of its bytes and verified whole before use.

Layout: `identity.json` (what made the rows: a method with its weights fingerprint, settings; a store refuses
another identity) and `shard-<sha256>.safetensors` files. A shard holds one tensor, `rows` `(n, ...)`, and in its
safetensors metadata a manifest: the row `keys` (e.g. image hashes), their `content_keys` (e.g. the sha256 of each
input file), the row count and the time it was written.

- Atomic: a shard is written to a hidden temporary file, fsynced and renamed (`atomic_write`); a killed writer leaves
  whole shards only. Names come from content, so two writes never share a name and no shard is ever overwritten.
- Verified on open and again on every read: the bytes match the sha256 in the name, the manifest is complete (as
  many keys and content keys as rows), keys are unique, float rows are finite. A shard that fails is named in a
  warning (`damaged` maps its path to the reason), left on disk untouched, and its rows count as missing.
- A rerun therefore recomputes exactly the rows that are missing, damaged, or whose content key changed (a newer
  shard's row supersedes an older one of the same key); rows already held with the same content are not stored twice.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from training.store.atomic import atomic_write


logger = logging.getLogger(__name__)

SHARD_FORMAT = "relsim-tensor-shard-1"
IDENTITY_FILE = "identity.json"
ROWS = "rows"
_SHARD_NAME = re.compile(r"shard-([0-9a-f]{64})\.safetensors")


class DamagedShardError(ValueError):
    """A shard that cannot be trusted; the message starts with its path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class IdentityMismatchError(ValueError):
    """A store folder opened for rows of another identity."""

    def __init__(self, folder: Path, stored: dict[str, Any], wanted: dict[str, Any]) -> None:
        self.folder, self.stored, self.wanted = folder, stored, wanted
        self.fields = sorted(name for name in stored.keys() | wanted.keys() if stored.get(name) != wanted.get(name))
        super().__init__(
            f"{folder} holds rows of {stored}, not of {wanted} (they differ in {', '.join(self.fields)}); "
            "use another folder, or delete this one to start afresh"
        )


@dataclass(frozen=True)
class ShardManifest:
    path: Path
    keys: tuple[str, ...]
    content_keys: tuple[str, ...]
    created_ns: int


def _manifest_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of safetensors bytes (the format: 8-byte little-endian header length, then JSON)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]).get("__metadata__") or {}


def read_shard(path: Path) -> tuple[ShardManifest, torch.Tensor]:
    """A shard's manifest and rows after every check of the module docstring.

    Raises:
        DamagedShardError: naming the file and what is wrong with it.
    """
    name = _SHARD_NAME.fullmatch(path.name)
    if name is None:
        raise DamagedShardError(path, "not named shard-<sha256 of its bytes>.safetensors (an older or foreign file)")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DamagedShardError(path, f"cannot be read ({error})") from error
    if hashlib.sha256(data).hexdigest() != name.group(1):
        raise DamagedShardError(path, "its bytes do not match the sha256 in its name (damaged or edited)")
    try:
        tensors = load_tensors(data)
        metadata = _manifest_metadata(data)
        keys = json.loads(metadata["keys"])
        content_keys = json.loads(metadata["content_keys"])
        count = int(metadata["rows"])
        created_ns = int(metadata["created_ns"])
    except (SafetensorError, struct.error, KeyError, TypeError, ValueError) as error:
        raise DamagedShardError(path, f"not a readable shard ({type(error).__name__}: {error})") from error
    if metadata.get("format") != SHARD_FORMAT or set(tensors) != {ROWS}:
        raise DamagedShardError(path, f"not a {SHARD_FORMAT} file (one tensor {ROWS!r} and a format tag expected)")
    rows = tensors[ROWS]
    if not (rows.ndim >= 1 and len(keys) == len(content_keys) == count == rows.shape[0]):
        raise DamagedShardError(
            path,
            f"incomplete: its manifest lists {len(keys)} keys and {len(content_keys)} content keys for {count} rows, "
            f"and it holds {rows.shape[0] if rows.ndim else 0}",
        )
    if not all(isinstance(key, str) for key in keys + content_keys) or len(set(keys)) != len(keys):
        raise DamagedShardError(path, "its manifest's keys are not unique strings")
    if rows.is_floating_point():
        finite = torch.isfinite(rows.reshape(count, -1)).all(dim=1)
        if not bool(finite.all()):
            bad = [keys[index] for index in (~finite).nonzero().flatten().tolist()]
            raise DamagedShardError(path, f"{len(bad)} rows are not finite, e.g. {bad[:3]}")
    return ShardManifest(path, tuple(keys), tuple(content_keys), created_ns), rows


def read_identity(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / IDENTITY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a store folder (no {IDENTITY_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


class TensorShardStore:
    """Rows keyed by a string, each with the content key it was computed from (see the module docstring).

    Args:
        folder: the store folder (created if needed).
        identity: JSON data naming what computes the rows; must equal the identity an existing store was made with.

    Raises:
        IdentityMismatchError: the folder holds rows of another identity.
    """

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.identity = json.loads(json.dumps(identity))  # as it reads back from disk (tuples become lists)
        if (self.folder / IDENTITY_FILE).is_file():
            stored = read_identity(self.folder)
            if stored != self.identity:
                raise IdentityMismatchError(self.folder, stored, self.identity)
        else:
            atomic_write(self.folder / IDENTITY_FILE, json.dumps(self.identity, indent=2, sort_keys=True).encode())
        self.damaged: dict[Path, str] = {}
        self._manifests: list[ShardManifest] = []
        self._rows: dict[str, tuple[int, int, str]] = {}  # key -> (manifest index, row in its shard, content key)
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            try:
                self._manifests.append(read_shard(path)[0])
            except DamagedShardError as error:
                self.damaged[path] = error.reason
                logger.warning("%s; its rows count as missing and will be computed again", error)
        self._manifests.sort(key=lambda manifest: (manifest.created_ns, manifest.path.name))
        for index in range(len(self._manifests)):
            self._register(index)

    @classmethod
    def open(cls, folder: str | Path) -> TensorShardStore:
        """An existing store, whatever its identity."""
        return cls(folder, read_identity(folder))

    def _register(self, index: int) -> None:
        manifest = self._manifests[index]
        for row, (key, content_key) in enumerate(zip(manifest.keys, manifest.content_keys, strict=True)):
            self._rows[key] = (index, row, content_key)  # later shards supersede earlier ones

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def content_keys(self) -> dict[str, str]:
        """key -> the content key its current row was computed from."""
        return {key: content_key for key, (_, _, content_key) in self._rows.items()}

    def holds(self, key: str, content_key: str) -> bool:
        """True when the row of `key` was computed from `content_key`."""
        return key in self._rows and self._rows[key][2] == content_key

    def add(self, keys: Sequence[str], content_keys: Sequence[str], rows: torch.Tensor) -> Path | None:
        """Writes one shard of the rows not held yet with the same content; returns its path (None if nothing new).

        Raises:
            ValueError: lengths differ, a key repeats, or a float row is not finite (never stored; name the keys).
        """
        keys, content_keys = list(keys), list(content_keys)
        if rows.ndim == 0 or not (len(keys) == len(content_keys) == rows.shape[0]):
            raise ValueError(f"{len(keys)} keys and {len(content_keys)} content keys for rows of shape {rows.shape}")
        if len(set(keys)) != len(keys):
            raise ValueError(f"keys repeat within one write to {self.folder}")
        if rows.is_floating_point():
            finite = torch.isfinite(rows.reshape(len(keys), -1)).all(dim=1).tolist()
            bad = [key for key, ok in zip(keys, finite, strict=True) if not ok]
            if bad:
                raise ValueError(f"{len(bad)} rows for {self.folder} are not finite, e.g. {bad[:3]}; none was stored")
        keep = [index for index, key in enumerate(keys) if not self.holds(key, content_keys[index])]
        if not keep:
            return None
        # strictly after every shard held, so the new rows supersede older ones even when the clock steps back
        created_ns = max([time.time_ns()] + [manifest.created_ns + 1 for manifest in self._manifests])
        kept_keys = tuple(keys[index] for index in keep)
        kept_content_keys = tuple(content_keys[index] for index in keep)
        metadata = {
            "format": SHARD_FORMAT,
            "keys": json.dumps(kept_keys),
            "content_keys": json.dumps(kept_content_keys),
            "rows": str(len(keep)),
            "created_ns": str(created_ns),
        }
        data = save_tensors({ROWS: rows[keep].detach().cpu().contiguous()}, metadata=metadata)
        path = atomic_write(self.folder / f"shard-{hashlib.sha256(data).hexdigest()}.safetensors", data)
        self._manifests.append(ShardManifest(path, kept_keys, kept_content_keys, created_ns))
        self._register(len(self._manifests) - 1)
        return path

    def iter_shards(self) -> Iterator[tuple[list[str], torch.Tensor]]:
        """`(keys, rows)` of the current rows, shard by shard (a store larger than memory streams through).

        Raises:
            DamagedShardError: a shard changed or broke since the store was opened (never used silently).
        """
        for _, keys, rows in self.iter_shard_files():
            yield keys, rows

    def iter_shard_files(self) -> Iterator[tuple[Path, list[str], torch.Tensor]]:
        """`(shard file, keys, rows)` as `iter_shards`, for a reader that records which file holds which row."""
        for index, manifest in enumerate(self._manifests):
            live = [row for row, key in enumerate(manifest.keys) if self._rows[key][:2] == (index, row)]
            if not live:
                continue
            _, rows = read_shard(manifest.path)
            yield (
                manifest.path,
                [manifest.keys[row] for row in live],
                rows if len(live) == rows.shape[0] else rows[live],
            )
