"""Row-level validation shared by the dataset builders: every rejected row is reported with file, line and reason.

By default a rejected row is logged and written to a `rejected_<source>.jsonl` report next to the built datasets,
and the build goes on; with `strict=True` the first rejection raises. Rows that are kept but deserve a person's look
(a URL in two seed groups, a caption still quoted after normalisation) are warnings in the same report
(`"kept": true`). Text sources are read as UTF-8 with or without a byte-order mark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.caption_text import caption_placeholders, normalize_caption, still_quoted
from training.image_ids import is_image_hash, url_image_hash
from training.json_lines import json_lines, write_json_lines


logger = logging.getLogger(__name__)

TEXT_ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark (spreadsheet exports) is skipped


@dataclass(frozen=True)
class Rejection:
    """One finding about a source row: rejected (left out of the build), or `kept` with a warning."""

    file: str
    line: int
    field: str
    reason: str
    kept: bool = False

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class RejectionLog:
    """Collects rejected rows and warnings about kept rows; in strict mode the first rejection raises `ValueError`."""

    strict: bool = False
    findings: list[Rejection] = field(default_factory=list)

    def reject(self, file: str | Path, line: int, field_name: str, reason: str) -> None:
        rejection = Rejection(str(file), line, field_name, reason)
        if self.strict:
            raise ValueError(str(rejection))
        self.findings.append(rejection)

    def warn(self, file: str | Path, line: int, field_name: str, reason: str) -> None:
        """Records a finding about a row that is built anyway (never raises, not even in strict mode)."""
        self.findings.append(Rejection(str(file), line, field_name, reason, kept=True))

    @property
    def rejections(self) -> list[Rejection]:
        return [finding for finding in self.findings if not finding.kept]

    @property
    def warnings(self) -> list[Rejection]:
        return [finding for finding in self.findings if finding.kept]

    @property
    def rejected_rows(self) -> int:
        """Rows (file, line) left out: a row rejected for two reasons counts once."""
        return len({(finding.file, finding.line) for finding in self.rejections})

    def write(self, path: str | Path) -> Path | None:
        """Writes every finding as jsonl (file, line, field, reason, kept) when there is any; otherwise removes an
        earlier report at `path`, which would describe a source that has since been fixed."""
        path = Path(path)
        if not self.findings:
            path.unlink(missing_ok=True)
            return None
        write_json_lines(path, (asdict(item) for item in self.findings))
        if self.rejections:
            logger.warning("%d rows were rejected; each is listed with its reason in %s", self.rejected_rows, path)
        if self.warnings:
            logger.warning("%d warnings about rows that were kept are listed in %s", len(self.warnings), path)
        return path


def require_kept_rows(
    built: Mapping[str, Mapping[str, Sized]], sources: str, log: RejectionLog, report: Path | None
) -> None:
    """Refuses a build in which a split kept no row, so an all-rejected source cannot pass for a dataset.

    Raises:
        ValueError: naming the empty splits, the source file(s) and the rejection report.
    """
    empty = [f"{config}/{split}" for config, splits in built.items() for split, rows in splits.items() if not len(rows)]
    if not empty:
        return
    if not log.rejected_rows:
        why = "the source holds no rows"
    else:
        why = f"{log.rejected_rows} rows were rejected; each is listed with its reason in {report}"
    raise ValueError(f"{sources}: no row was kept for {', '.join(empty)} ({why})")


def hash_problem(image_hash: object, url: str, url_field: str = "url") -> str | None:
    """Why `image_hash` is not the image id the formats promise for `url` (md5 of the URL), or None when it is."""
    if not is_image_hash(image_hash):
        return f"{image_hash!r} is not an image hash (32 lowercase hexadecimal characters)"
    expected = url_image_hash(url)
    if image_hash != expected:
        return f"{image_hash} is not md5({url_field}) = {expected}"
    return None


def accept_hash(
    path: str | Path,
    line: int,
    image_hash: object,
    url: str,
    first_seen: dict[str, str],
    log: RejectionLog,
    url_field: str = "url",
) -> bool:
    """Checks image_hash = md5(url) and that the hash is new (recording where it was first seen as `file:line`);
    rejects the row and returns False if not."""
    problem = hash_problem(image_hash, url, url_field)
    if problem is not None:
        log.reject(path, line, "image_hash", problem)
        return False
    return _first_sighting(path, line, image_hash, first_seen, log)


def _first_sighting(
    path: str | Path, line: int, image_hash: str, first_seen: dict[str, str], log: RejectionLog
) -> bool:
    if image_hash in first_seen:
        log.reject(path, line, "image_hash", f"duplicate of {first_seen[image_hash]}")
        return False
    first_seen[image_hash] = f"{path}:{line}"
    return True


def accept_local_hash(
    path: str | Path, line: int, image_hash: object, first_seen: dict[str, str], log: RejectionLog
) -> bool:
    """For a local image (no URL): checks that image_hash is a hash (md5 of the file's bytes cannot be checked here,
    the file is elsewhere) and new; rejects the row and returns False if not."""
    if not is_image_hash(image_hash):
        log.reject(
            path, line, "image_hash", f"{image_hash!r} is not an image hash (32 lowercase hexadecimal characters)"
        )
        return False
    return _first_sighting(path, line, image_hash, first_seen, log)


def accept_caption(
    raw: Any, path: str | Path, line: int, field_name: str, log: RejectionLog
) -> tuple[str, list[str]] | None:
    """The normalised caption and its placeholders, or None when the row is rejected (not a string, empty, braces
    that do not pair up)."""
    if not isinstance(raw, str):
        log.reject(path, line, field_name, f"expected a string, got {type(raw).__name__}")
        return None
    caption = normalize_caption(raw)
    if not caption:
        log.reject(path, line, field_name, "empty caption")
        return None
    try:
        placeholders = caption_placeholders(caption)
    except ValueError as error:
        log.reject(path, line, field_name, str(error))
        return None
    return caption, placeholders


def warn_if_still_quoted(caption: str, path: str | Path, line: int, field_name: str, log: RejectionLog) -> None:
    """Reports a kept caption that still begins or ends with a quote after normalisation (call once the row is
    built, so a rejected row is never also listed as kept)."""
    if still_quoted(caption):
        log.warn(path, line, field_name, f"still begins or ends with a quote after normalisation: {caption!r}")


def read_jsonl(path: str | Path, log: RejectionLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for every parseable object line; malformed lines (bad JSON, not an object, not
    UTF-8) go to the log. A byte-order mark before the first line is skipped."""
    for number, record in json_lines(path):
        if isinstance(record, str):
            log.reject(path, number, "<line>", record)
        else:
            yield number, record


