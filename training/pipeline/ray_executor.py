"""The Ray Data executor: the pipeline's stages as `map_batches` actor pools, written shard by shard, resumable.

The input rows are split into shards (`training.pipeline.shards`). The shards not finished by an earlier run become
one Ray dataset (one block per shard); each stage is a `map_batches` over an actor pool whose actors construct the
stage once (`StageActor`: the stage's own `setup`, i.e. its model, loads once per actor) with the recipe's
resources, pool size and batch size. Every row flows through every stage: a row that failed or that a filter
dropped is passed through untouched (no model time is spent on it; its score stays), so a shard's output has exactly
its input rows. The driver streams the results, and as soon as all rows of a shard are back it writes that shard
(temporary name, then rename). A worker that crashes is restarted by Ray and its task retried; a killed driver
loses only unwritten shards, which a rerun recomputes while finished shards are left untouched.

At the end the driver reads the shards back once: the stages' `finish` (e.g. the hand-off's captions jsonl), the
FAISS index (`index_stage`) and `summary.json` (per stage: rows in, computed now / done before, kept, dropped,
failed per reason).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.pipeline.runner import RunSummary, StageSummary, unique_rows, write_summary
from training.pipeline.scale_recipe import RaySettings
from training.pipeline.shards import (
    PASSES_COLUMN,
    POSITION_COLUMN,
    SHARD_COLUMN,
    ShardPlan,
    check_plan,
    is_finished,
    read_all_shards,
    rows_to_table,
    table_to_rows,
    write_shard,
)
from training.pipeline.stages import Row, Stage, passes_on


logger = logging.getLogger(__name__)

INTERNAL = (SHARD_COLUMN, POSITION_COLUMN, PASSES_COLUMN)
INPUT_STAGE = "input"  # `error_stage` of rows that arrived failed (unreadable input file, failed download)


class StageActor:
    """A `map_batches` callable class around one `Stage`: Ray builds it once per actor, so the stage's model loads
    once per actor; each call runs the stage on the rows still passing (`_passes`) and returns every row."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        cache_file = getattr(stage, "cache_file", None)
        if cache_file:
            # one append-only cache per actor: actors on many machines never append to one file (the shards, not
            # this cache, are what a rerun resumes from)
            path = Path(cache_file)
            stage.cache_file = str(path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}{path.suffix}"))

    def __call__(self, batch: Any) -> Any:
        rows = table_to_rows(batch)
        todo = [position for position, row in enumerate(rows) if row.get(PASSES_COLUMN)]
        if todo:
            self.stage.ensure_setup()
            given = [{key: value for key, value in rows[p].items() if key not in INTERNAL} for p in todo]
            processed = self.stage.process(given)
            if [row.get("image_hash") for row in processed] != [row["image_hash"] for row in given]:
                raise RuntimeError(f"stage {self.stage.name} must return the rows it was given, in order")
            for position, before, after in zip(todo, given, processed, strict=True):
                after = dict(after)
                if "error" in after and "error" not in before:
                    after["error_stage"] = self.stage.name
                after.update({key: rows[position][key] for key in INTERNAL if key in rows[position]})
                after[PASSES_COLUMN] = passes_on(after) and self.stage.keeps(after)
                rows[position] = after
        return rows_to_table(rows)


