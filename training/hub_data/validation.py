"""Row-level validation shared by the dataset builders: every rejected row is reported with file, line and reason.

By default a rejected row is logged and written to a `rejected_<source>.jsonl` report next to the built datasets,
and the build goes on; with `strict=True` the first rejection raises.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.trainer.data import normalize_caption


logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Rejection:
    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


@dataclass
class RejectionLog:
    """Collects rejected rows; in strict mode the first one raises `ValueError`."""

    strict: bool = False
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, file: str | Path, line: int, field_name: str, reason: str) -> None:
        rejection = Rejection(str(file), line, field_name, reason)
        if self.strict:
            raise ValueError(str(rejection))
        self.rejections.append(rejection)

    def write(self, path: str | Path) -> Path | None:
        """Writes the rejections as jsonl (file, line, field, reason) when anything was rejected."""
        if not self.rejections:
            return None
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(asdict(item)) + "\n" for item in self.rejections), encoding="utf-8")
        logger.warning("%d rows were rejected; each is listed with its reason in %s", len(self.rejections), path)
        return path


def md5_of(url: str) -> str:
    return hashlib.md5(url.encode("utf-8")).hexdigest()


def accept_hash(
    path: str | Path,
    line: int,
    image_hash: str,
    url: str,
    first_line: dict[str, int],
    log: RejectionLog,
    url_field: str = "url",
) -> bool:
    """Checks image_hash = md5(url) and that the hash is new (recording it); rejects and returns False if not."""
    if image_hash != md5_of(url):
        log.reject(path, line, "image_hash", f"{image_hash} is not md5({url_field}) = {md5_of(url)}")
        return False
    if image_hash in first_line:
        log.reject(path, line, "image_hash", f"duplicate of line {first_line[image_hash]}")
        return False
    first_line[image_hash] = line
    return True


def caption_placeholders(caption: str) -> list[str]:
    """The `{...}` names of an anonymous caption, in order of first use.

    Raises:
        ValueError: for an empty placeholder or braces that do not pair up.
    """
    names = _PLACEHOLDER.findall(caption)
    if "{" in _PLACEHOLDER.sub("", caption) or "}" in _PLACEHOLDER.sub("", caption):
        raise ValueError("braces do not pair up")
    if any(not name.strip() for name in names):
        raise ValueError("empty placeholder {}")
    return list(dict.fromkeys(name.strip() for name in names))


def clean_caption(raw: Any) -> tuple[str, list[str]]:
    """Caption without its wrapping literal quotes, and its placeholders; `ValueError` says what is wrong."""
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    caption = normalize_caption(raw)
    if not caption:
        raise ValueError("empty caption")
    return caption, caption_placeholders(caption)


def read_jsonl(path: str | Path, log: RejectionLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """`(line number, object)` for every parseable object line; malformed lines go to the log."""
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                log.reject(path, number, "<line>", f"malformed JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(record, dict):
                log.reject(path, number, "<line>", f"expected a JSON object, got {type(record).__name__}")
                continue
            yield number, record


def read_json_array(path: str | Path) -> Iterator[tuple[int, Any]]:
    """`(line number, element)` of a top-level JSON list, decoding element by element to know each one's line.

    Raises:
        ValueError: naming the file, line and column when the file is not a well-formed JSON list.
    """
    text = Path(path).read_text(encoding="utf-8")
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
