"""Judge answers on disk (a `RecordLog` of JSON lines), keyed by the judge's identity (model, weights fingerprint,
prompt version) and the sha256 of both image files: a rerun asks only pairs without a final answer, and a pair whose
image changed under the same hash is asked again.

Each answer is appended (and fsynced) as it arrives, so an interruption loses at most the request in flight. A pair
the judge could not answer readably (malformed or empty responses, after retries) is recorded as a `failure`: kept
for the record, never taken as an answer, asked again by the next run. A half-written last line is recovered.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluation.records import read_records, write_records
from training.store import RecordLog


logger = logging.getLogger(__name__)


@dataclass
class Judgement:
    method: str
    query: str
    candidate: str
    rank: int
    answer: str
    score: float | None


@dataclass(frozen=True)
class JudgeFailure:
    """A pair the judge gave no readable answer for; `reason` says what came back."""

    reason: str


class MalformedAnswerError(ValueError):
    """A response that holds no readable answer (invalid JSON, no choices, empty content)."""


def judgement_key(judge_identity: dict[str, Any], query_content: str, candidate_content: str) -> str:
    """The cache key of a pair: the judge's identity and the sha256 of each image file."""
    payload = json.dumps([judge_identity, query_content, candidate_content], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgementCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.log = RecordLog(self.path, what="judge answer", required=("key",))
        self.answers: dict[str, str] = {}
        self.failures: dict[str, str] = {}
        for number, record in self.log.records():
            key = record["key"]
            if isinstance(record.get("answer"), str) and record["answer"].strip():
                self.answers[key] = record["answer"]
                self.failures.pop(key, None)
            elif "answer" in record or "failure" in record:
                reason = record.get("failure") or f"empty or unreadable answer {record.get('answer')!r}"
                if key not in self.answers:
                    self.failures[key] = str(reason)
            else:
                raise ValueError(f"{self.path}:{number}: answer: missing from this judge answer record")
        if self.failures:
            logger.warning(
                "%s: %d pairs have no readable answer yet; they are asked again", self.path, len(self.failures)
            )

    def get(self, key: str) -> str | None:
        """The final answer of a pair, or None when it has none yet (never asked, or only failures)."""
        return self.answers.get(key)

    def put(self, key: str, answer: str, **context: Any) -> None:
        """Records a final answer.

        Raises:
            ValueError: the answer is empty (record it with `put_failure` instead).
        """
        if not answer.strip():
            raise ValueError(f"an empty judge answer is never final; record it as a failure in {self.path}")
        self.log.append({"key": key, "answer": answer, **context})
        self.answers[key] = answer
        self.failures.pop(key, None)

    def put_failure(self, key: str, reason: str, **context: Any) -> None:
        """Records that a pair got no readable answer; the next run asks it again."""
        self.log.append({"key": key, "failure": reason, **context})
        if key not in self.answers:
            self.failures[key] = reason


def write_judgements(judgements: list[Judgement], path: str | Path) -> Path:
    return write_records(judgements, path)


def read_judgements(path: str | Path) -> list[Judgement]:
    return read_records(path, Judgement, "judgement")
