"""The pipeline's runner: one `run` entry point with a choice of executor: `local` here, `ray` the sharded run on Ray
Data (`training.pipeline.ray_executor.run_on_ray`), which writes the same `<stage>.jsonl` files and summary.

The local executor runs the stages one after another, each over every row its previous stage passed on (readable and
not dropped by a filter), in batches, with a progress bar per stage. Each output row is appended durably to
`<output>/<stage>.jsonl` (`training.store.RecordLog`) as its batch finishes, so an interrupted run loses at most the
batch in flight: a rerun with the same output folder reads what is done, computes only the missing rows, never
writes a row twice, and loads a stage's model only when that stage has work left. `<output>/summary.json` holds,
per stage, the rows in, the rows computed now and earlier, the rows kept (passed on) and the failures per reason.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.image_ids import require_image_hash
from training.pipeline.stages import Row, Stage, passes_on
from training.store import RecordLog, atomic_write


logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
SUMMARY_FILE = "summary.json"


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


def stage_log(output_dir: str | Path, stage: Stage) -> RecordLog:
    return RecordLog(Path(output_dir) / f"{stage.name}.jsonl", what=f"{stage.name} row", required=("image_hash",))


def read_stage_rows(output_dir: str | Path, stage_name: str) -> list[Row]:
    """The rows a stage has written so far (in the order written)."""
    log = RecordLog(Path(output_dir) / f"{stage_name}.jsonl", what=f"{stage_name} row", required=("image_hash",))
    return [record for _, record in log.records()]


def unique_rows(rows: Iterable[Row]) -> tuple[list[Row], int]:
    """The rows with a valid, first-seen `image_hash`, and how many repeats were left out."""
    kept: dict[str, Row] = {}
    repeats = 0
    for position, row in enumerate(rows):
        image_hash = require_image_hash(row.get("image_hash"), f"input row {position}: image_hash")
        if image_hash in kept:
            repeats += 1
            continue
        kept[image_hash] = row
    return list(kept.values()), repeats


def _batches(rows: Sequence[Row], size: int) -> Iterable[list[Row]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


def run_stage(
    stage: Stage, rows: Sequence[Row], output_dir: str | Path, batch_size: int, show_progress: bool = True
) -> tuple[list[Row], StageSummary]:
    """Runs one stage over `rows` (unique hashes), resuming from its output file; returns its output rows in input
    order and its counts. Rows that arrive with an `error` (an input the reader could not use) are recorded as they
    are, without calling the stage."""
    log = stage_log(output_dir, stage)
    done = {record["image_hash"]: record for _, record in log.records()}
    wanted = {row["image_hash"] for row in rows}
    stale = sum(image_hash not in wanted for image_hash in done)
    if stale:
        logger.warning("%s: %d rows of %s are not in this run's input; they stay there", stage.name, stale, log.path)
    pending = [row for row in rows if row["image_hash"] not in done]
    summary = StageSummary(
        stage.name, rows_in=len(rows), computed_now=len(pending), done_before=len(rows) - len(pending)
    )
    if summary.done_before:
        logger.info("%s: %d of %d rows already done in %s", stage.name, summary.done_before, len(rows), log.path)
    size = stage.batch_size or batch_size
    with tqdm(total=len(pending), desc=stage.name, unit="row", disable=not show_progress or not pending) as bar:
        for batch in _batches(pending, size):
            given_up = [row for row in batch if "error" in row]
            todo = [row for row in batch if "error" not in row]
            if todo:
                stage.ensure_setup()  # only a stage with work left loads its model
                processed = stage.process(todo)
                _check_same_rows(stage, todo, processed)
            else:
                processed = []
            by_hash = {row["image_hash"]: row for row in [*given_up, *processed]}
            for row in batch:
                output = by_hash[row["image_hash"]]
                log.append(output)
                done[row["image_hash"]] = output
            bar.update(len(batch))
    outputs = [done[row["image_hash"]] for row in rows]
    failed = Counter(row.get("error_kind", "error") for row in outputs if "error" in row)
    summary.failed = dict(sorted(failed.items()))
    summary.kept = sum(passes_on(row) and stage.keeps(row) for row in outputs)
    summary.dropped = len(outputs) - summary.kept - sum(failed.values())
    return outputs, summary


def _check_same_rows(stage: Stage, given: list[Row], returned: list[Row]) -> None:
    if [row.get("image_hash") for row in returned] != [row["image_hash"] for row in given]:
        raise RuntimeError(
            f"stage {stage.name} must return the rows it was given, in order, with the same image_hash "
            f"({len(given)} given, {len(returned)} returned)"
        )


def run_stages(
    input_rows: Iterable[Row],
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = True,
) -> RunSummary:
    """The local executor: every stage in turn over what the previous one passed on; see the module docstring."""
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique (each has its own output file), got {names}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rows, repeats = unique_rows(input_rows)
    if repeats:
        logger.warning("%d input rows repeat an earlier row's image_hash and are left out", repeats)
    summary = RunSummary(rows_in=len(rows), duplicate_inputs=repeats, stages=[])
    for stage in stages:
        outputs, stage_summary = run_stage(stage, rows, output_dir, batch_size, show_progress)
        stage.finish(outputs, str(output_dir))
        summary.stages.append(stage_summary)
        logger.info(
            "%s: %d in, %d kept, %d dropped, failed %s", stage.name, stage_summary.rows_in, stage_summary.kept,
            stage_summary.dropped, stage_summary.failed or "none",
        )  # fmt: skip
        rows = [row for row in outputs if passes_on(row) and stage.keeps(row)]
    write_summary(summary, output_dir)
    return summary


def write_summary(summary: RunSummary, output_dir: str | Path) -> Path:
    path = Path(output_dir) / SUMMARY_FILE
    atomic_write(path, (json.dumps(asdict(summary), indent=2) + "\n").encode("utf-8"))
    return path


def run_stages_on_ray(
    input_rows: Iterable[Row],
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    show_progress: bool = True,
    **ray_options: Any,
) -> RunSummary:
    """The Ray executor with the local runner's outputs: `<stage>.jsonl` for every stage and `summary.json` (beside
    the parquet shards it resumes from). `ray_options`: `settings` (`scale_recipe.RaySettings`: cluster address,
    shard size, actors)."""
    from training.pipeline.ray_executor import run_on_ray

    return run_on_ray(
        input_rows, stages, output_dir, batch_size, show_progress=show_progress,
        stage_logs=[stage.name for stage in stages], **ray_options,
    )  # fmt: skip


Executor = Callable[..., RunSummary]
EXECUTORS: dict[str, Executor] = {"local": run_stages, "ray": run_stages_on_ray}


def run(
    input_rows: Iterable[Row],
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    executor: str = "local",
    **executor_options: Any,
) -> RunSummary:
    """Runs `stages` over `input_rows` into `output_dir` with the chosen executor (one of `EXECUTORS`)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {sorted(EXECUTORS)}")
    return EXECUTORS[executor](input_rows, stages, output_dir, batch_size=batch_size, **executor_options)
