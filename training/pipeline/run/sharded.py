"""The pipeline's one run: the row stages over the input in shards, each shard's output written once, atomically,
resumable, by one of two executors.

The input rows are split into shards as they stream by (`training.pipeline.run.planning`: each shard's rows go to
`shards/inputs/` and are read back only when the shard is computed); the shards not finished by an earlier run are
computed by an executor, which only decides where a shard's rows go through the stages: `local` runs them in this
process, shard after shard (`local_executor`); `ray` as Ray Data `map_batches` actor pools (`ray_executor`). Both run
the same `Stage` objects through the same row rule (`training.pipeline.run.carried`), so both write the same shards.

`shards/plan.json` records the shards' fingerprints and the stages with the settings that change what they write
(`Stage.output_settings`); a rerun with other input rows, another shard size, other stages or other settings is refused
rather than mixed into the finished shards.

Everything after the computation streams shard by shard (`training.pipeline.run.summary`): the summary's counts,
each stage's `finish` (given an iterator), and, when asked, `<stage>.jsonl` (each stage's view of the rows it saw).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from training.pipeline.run.carried import output_rows
from training.pipeline.run.local_executor import compute_shards_locally
from training.pipeline.run.planning import plan_rows
from training.pipeline.run.ray_executor import compute_on_ray
from training.pipeline.run.recipe import RaySettings
from training.pipeline.run.shards import (
    INPUTS_FOLDER,
    SHARDS_FOLDER,
    ShardPlan,
    check_plan,
    check_stages,
    pending_shards,
    read_shard_input,
    shard_input_path,
    write_shard,
    write_shard_input,
)
from training.pipeline.run.summary import RunSummary, reached_rows, summarize, write_stage_logs, write_summary
from training.pipeline.stages import Row, Stage


logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 16
Executor = Callable[..., None]
EXECUTORS: dict[str, Executor] = {"local": compute_shards_locally, "ray": compute_on_ray}


def stage_settings(stage: Stage) -> dict[str, Any]:
    """`stage.output_settings()` as JSON values: what `plan.json` records so a rerun with other settings is refused."""
    return json.loads(json.dumps(stage.output_settings(), sort_keys=True, default=str))


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


def _overrides_finish(stage: Stage) -> bool:
    return type(stage).finish is not Stage.finish


def run(
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
            `ShardPlan` (e.g. `planning.plan_shards`: one shard per downloaded img2dataset shard).
        settings: shard size, and for `ray` the cluster and the actors' resources, pool sizes and batch sizes.
        executor: "local" (this process) or "ray".
        stage_logs: the stages whose `<stage>.jsonl` to write.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; choose from {sorted(EXECUTORS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
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
        check_stages(output_dir, recorded_stages)
        plan = plan_rows(input_rows, output_dir, settings.shard_size)
    check_plan(plan, output_dir, recorded_stages)
    pending = pending_shards(plan, output_dir)
    finished_before = {spec.index for spec in plan.specs} - set(pending)
    logger.info("%d of %d shards to compute in %s (%s executor)", len(pending), len(plan.specs), output_dir, executor)
    ensure_shard_inputs(plan, pending, output_dir)
    if pending and stages:
        EXECUTORS[executor](plan, pending, stages, output_dir, settings, batch_size, show_progress)
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
