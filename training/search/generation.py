"""The record that makes an index folder's files one generation.

`index` rewrites `vectors.faiss`, its sidecar and `manifest.jsonl` one by one (each atomically) and then writes
`index.json` last, atomically, with the size and sha256 of each and the list of embedding shards the manifest points
into. A reader checks every file against that record before using it: a run killed half-way, a file copied in from
another index or cut short is named, with the repair, instead of being answered from (two FAISS files of the same
row count are the same size: only the checksum tells them apart).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.image_ids import file_sha256


INDEX_FORMAT = "relsim-search-index-2"
INDEX_FILE = "index.json"
REPAIR = "rerun `index` with the same source and --output to repair it (stored embeddings are reused)"


class DamagedIndexError(ValueError):
    """A file of an index folder that is missing, damaged, or not the one `index.json` records; the message names
    the file and the repair."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; {REPAIR}")
        self.path, self.reason = path, reason


def read_info(folder: Path, data: bytes | None = None) -> dict[str, Any]:
    """`index.json` of `folder` (or its bytes as already read), checked to be a JSON object with a model identity."""
    path = folder / INDEX_FILE
    try:
        info = json.loads(path.read_bytes() if data is None else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DamagedIndexError(path, f"malformed JSON ({error})") from error
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise DamagedIndexError(path, "not a search index record (no model identity)")
    return info


def recorded_files(folder: Path, info: dict[str, Any], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """What the record of `info` says each file of the generation is: `{name: {"size", "sha256"}}` for `names`.

    Raises:
        ValueError: an index written before the record existed (or by another program): its files cannot be
            checked against each other.
    """
    files = info.get("files")
    if info.get("format") != INDEX_FORMAT or not isinstance(files, dict) or not isinstance(info.get("shards"), list):
        raise ValueError(
            f"{folder / INDEX_FILE}: format {info.get('format')!r}, not {INDEX_FORMAT!r}: an index written before its "
            "files were recorded together, which cannot be checked; rerun `index` with the same source and --output "
            "to upgrade it (stored embeddings are reused)"
        )
    for name in names:
        record = files.get(name)
        if not (
            isinstance(record, dict) and isinstance(record.get("size"), int) and isinstance(record.get("sha256"), str)
        ):
            raise DamagedIndexError(folder / INDEX_FILE, f"files.{name}: missing, or without its size and sha256")
    for number, name in enumerate(info["shards"]):
        if not (isinstance(name, str) and name.startswith("shard-") and Path(name).name == name):
            raise DamagedIndexError(folder / INDEX_FILE, f"shards[{number}]: {name!r} is not a shard file name")
    return files


def file_record(path: Path) -> dict[str, Any]:
    """What the record keeps of a file: its size and sha256."""
    return {"size": path.stat().st_size, "sha256": file_sha256(path)}


def check_size(path: Path, recorded: dict[str, Any]) -> None:
    """Names a missing or truncated file before anything reads it (a large file's hash is read only once, later)."""
    if not path.is_file():
        raise DamagedIndexError(path, f"missing (the index's record {INDEX_FILE} names it)")
    size = path.stat().st_size
    if size != recorded["size"]:
        raise DamagedIndexError(
            path, f"{size} bytes where {INDEX_FILE} records {recorded['size']} (truncated, or replaced)"
        )


def read_recorded(path: Path, recorded: dict[str, Any]) -> bytes:
    """The bytes of `path`, checked against its record (size, sha256) before anything is parsed."""
    check_size(path, recorded)
    data = path.read_bytes()
    if len(data) != recorded["size"] or hashlib.sha256(data).hexdigest() != recorded["sha256"]:
        raise DamagedIndexError(path, f"not the file {INDEX_FILE} records (its sha256 differs: replaced or edited)")
    return data
