"""The sharded run: the row stages over the input in shards, each shard's output written once, atomically, resumable.

The input rows are split into shards as they stream by (`training.pipeline.shard_planning`: each shard's rows go to
`shards/inputs/` and are read back only when the shard is computed); the shards not finished by an earlier run are
computed by an executor, which only decides where a shard's rows go through the stages: `local` runs them in this
process, shard after shard; `ray` as Ray Data `map_batches` actor pools (`training.pipeline.ray_executor`). Both run
the same `Stage` objects through the same row rule (`run_stage_on_carried`): every row flows through every stage, a
row that failed or that a filter dropped passes untouched (no model time is spent on it; its score stays), so a
shard's output has exactly its input rows, in input order, and both executors write the same shards.

`shards/plan.json` records the shards' fingerprints and the stages with the settings that change what they write
(`Stage.output_settings`); a rerun with other input rows, another shard size, other stages or other settings is refused
rather than mixed into the finished shards.

Everything after the computation streams shard by shard, so the driver never holds more than one shard's output
rows: the summary's counts (per stage: rows in, computed now / done before, kept, dropped, failed per reason), each
stage's `finish` (given an iterator), and, when asked, `<stage>.jsonl` (each stage's view of the rows it saw, the
local runner's per-stage files).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from training.pipeline.runner import DEFAULT_BATCH_SIZE, RunSummary, StageSummary, write_summary
from training.pipeline.scale_recipe import RaySettings
from training.pipeline.shards import (
    INPUTS_FOLDER,
    PASSES_COLUMN,
    POSITION_COLUMN,
    ROW_SCHEMA,
    SHARD_COLUMN,
    SHARDS_FOLDER,
    ShardPlan,
    check_plan,
    check_stages,
    pending_shards,
    read_shard,
    read_shard_input,
    shard_input_path,
    write_shard,
    write_shard_input,
)
from training.pipeline.stages import Row, Stage, passes_on
from training.store import atomic_write


logger = logging.getLogger(__name__)

SHARD_EXECUTORS = ("local", "ray")
INTERNAL = (SHARD_COLUMN, POSITION_COLUMN, PASSES_COLUMN)
INPUT_STAGE = "input"  # `error_stage` of rows that arrived failed (unreadable input file, failed download)
ERROR_FIELDS = ("error", "error_kind", "error_stage")
WITHOUT_EMBEDDINGS = tuple(name for name in ROW_SCHEMA.names if name != "embedding")  # what the counts read


def stage_settings(stage: Stage) -> dict[str, Any]:
    """`stage.output_settings()` as JSON values: what `plan.json` records so a rerun with other settings is refused."""
    return json.loads(json.dumps(stage.output_settings(), sort_keys=True, default=str))


def start_carrying(row: Row) -> Row:
    """A shard input row (with its shard and position) as the first stage takes it: whether it passes (a row that
    arrived failed does not, and keeps which step failed it)."""
    if PASSES_COLUMN in row:
        return row
    failed = {"error_stage": row.get("error_stage", INPUT_STAGE)} if "error" in row else {}
    return {**row, PASSES_COLUMN: "error" not in row, **failed}


def ensure_shard_inputs(plan: ShardPlan, pending: Sequence[int], output_dir: Path) -> None:
    """Writes the input file of each pending shard of a plan held in memory (a streamed plan wrote them already)."""
    if plan.rows is not None:
        for index in pending:
            write_shard_input(output_dir, plan.specs[index], plan.rows[index])


def remove_shard_inputs(plan: ShardPlan, output_dir: Path) -> None:
    """Deletes the shard input files once every shard is finished (a rerun plans again and rewrites what it needs)."""
    for spec in plan.specs:
        shard_input_path(output_dir, spec.index).unlink(missing_ok=True)
    folder = output_dir / SHARDS_FOLDER / INPUTS_FOLDER
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def run_stage_on_carried(stage: Stage, rows: list[Row]) -> list[Row]:
    """One stage over a batch of carried rows (or shard input rows, which start being carried here): the rows still
    passing go through `stage.process`, every row comes back (in order) with its carried columns; a new error names
    the stage in `error_stage`."""
    rows = [start_carrying(row) for row in rows]
    todo = [position for position, row in enumerate(rows) if row.get(PASSES_COLUMN)]
    if not todo:
        return rows
    stage.ensure_setup()
    given = [{key: value for key, value in rows[p].items() if key not in INTERNAL} for p in todo]
    processed = stage.process(given)
    if [row.get("image_hash") for row in processed] != [row["image_hash"] for row in given]:
        raise RuntimeError(f"stage {stage.name} must return the rows it was given, in order")
    for position, before, after in zip(todo, given, processed, strict=True):
        after = dict(after)
        if "error" in after and "error" not in before:
            after["error_stage"] = stage.name
        after.update({key: rows[position][key] for key in INTERNAL if key in rows[position]})
        after[PASSES_COLUMN] = passes_on(after) and stage.keeps(after)
        rows[position] = after
    return rows


def output_rows(carried: Iterable[Row]) -> list[Row]:
    """Carried rows as a shard's output: in input order, without the carried columns."""
    ordered = sorted(carried, key=lambda row: row[POSITION_COLUMN])
    return [{key: value for key, value in row.items() if key not in INTERNAL} for row in ordered]