def ensure_ray(settings: RaySettings) -> bool:
    """Connects to (or starts) Ray unless it is already up; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"address": settings.address, "include_dashboard": False}
    if settings.address is None:
        options.update(num_cpus=settings.num_cpus, object_store_memory=settings.object_store_memory)
    ray.init(**{key: value for key, value in options.items() if value is not None}, log_to_driver=True)
    return True


def _carried_tables(plan: ShardPlan, pending: list[int]) -> list[Any]:
    tables = []
    for index in pending:
        rows = [
            {
                **row,
                SHARD_COLUMN: index,
                POSITION_COLUMN: position,
                PASSES_COLUMN: "error" not in row,
                **({"error_stage": row.get("error_stage", INPUT_STAGE)} if "error" in row else {}),
            }
            for position, row in enumerate(plan.rows[index])
        ]
        tables.append(rows_to_table(rows))
    return tables


def _map_stage(dataset: Any, stage: Stage, settings: RaySettings, default_batch_size: int) -> Any:
    import ray.data

    actor = settings.actor(stage.name)
    return dataset.map_batches(
        StageActor,
        fn_constructor_args=(stage,),
        batch_format="pyarrow",
        batch_size=actor.batch_size or stage.batch_size or default_batch_size,
        compute=ray.data.ActorPoolStrategy(size=actor.concurrency),
        num_cpus=actor.num_cpus,
        num_gpus=actor.num_gpus or None,
        max_restarts=actor.max_restarts,
        max_task_retries=-1,
    )


def compute_shards(
    plan: ShardPlan, pending: list[int], stages: Sequence[Stage], output_dir: Path, settings: RaySettings,
    batch_size: int,
) -> None:  # fmt: skip
    """Runs `stages` over the pending shards on Ray and writes each shard as soon as all its rows are back."""
    import ray.data

    dataset = ray.data.from_arrow(_carried_tables(plan, pending))
    for stage in stages:
        dataset = _map_stage(dataset, stage, settings, batch_size)
    waiting: dict[int, list[Row]] = defaultdict(list)
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in table_to_rows(batch):
            waiting[row[SHARD_COLUMN]].append(row)
        for index in [index for index, rows in waiting.items() if len(rows) == plan.specs[index].count]:
            rows = sorted(waiting.pop(index), key=lambda row: row[POSITION_COLUMN])
            output = [{key: value for key, value in row.items() if key not in INTERNAL} for row in rows]
            path = write_shard(output_dir, plan.specs[index], output)
            logger.info("shard %d: %d rows written to %s", index, len(output), path)
    if waiting:
        raise RuntimeError(f"shards {sorted(waiting)} came back incomplete from Ray")


def summarize(
    rows: Sequence[Row], stages: Sequence[Stage], done_before_hashes: set[str], duplicates: int
) -> tuple[RunSummary, dict[str, list[Row]]]:
    """The run's counts per stage, walking each output row through the stages it reached, and the rows each stage
    output (for its `finish`). Rows that arrived failed are counted as failures of the first stage, as the local
    runner does."""
    summaries = {stage.name: StageSummary(stage.name) for stage in stages}
    failures: dict[str, Counter] = {stage.name: Counter() for stage in stages}
    reached: dict[str, list[Row]] = {stage.name: [] for stage in stages}
    for row in rows:
        failed_at = row.get("error_stage")
        if failed_at not in summaries and stages:  # failed before the stages: input or download
            failed_at = stages[0].name
        for stage in stages:
            summary = summaries[stage.name]
            summary.rows_in += 1
            if row["image_hash"] in done_before_hashes:
                summary.done_before += 1
            else:
                summary.computed_now += 1
            reached[stage.name].append(row)
            if "error" in row and failed_at == stage.name:
                failures[stage.name][row.get("error_kind", "error")] += 1
                break
            if not stage.keeps(row):
                summary.dropped += 1
                break
            summary.kept += 1
    for name, counter in failures.items():
        summaries[name].failed = dict(sorted(counter.items()))
    return RunSummary(len(rows), duplicates, [summaries[stage.name] for stage in stages]), reached


def run_on_ray(
    input_rows: Sequence[Row] | ShardPlan,
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = 16,
    settings: RaySettings | None = None,
    show_progress: bool = True,
) -> RunSummary:
    """The Ray executor (see the module docstring); `input_rows` may come already sharded (a `ShardPlan`, e.g. one
    shard per downloaded img2dataset shard). Returns the same `RunSummary` as the local runner."""
    settings = settings or RaySettings()
    names = [stage.name for stage in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique, got {names}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    duplicates = 0
    if isinstance(input_rows, ShardPlan):
        plan = input_rows
    else:
        rows, duplicates = unique_rows(input_rows)
        plan = ShardPlan.from_rows(rows, settings.shard_size)
    check_plan(plan, output_dir)
    pending = [spec.index for spec in plan.specs if not is_finished(output_dir, spec)]
    done_before = {
        row["image_hash"] for spec in plan.specs if spec.index not in pending for row in plan.rows[spec.index]
    }
    logger.info("%d of %d shards to compute in %s", len(pending), len(plan.specs), output_dir)
    if pending and stages:
        started = ensure_ray(settings)
        try:
            if not show_progress:
                import ray.data

                ray.data.DataContext.get_current().enable_progress_bars = False
            compute_shards(plan, pending, stages, output_dir, settings, batch_size)
        finally:
            if started:
                import ray

                ray.shutdown()
    elif pending:
        for index in pending:
            write_shard(output_dir, plan.specs[index], plan.rows[index])
    output_rows = read_all_shards(output_dir, plan)
    summary, reached = summarize(output_rows, stages, done_before, duplicates)
    for stage in stages:
        stage.finish(reached[stage.name], str(output_dir))
    write_summary(summary, output_dir)
    return summary
