"""The Ray Data executor of the sharded run (`training.pipeline.sharded_run`): the stages as `map_batches` actor pools.

The shards not finished by an earlier run are read by Ray tasks from their input files in `shards/inputs/` (which the
planner wrote as the input streamed by; the driver hands Ray only their paths), so the driver never holds the input:
Ray's streaming executor reads a file only when the stages downstream have room for it. Each stage is a `map_batches`
over an actor pool whose actors construct the stage once (`StageActor`: the stage's own `setup`, i.e.
its model, loads once per actor) with the recipe's resources, pool size and batch size. Each actor applies the
sharded run's row rule (`run_stage_on_carried`), the same as the local executor. The driver streams the results, and
as soon as all rows of a shard are back it writes that shard (temporary name, then rename): it holds only the rows
of shards still in flight. A worker that crashes is restarted by Ray and its task retried; a killed driver loses
only unwritten shards, which a rerun recomputes while finished shards are left untouched.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.pipeline.runner import DEFAULT_BATCH_SIZE, RunSummary
from training.pipeline.scale_recipe import RaySettings
from training.pipeline.sharded_run import output_rows, run_sharded, run_stage_on_carried, stage_batch_size
from training.pipeline.shards import (
    SHARD_COLUMN,
    ShardPlan,
    rows_to_table,
    shard_input_path,
    table_to_rows,
    write_shard,
)
from training.pipeline.stages import Row, Stage


logger = logging.getLogger(__name__)

AGENT_TIMEOUT_VARIABLE, AGENT_TIMEOUT_MS = "RAY_agent_register_timeout_ms", "180000"


class StageActor:
    """A `map_batches` callable class around one `Stage`: Ray builds it once per actor, so the stage's model loads
    once per actor; each call runs the stage on the rows still passing and returns every row."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        cache_file = getattr(stage, "cache_file", None)
        if cache_file:
            # one append-only cache per actor: actors on many machines never append to one file (the shards, not
            # this cache, are what a rerun resumes from)
            path = Path(cache_file)
            stage.cache_file = str(path.with_name(f"{path.stem}.{uuid.uuid4().hex[:12]}{path.suffix}"))

    def __call__(self, batch: Any) -> Any:
        return rows_to_table(run_stage_on_carried(self.stage, table_to_rows(batch)))


def read_shard_inputs(batch: Any) -> Any:
    """The rows of the shard input files named in `batch["path"]` (a `map_batches` function)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(path).replace_schema_metadata(None) for path in batch["path"].to_pylist()]
    return pa.concat_tables(tables)


def ensure_ray(settings: RaySettings) -> bool:
    """Connects to (or starts) Ray unless it is already up; returns whether this call started it."""
    import ray

    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"address": settings.address, "include_dashboard": False}
    if settings.address is None:
        # a Ray started here on a busy machine: its node agent can take longer than Ray's default to register (seen at
        # load 12-15 on 2 cores), and the start then fails; an explicit setting of the variable wins
        os.environ.setdefault(AGENT_TIMEOUT_VARIABLE, AGENT_TIMEOUT_MS)
        options.update(num_cpus=settings.num_cpus, object_store_memory=settings.object_store_memory)
    ray.init(**{key: value for key, value in options.items() if value is not None}, log_to_driver=True)
    return True


def _map_stage(dataset: Any, stage: Stage, settings: RaySettings, default_batch_size: int) -> Any:
    import ray.data

    actor = settings.actor(stage.name)
    return dataset.map_batches(
        StageActor,
        fn_constructor_args=(stage,),
        batch_format="pyarrow",
        batch_size=stage_batch_size(stage, settings, default_batch_size),
        compute=ray.data.ActorPoolStrategy(size=actor.concurrency),
        num_cpus=actor.num_cpus,
        num_gpus=actor.num_gpus or None,
        max_restarts=actor.max_restarts,
        max_task_retries=-1,
    )


def compute_on_ray(
    plan: ShardPlan, pending: list[int], stages: Sequence[Stage], output_dir: Path, settings: RaySettings,
    batch_size: int, show_progress: bool = True,
) -> None:  # fmt: skip
    """Runs `stages` over the pending shards (their input files written) on Ray and writes each shard as soon as all
    its rows are back."""
    started = ensure_ray(settings)
    try:
        import ray.data

        if not show_progress:
            ray.data.DataContext.get_current().enable_progress_bars = False
        paths = [{"path": str(shard_input_path(output_dir, index))} for index in pending]
        # one block per pending shard; each is read by a task of `input_num_cpus` when downstream has room (not
        # `read_parquet`, whose file-listing step asks for a whole CPU that the stage actors may all hold)
        dataset = ray.data.from_items(paths, override_num_blocks=len(paths)).map_batches(
            read_shard_inputs, batch_size=1, batch_format="pyarrow", num_cpus=settings.input_num_cpus
        )
        for stage in stages:
            dataset = _map_stage(dataset, stage, settings, batch_size)
        waiting: dict[int, list[Row]] = defaultdict(list)
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in table_to_rows(batch):
                waiting[row[SHARD_COLUMN]].append(row)
            for index in [index for index, rows in waiting.items() if len(rows) == plan.specs[index].count]:
                path = write_shard(output_dir, plan.specs[index], output_rows(waiting.pop(index)))
                logger.info("shard %d: %d rows written to %s", index, plan.specs[index].count, path)
        if waiting:
            raise RuntimeError(f"shards {sorted(waiting)} came back incomplete from Ray")
    finally:
        if started:
            import ray

            ray.shutdown()


def run_on_ray(
    input_rows: Iterable[Row] | ShardPlan,
    stages: Sequence[Stage],
    output_dir: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    settings: RaySettings | None = None,
    show_progress: bool = True,
    stage_logs: Iterable[str] = (),
) -> RunSummary:
    """The sharded run on Ray (`run_sharded` with `executor="ray"`); returns the same `RunSummary` as the local
    runner. `runner.EXECUTORS["ray"]` calls it with every stage's `<stage>.jsonl`, so `filter score` and `caption
    generate` write the same files on either executor."""
    return run_sharded(
        input_rows, stages, output_dir, batch_size, settings, executor="ray", show_progress=show_progress,
        stage_logs=stage_logs,
    )  # fmt: skip
