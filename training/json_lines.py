"""The one reader and writer of JSON-lines files (datasets, lists, manifests, reports): every file reports a bad
line the same way, `file:line: reason`. Caches that must survive a crash mid-record use `training.store.RecordLog`.

A line is a JSON object; blank lines are skipped; a byte-order mark before the first line (spreadsheet exports) is
skipped too.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from training.store import atomic_write


def json_lines(path: str | Path, data: bytes | None = None) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """`(line number, object)` for each non-blank line, or `(line number, problem)` for one that is not a JSON object
    (not UTF-8, malformed JSON, another JSON value), for readers that report bad lines and go on.

    Args:
        data: the file's bytes when they are already read (`path` then only names them).
    """
    with Path(path).open("rb") if data is None else io.BytesIO(data) as lines:
        for number, raw_line in enumerate(lines, start=1):
            try:
                line = raw_line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield number, f"not UTF-8 text (byte {error.start + 1}: {error.reason})"
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, f"malformed JSON ({error.msg} at column {error.colno})"
                continue
            if not isinstance(record, dict):
                yield number, f"expected a JSON object, got {type(record).__name__}"
                continue
            yield number, record


def read_json_lines(path: str | Path, data: bytes | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for each non-blank line.

    Raises:
        ValueError: `file:line: <problem>` at the first line that is not a JSON object.
    """
    for number, record in json_lines(path, data):
        if isinstance(record, str):
            raise ValueError(f"{path}:{number}: {record}")
        yield number, record


def json_line(row: Mapping[str, Any]) -> str:
    """One row as a line (UTF-8 text kept as is, not escaped)."""
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_json_lines(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> Path:
    """Writes `rows` (read once, as they come) one JSON object a line, replacing the file atomically: readers never
    see it half-written."""

    def write(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8") as out:
            out.writelines(json_line(row) for row in rows)

    return atomic_write(path, write)


def append_json_lines(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Appends `rows` to `path` (created when missing) as they come, one JSON object a line."""
    with Path(path).open("a", encoding="utf-8") as out:
        out.writelines(json_line(row) for row in rows)
