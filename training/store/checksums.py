"""A file's sha256 recorded beside it when it is written, for files whose names are fixed (the pipeline's
`shards/part-NNNNN.parquet`): the check `TensorShardStore` makes against the sha256 in a shard's name.

Why: a parquet file whose data pages were damaged after it was written still has a whole footer (row count, metadata),
so it looks finished until its data is decoded, and then fails with the codec's message and no file name ("Corrupt
snappy compressed data."). Its bytes no longer match the sha256 recorded when it was written, so it is found before
it is used.

`<name>.sha256` holds the digest in `sha256sum` format (`sha256sum -c part-00003.parquet.sha256` checks it by hand).
The file is written first, then its checksum, each atomically: a crash between the two leaves a file without a
checksum or with its previous content's, which counts as damaged, never as whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from training.image_ids import file_sha256
from training.store.atomic import atomic_write


CHECKSUM_SUFFIX = ".sha256"


def checksum_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_with_checksum(path: str | Path, content: bytes) -> Path:
    """Writes `content` to `path` atomically, then its sha256 to `<path>.sha256`; returns `path`."""
    path = atomic_write(path, content)
    atomic_write(checksum_path(path), f"{hashlib.sha256(content).hexdigest()}  {path.name}\n".encode())
    return path


def checksum_problem(path: str | Path) -> str | None:
    """Why the existing file `path` cannot be trusted (no checksum recorded, or bytes other than the recorded ones);
    None when its bytes are the ones written. Reads the whole file: every call hashes it again."""
    path, recorded = Path(path), checksum_path(path)
    if not recorded.is_file():
        return f"no sha256 was recorded when it was written ({recorded.name} is missing)"
    expected = recorded.read_text(encoding="utf-8", errors="replace").split()
    if not expected or file_sha256(path) != expected[0]:
        return f"its bytes do not match the sha256 recorded in {recorded.name} when it was written (damaged or edited)"
    return None


def remove_with_checksum(path: str | Path) -> None:
    """Deletes `path` and its recorded checksum (either may be missing)."""
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
