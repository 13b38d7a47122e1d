"""What a sharded run reports: `summary.json` (per stage: rows in, computed now / done before, kept, dropped, failed
per reason) and `<stage>.jsonl` (each stage's view of the rows it saw), both read from the output shards.

Everything streams shard by shard, so the driver never holds more than one shard's output rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from training.pipeline.run.carried import ERROR_FIELDS
from training.pipeline.run.shards import ROW_SCHEMA, ShardPlan, read_shard
from training.pipeline.stages import Row, Stage
from training.store import RecordLog, atomic_write


SUMMARY_FILE = "summary.json"
WITHOUT_EMBEDDINGS = tuple(name for name in ROW_SCHEMA.names if name != "embedding")  # what the counts read


@dataclass
class StageSummary:
    """Counts of one stage: `rows_in` = computed_now + done_before; `kept` are passed on, `dropped` were judged and
    left out (`Stage.keeps`: a filter's `kept: false`), `failed` counts unreadable images by reason."""

    stage: str
    rows_in: int = 0
    computed_now: int = 0
    done_before: int = 0
    kept: int = 0
    dropped: int = 0
    failed: dict[str, int] = field(default_factory=dict)


@dataclass
class RunSummary:
    """`index`: the index stage's report when it ran (factory, vectors, recall@k against exact search)."""

    rows_in: int
    duplicate_inputs: int
    stages: list[StageSummary]
    index: dict[str, Any] | None = None

    def stage(self, name: str) -> StageSummary:
        for summary in self.stages:
            if summary.stage == name:
                return summary
        raise KeyError(f"no stage {name!r} in this run; stages: {[summary.stage for summary in self.stages]}")


def write_summary(summary: RunSummary, output_dir: str | Path) -> Path:
    path = Path(output_dir) / SUMMARY_FILE
    atomic_write(path, (json.dumps(asdict(summary), indent=2) + "\n").encode("utf-8"))
    return path


def read_stage_rows(output_dir: str | Path, stage_name: str) -> list[Row]:
    """The rows of a stage's `<stage>.jsonl` (in input order)."""
    log = RecordLog(Path(output_dir) / f"{stage_name}.jsonl", what=f"{stage_name} row", required=("image_hash",))
    return [record for _, record in log.records()]


def iter_shard_rows(output_dir: str | Path, plan: ShardPlan, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """Every output row, shard by shard, in input order; only one shard is read into memory at a time."""
    for spec in plan.specs:
        yield from read_shard(output_dir, spec.index, columns)


def _failed_at(row: Row, stages: Sequence[Stage]) -> str | None:
    """The stage a failed row counts against: the one that failed it, or the first (input and download failures)."""
    if "error" not in row or not stages:
        return None
    failed_at = row.get("error_stage")
    return failed_at if any(stage.name == failed_at for stage in stages) else stages[0].name


def stages_reached(row: Row, stages: Sequence[Stage]) -> int:
    """How many of `stages` saw the row: all of them, or up to the one that failed or dropped it."""
    failed_at = _failed_at(row, stages)
    for position, stage in enumerate(stages):
        if stage.name == failed_at or (failed_at is None and not stage.keeps(row)):
            return position + 1
    return len(stages)


def summarize(
    output_dir: Path, plan: ShardPlan, stages: Sequence[Stage], finished_before: set[int], duplicates: int
) -> RunSummary:
    """The run's counts per stage, walking each output row (streamed shard by shard) through the stages it reached.
    Rows that arrived failed count as failures of the first stage."""
    summaries = [StageSummary(stage.name) for stage in stages]
    failures = [Counter() for _ in stages]
    rows_in = 0
    for spec in plan.specs:
        done_before = spec.index in finished_before
        for row in read_shard(output_dir, spec.index, columns=WITHOUT_EMBEDDINGS):
            rows_in += 1
            reached = stages_reached(row, stages)
            for position, (stage, summary) in enumerate(zip(stages[:reached], summaries, strict=False)):
                summary.rows_in += 1
                summary.done_before += done_before
                summary.computed_now += not done_before
                if position == reached - 1 and _failed_at(row, stages) == stage.name:
                    failures[position][row.get("error_kind", "error")] += 1
                elif stage.keeps(row):
                    summary.kept += 1
                else:
                    summary.dropped += 1
    for summary, counter in zip(summaries, failures, strict=True):
        summary.failed = dict(sorted(counter.items()))
    return RunSummary(rows_in, duplicates, summaries)


def reached_rows(output_dir: Path, plan: ShardPlan, stages: Sequence[Stage], position: int) -> Iterator[Row]:
    """The output rows that stage `stages[position]` saw, streamed in input order."""
    for row in iter_shard_rows(output_dir, plan):
        if stages_reached(row, stages) > position:
            yield row


def stage_view(row: Row, stages: Sequence[Stage], position: int) -> Row:
    """The row as stage `stages[position]` output it: without the fields of later stages (and their errors), and
    without `error_stage`."""
    later = {name for stage in stages[position + 1 :] for name in stage.output_fields}
    if _failed_at(row, stages) in {stage.name for stage in stages[position + 1 :]}:
        later.update(ERROR_FIELDS)
    return {key: value for key, value in row.items() if key not in later and key != "error_stage"}


def write_stage_logs(output_dir: Path, plan: ShardPlan, stages: Sequence[Stage], names: Iterable[str]) -> None:
    """`<stage>.jsonl` for each stage in `names`: the rows it saw as it output them, in input order, streamed from
    the shards into one atomic write per file."""
    wanted = set(names)
    for position, stage in enumerate(stages):
        if stage.name not in wanted:
            continue

        def write(temporary: Path, position: int = position) -> None:
            with temporary.open("w", encoding="utf-8") as out:
                for row in reached_rows(output_dir, plan, stages, position):
                    out.write(json.dumps(stage_view(row, stages, position), ensure_ascii=False) + "\n")

        atomic_write(output_dir / f"{stage.name}.jsonl", write)
