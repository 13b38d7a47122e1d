"""Filter labels: human judgements of whether an image is "relationally interesting", from jsonl or csv.

Source rows: `url` (required), `label` (`relational` / `not_relational`, or 1 / 0, true / false), optional
`image_hash` (must equal md5(url); computed when absent) and optional `annotator`. A csv needs a header row naming
its columns (in any order).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import FEATURES, FILTER_LABEL_NAMES, FILTER_LABELS
from training.hub_data.validation import RejectionLog, accept_hash, read_jsonl, read_text
from training.image_ids import url_image_hash


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("url", "label")
OPTIONAL_COLUMNS = ("image_hash", "annotator")
_LABELS = {
    "relational": 1,
    "not_relational": 0,
    "1": 1,
    "0": 0,
    "true": 1,
    "false": 0,
}


def _read_rows(path: Path, log: RejectionLog) -> Iterator[tuple[int, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        yield from _read_csv(path, log)
    elif path.suffix.lower() in (".jsonl", ".json"):
        yield from read_jsonl(path, log)
    else:
        raise ValueError(f"{path}: filter labels are read from .jsonl or .csv files")


def _read_csv(path: Path, log: RejectionLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """Rows of a csv with a header; a header without the required columns stops the build (it would reject every
    row)."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        expected = ", ".join(REQUIRED_COLUMNS) + " (and optionally " + ", ".join(OPTIONAL_COLUMNS) + ")"
        raise ValueError(
            f"{path}:1: the header {','.join(header) or '(empty file)'} lacks {', '.join(missing)}; "
            f"expected the columns {expected}"
        )
    unknown = [name for name in header if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        logger.warning("%s: columns %s are not filter-label fields and are ignored", path, ", ".join(unknown))
    reader.fieldnames = header
    for row in reader:
        extra = row.pop(None, None)
        if extra:
            log.reject(
                path, reader.line_num, "<line>", f"{len(extra)} more fields than the header (an unquoted comma?)"
            )
            continue
        yield reader.line_num, {key: value for key, value in row.items() if value not in (None, "")}


def build_filter_labels(path: str | Path, log: RejectionLog) -> datasets.DatasetDict:
    """A `train` split of `image_hash`, `url`, `label` (ClassLabel) and `annotator`."""
    path = Path(path)
    rows: dict[str, list[Any]] = {name: [] for name in FEATURES[FILTER_LABELS]}
    first_seen: dict[str, str] = {}
    for line, record in _read_rows(path, log):
        url = record.get("url")
        if not isinstance(url, str) or not url:
            log.reject(path, line, "url", "missing or not a string")
            continue
        label = _LABELS.get(str(record.get("label", "")).strip().lower())
        if label is None:
            log.reject(path, line, "label", f"{record.get('label')!r} is not one of {FILTER_LABEL_NAMES} (or 1/0)")
            continue
        image_hash = record.get("image_hash") or url_image_hash(url)
        if not accept_hash(path, line, image_hash, url, first_seen, log):
            continue
        annotator = record.get("annotator")
        rows["image_hash"].append(image_hash)
        rows["url"].append(url)
        rows["label"].append(label)
        rows["annotator"].append(None if annotator is None else str(annotator))
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES[FILTER_LABELS])})