def stage_batch_size(stage: Stage, settings: RaySettings, default: int) -> int:
    """Rows per stage call: the recipe's `ray.actors.<stage>.batch_size`, else the stage's own, else the run's."""
    return settings.actor(stage.name).batch_size or stage.batch_size or default


def compute_shards_locally(
    plan: ShardPlan, pending: Sequence[int], stages: Sequence[Stage], output_dir: Path, settings: RaySettings,
    batch_size: int, show_progress: bool = True,
) -> None:  # fmt: skip
    """The local executor: each pending shard through every stage in this process, written when done."""
    total = sum(plan.specs[index].count for index in pending)
    with tqdm(total=total, desc="shards", unit="row", disable=not show_progress) as bar:
        for index in pending:
            rows = read_shard_input(output_dir, plan.specs[index])
            for stage in stages:
                size = stage_batch_size(stage, settings, batch_size)
                rows = [
                    row
                    for start in range(0, len(rows), size)
                    for row in run_stage_on_carried(stage, rows[start : start + size])
                ]
            path = write_shard(output_dir, plan.specs[index], output_rows(rows))
            logger.info("shard %d: %d rows written to %s", index, len(rows), path)
            bar.update(len(rows))


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
    Rows that arrived failed count as failures of the first stage, as the local runner counts them."""
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
    without `error_stage` (the local runner's per-stage files never had it)."""
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


def _overrides_finish(stage: Stage) -> bool:
    return type(stage).finish is not Stage.finish


def run_sharded(
    input_rows: Iterable[Row] | ShardPlan,
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    settings: RaySettings | None = None,
    executor: str = "local",
    show_progress: bool = True,
    stage_logs: Iterable[str] = (),
) -> RunSummary:
    """Runs `stages` over the shards not finished yet (see the module docstring) and writes the summary.

    Args:
        input_rows: rows (repeated image hashes are left out; streamed into shards, never held whole), or a
            `ShardPlan` (e.g. `shard_planning.plan_shards`: one shard per downloaded img2dataset shard).
        settings: shard size, and for `ray` the cluster and the actors' resources, pool sizes and batch sizes.
        executor: "local" (this process) or "ray".
        stage_logs: the stages whose `<stage>.jsonl` to write (the local runner's per-stage files).
    """
    if executor not in SHARD_EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {SHARD_EXECUTORS}")
    settings = settings or RaySettings()
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    recorded_stages = {stage.name: stage_settings(stage) for stage in stages}
    if isinstance(input_rows, ShardPlan):
        plan = input_rows
    else:
        from training.pipeline.shard_planning import plan_rows

        check_stages(output_dir, recorded_stages)
        plan = plan_rows(input_rows, output_dir, settings.shard_size)
    check_plan(plan, output_dir, recorded_stages)
    pending = pending_shards(plan, output_dir)
    finished_before = {spec.index for spec in plan.specs} - set(pending)
    logger.info("%d of %d shards to compute in %s (%s executor)", len(pending), len(plan.specs), output_dir, executor)
    ensure_shard_inputs(plan, pending, output_dir)
    if pending and stages and executor == "ray":
        from training.pipeline.ray_executor import compute_on_ray

        compute_on_ray(plan, pending, stages, output_dir, settings, batch_size, show_progress)
    elif pending and stages:
        compute_shards_locally(plan, pending, stages, output_dir, settings, batch_size, show_progress)
    else:
        for index in pending:
            write_shard(output_dir, plan.specs[index], output_rows(read_shard_input(output_dir, plan.specs[index])))
    remove_shard_inputs(plan, output_dir)
    summary = summarize(output_dir, plan, stages, finished_before, plan.duplicates)
    for position, stage in enumerate(stages):
        if _overrides_finish(stage):
            stage.finish(reached_rows(output_dir, plan, stages, position), str(output_dir))
    write_stage_logs(output_dir, plan, stages, stage_logs)
    write_summary(summary, output_dir)
    return summary
