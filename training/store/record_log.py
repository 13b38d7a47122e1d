"""An append-only JSON-lines log of records (paid judge answers, captions): each record is on disk before the next
is asked for, and a crash mid-write costs at most the record being written.

- Append: one `write` of the line and its newline, then flush and fsync.
- Read: every line must be a JSON object holding the required fields; a damaged line raises a ValueError naming the
  file, the line and the field — except the last line, which a killed writer can leave half-written: it is skipped
  with a warning, and cut from the file before the next append (so the log never keeps a broken line in its middle).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)


class RecordLog:
    """Args:
    path: the JSON-lines file (it and its folder are created by the first append).
    what: what one record is, for error messages ("judge answer").
    required: fields every record must hold.
    """

    def __init__(self, path: str | Path, what: str = "record", required: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self.what = what
        self.required = required
        self._tail_checked = False

    def _lines(self) -> Iterator[tuple[int, int, bytes]]:
        """`(line number, byte offset, raw line)`; the last one may lack its newline."""
        data = self.path.read_bytes() if self.path.is_file() else b""
        offset = 0
        for number, raw in enumerate(data.splitlines(keepends=True), start=1):
            yield number, offset, raw
            offset += len(raw)

    @staticmethod
    def _parse(raw: bytes, first: bool) -> dict[str, Any]:
        text = raw.decode("utf-8")
        if first:
            text = text.removeprefix("\ufeff")
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        return record

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """`(line number, record)` for every record; see the module docstring for damaged lines.

        Raises:
            ValueError: `<file>:<line>: <field>: <reason>` for a damaged line other than the last.
        """
        lines = [(number, raw) for number, _, raw in self._lines() if raw.strip()]
        for position, (number, raw) in enumerate(lines):
            try:
                record = self._parse(raw, number == 1)
            except (UnicodeDecodeError, ValueError) as error:
                if position == len(lines) - 1:
                    logger.warning(
                        "%s:%d: the last line is half-written (%s) and is ignored; it will be cut before the next "
                        "append: %.120r",
                        self.path, number, error, raw,
                    )  # fmt: skip
                    return
                reason = f"malformed JSON ({error})" if isinstance(error, json.JSONDecodeError) else str(error)
                raise ValueError(f"{self.path}:{number}: <line>: {reason}") from error
            for name in self.required:
                if name not in record:
                    raise ValueError(f"{self.path}:{number}: {name}: missing from this {self.what} record")
            yield number, record

    def _repair_tail(self) -> None:
        """Cuts a half-written last line, or ends a whole last record that lost only its newline."""
        lines = [(offset, raw) for _, offset, raw in self._lines() if raw.strip()]
        if not lines:
            return
        offset, raw = lines[-1]
        try:
            self._parse(raw, offset == 0)
        except (UnicodeDecodeError, ValueError):
            logger.warning("%s: cutting a half-written last line at byte %d: %.120r", self.path, offset, raw)
            os.truncate(self.path, offset)
            return
        if not raw.endswith(b"\n"):
            with self.path.open("ab") as out:
                out.write(b"\n")

    def append(self, record: dict[str, Any]) -> None:
        """Writes one record durably (flush + fsync) before returning."""
        missing = [name for name in self.required if name not in record]
        if missing:
            raise ValueError(f"a {self.what} record needs {missing} to be written to {self.path}")
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._tail_checked:
            self._repair_tail()
            self._tail_checked = True
        with self.path.open("ab") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
