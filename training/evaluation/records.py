"""JSON-lines files of the evaluation (retrievals, judgements, answer and caption caches): one reader and writer,
so every file reports a bad line the same way."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from training.hub_data.validation import RejectionLog, read_jsonl


Record = TypeVar("Record")


def write_records(records: Iterable[Any], path: str | Path) -> Path:
    """Writes dataclass instances, one JSON object per line (replacing the file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(asdict(record)) + "\n")
    return path


def append_record(record: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def iter_objects(path: str | Path, what: str, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for each non-blank line; a line that is not a JSON object, or lacks a `required`
    field, raises a ValueError naming the file, the line and the field (the dataset pipeline's strict reading)."""
    log = RejectionLog(strict=True)
    for number, record in read_jsonl(path, log):
        for name in required:
            if name not in record:
                log.reject(path, number, name, f"missing from this {what} record")
        yield number, record


def read_records(path: str | Path, record_type: type[Record], what: str) -> list[Record]:
    """Dataclass instances back from `write_records`."""
    records = []
    for number, fields in iter_objects(path, what):
        try:
            records.append(record_type(**fields))
        except TypeError as error:
            raise ValueError(f"{path}:{number}: not a {what} record ({error})") from error
    return records
