"""Filter labels: human judgements of whether an image is "relationally interesting", from jsonl or csv.

Source rows: `url` (required), `label` (`relational` / `not_relational`, or 1 / 0, true / false), optional
`image_hash` (must equal md5(url); computed when absent) and optional `annotator`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets

from training.hub_data.features import FEATURES, FILTER_LABEL_NAMES, FILTER_LABELS
from training.hub_data.validation import RejectionLog, accept_hash, md5_of, read_jsonl


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
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                yield reader.line_num, {key: value for key, value in row.items() if value not in (None, "")}
    elif path.suffix.lower() in (".jsonl", ".json"):
        yield from read_jsonl(path, log)
    else:
        raise ValueError(f"{path}: filter labels are read from .jsonl or .csv files")


def build_filter_labels(path: str | Path, log: RejectionLog) -> datasets.DatasetDict:
    """A `train` split of `image_hash`, `url`, `label` (ClassLabel) and `annotator`."""
    path = Path(path)
    rows: dict[str, list[Any]] = {name: [] for name in FEATURES[FILTER_LABELS]}
    first_line: dict[str, int] = {}
    for line, record in _read_rows(path, log):
        url = record.get("url")
        if not isinstance(url, str) or not url:
            log.reject(path, line, "url", "missing or not a string")
            continue
        label = _LABELS.get(str(record.get("label", "")).strip().lower())
        if label is None:
            log.reject(path, line, "label", f"{record.get('label')!r} is not one of {FILTER_LABEL_NAMES} (or 1/0)")
            continue
        image_hash = record.get("image_hash") or md5_of(url)
        if not accept_hash(path, line, image_hash, url, first_line, log):
            continue
        annotator = record.get("annotator")
        rows["image_hash"].append(image_hash)
        rows["url"].append(url)
        rows["label"].append(label)
        rows["annotator"].append(None if annotator is None else str(annotator))
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=FEATURES[FILTER_LABELS])})
