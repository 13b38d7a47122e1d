"""JSON-lines records of the evaluation (pool, retrievals, judgements) as dataclasses, on the one JSON-lines reader
and writer (`training.json_lines`, through the dataset pipeline's strict `read_jsonl`), so every file reports a bad
line the same way. Caches that grow record by record (judge answers, captions) use `training.store.RecordLog`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from training.hub_data.validation import RejectionLog, read_jsonl
from training.json_lines import write_json_lines


Record = TypeVar("Record")


def write_records(records: Iterable[Any], path: str | Path) -> Path:
    """Writes dataclass instances, one JSON object per line, replacing the file atomically (never half-written)."""
    return write_json_lines(path, (asdict(record) for record in records))


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
