"""Judge answers on disk (JSON lines), keyed by judge, prompt version and image pair: a rerun asks only new pairs."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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
            with self.path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        record = json.loads(line)
                        self.answers[record["key"]] = record["answer"]
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise ValueError(f"{self.path}, line {number}: not a judge answer ({error})") from error

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, answer: str, **context: Any) -> None:
        self.answers[key] = answer
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"key": key, "answer": answer, **context}) + "\n")


def write_judgements(judgements: list[Judgement], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for judgement in judgements:
            out.write(json.dumps(asdict(judgement)) + "\n")
    return path


def read_judgements(path: str | Path) -> list[Judgement]:
    judgements = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            try:
                judgements.append(Judgement(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                raise ValueError(f"{path}, line {number}: not a judgement record ({error})") from error
    return judgements
