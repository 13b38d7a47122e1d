"""Judge answers on disk (JSON lines), keyed by judge, prompt version and image pair: a rerun asks only new pairs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluation.records import append_record, iter_objects, read_records, write_records


@dataclass
class Judgement:
    method: str
    query: str
    candidate: str
    rank: int
    answer: str
    score: float | None


def judgement_key(judge_identity: dict[str, Any], query: str, candidate: str) -> str:
    payload = json.dumps([judge_identity, query, candidate], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgementCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        if self.path.is_file():
            for _, record in iter_objects(self.path, "judge answer", required=("key", "answer")):
                self.answers[record["key"]] = record["answer"]

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, answer: str, **context: Any) -> None:
        self.answers[key] = answer
        append_record({"key": key, "answer": answer, **context}, self.path)


def write_judgements(judgements: list[Judgement], path: str | Path) -> Path:
    return write_records(judgements, path)


def read_judgements(path: str | Path) -> list[Judgement]:
    return read_records(path, Judgement, "judgement")
