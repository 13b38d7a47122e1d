"""Writing a file so that readers see either the old content or the whole new content, never a part."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path


def temporary_path(path: Path) -> Path:
    """A fresh hidden name beside `path`: same folder (so the rename stays on one file system), never shared by two
    writers, and skipped by the stores' globs, so a killed writer's leftover is never mistaken for data."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def atomic_write(path: str | Path, content: bytes | Callable[[Path], None]) -> Path:
    """Writes `content` to `path` through a temporary file in the same folder, fsync and `os.replace`.

    Args:
        path: the final file; its folder is created if needed.
        content: the bytes, or a function that writes the file at the path it is given (e.g. a library's `save`).

    Returns:
        `path`. After a crash `path` holds its old content or the new one, and at most a hidden `.*.tmp` file is
        left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        if callable(content):
            content(temporary)
        else:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(descriptor, "wb") as out:
                out.write(content)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    # the rename itself is durable only once the folder's entry is on disk
    with contextlib.suppress(OSError):
        _fsync(path.parent)
    return path
