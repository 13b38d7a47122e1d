"""Where the CLI steps put their outputs inside one evaluation folder, so each step finds the previous one's."""

from __future__ import annotations

from pathlib import Path


class EvalLayout:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def cache(self, method: str) -> Path:
        return self.root / "embeddings" / method

    def captions(self) -> Path:
        return self.root / "captions.jsonl"

    def queries(self) -> Path:
        return self.root / "queries.json"

    def retrievals(self, method: str) -> Path:
        return self.root / "retrievals" / f"{method}.jsonl"

    def retrieval_files(self) -> list[Path]:
        return sorted((self.root / "retrievals").glob("*.jsonl"))

    def judge_answers(self, judge_name: str) -> Path:
        return self.root / "judgements" / judge_name / "answers.jsonl"

    def judgements(self, judge_name: str, method: str) -> Path:
        return self.root / "judgements" / judge_name / f"{method}.jsonl"

    def judgement_files(self) -> list[Path]:
        return sorted(path for path in (self.root / "judgements").glob("*/*.jsonl") if path.name != "answers.jsonl")

    def metrics(self, method: str) -> Path:
        return self.root / "metrics" / f"{method}.json"

    def metric_files(self) -> list[Path]:
        return sorted((self.root / "metrics").glob("*.json"))

    def report(self) -> Path:
        return self.root / "report"