def read_text(path: str | Path) -> str:
    """A whole text source, UTF-8 with or without a byte-order mark.

    Raises:
        ValueError: naming the file and line of the first byte that is not UTF-8.
    """
    data = Path(path).read_bytes()
    try:
        return data.decode(TEXT_ENCODING)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text ({error.reason}); save the file as UTF-8") from error


def read_json_array(path: str | Path) -> Iterator[tuple[int, Any]]:
    """`(line number, element)` of a top-level JSON list, decoding element by element to know each one's line.

    Raises:
        ValueError: naming the file, line and column when the file is not a well-formed JSON list.
    """
    text = read_text(path)
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if position >= len(text) or text[position] != "[":
        raise ValueError(f"{path}: expected a JSON list at line {text.count(chr(10), 0, position) + 1}")
    position = _skip_space(text, position + 1)
    if position < len(text) and text[position] == "]":
        return
    while True:
        line = text.count("\n", 0, position) + 1
        try:
            element, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}:{error.colno}: malformed JSON ({error.msg})") from error
        yield line, element
        position = _skip_space(text, position)
        if position < len(text) and text[position] == ",":
            position = _skip_space(text, position + 1)
            continue
        if position < len(text) and text[position] == "]":
            return
        line = text.count("\n", 0, position) + 1
        raise ValueError(f"{path}:{line}: malformed JSON (expected ',' or ']')")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position
