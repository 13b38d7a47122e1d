"""The conceptual distance's cache: sampled descriptions and their log-likelihoods, each in an append-only
`RecordLog`, keyed by what they were computed from, so a killed run resumes without redoing (or duplicating) work.

- A description is keyed by the describer (weights fingerprint and prompt), the sampling settings and seed, the
  image's hash, the length budget and the sample's index.
- A score is keyed by the describer, the description's key and the hash of the image it is scored under.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from training.store import RecordLog


DESCRIPTIONS_FILE = "descriptions.jsonl"
SCORES_FILE = "scores.jsonl"


def _digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()


def description_key(describer_id: str, sampling: dict[str, Any], image_hash: str, length: int, sample: int) -> str:
    """sha256 over the describer, the sampling settings, the image, the length budget and the sample index."""
    return _digest(["description", describer_id, sampling, image_hash, length, sample])


def score_key(describer_id: str, description: str, image_hash: str) -> str:
    """sha256 over the describer, a description's key and the image the description is scored under."""
    return _digest(["score", describer_id, description, image_hash])


class DistanceCache:
    """Both logs of one cache folder, read once; `add_*` writes a record durably before returning.

    Args:
        folder: holds `descriptions.jsonl` and `scores.jsonl` (created on first write); describers and settings can
            share a folder, since every key names them.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.description_log = RecordLog(
            self.folder / DESCRIPTIONS_FILE, "sampled description", ("key", "image_hash", "length", "token_ids")
        )
        self.score_log = RecordLog(self.folder / SCORES_FILE, "description score", ("key", "log_likelihood"))
        self.descriptions = {record["key"]: record for _, record in self.description_log.records()}
        self.scores = {record["key"]: float(record["log_likelihood"]) for _, record in self.score_log.records()}

    def add_description(self, record: dict[str, Any]) -> None:
        if record["key"] not in self.descriptions:
            self.description_log.append(record)
            self.descriptions[record["key"]] = record

    def add_score(self, key: str, log_likelihood: float, **details: Any) -> None:
        if key not in self.scores:
            self.score_log.append({"key": key, "log_likelihood": log_likelihood, **details})
            self.scores[key] = log_likelihood
