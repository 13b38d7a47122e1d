"""The Ray Data executor of the sharded run (`training.pipeline.run.sharded`): the stages as `map_batches` actor pools.

The shards not finished by an earlier run are read by Ray tasks from their input files in `shards/inputs/` (which the
planner wrote as the input streamed by; the driver hands Ray only their paths), so the driver never holds the input:
Ray's streaming executor reads a file only when the stages downstream have room for it. Before anything starts, the
stages' actor pools are checked against the cluster's CPUs and GPUs (`check_cluster_fits`): Ray would otherwise wait
without end for actors it cannot place. Each stage is a `map_batches` over an actor pool whose actors construct the
stage once (`StageActor`: the stage's own `setup`, i.e. its model, loads once per actor) with the recipe's
resources, pool size and batch size. Each actor applies the
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.pipeline.run.carried import output_rows, run_stage_on_carried, stage_batch_size
from training.pipeline.run.recipe import RaySettings
from training.pipeline.run.shards import (
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


def ensure_ray(settings: RaySettings, stages: Sequence[Stage] = ()) -> bool:
    """Connects to (or starts) Ray unless it is already up, and checks that the cluster can hold `stages`
    (`check_cluster_fits`); returns whether this call started Ray.

    Raises:
        ConnectionError: `settings.address` names no running cluster (the message says how to start one).
        ValueError: the stages ask for more CPUs or GPUs than the cluster has (Ray started here is shut down).
    """
    import ray

    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"address": settings.address, "include_dashboard": False}
        if settings.address is None:
            # a Ray started here on a busy machine: its node agent can take longer than Ray's default to register
            # (seen at load 12-15 on 2 cores), and the start then fails; an explicit setting of the variable wins
            os.environ.setdefault(AGENT_TIMEOUT_VARIABLE, AGENT_TIMEOUT_MS)
            options.update(num_cpus=settings.num_cpus, object_store_memory=settings.object_store_memory)
        try:
            ray.init(**{key: value for key, value in options.items() if value is not None}, log_to_driver=True)
        except ConnectionError as error:
            raise ConnectionError(no_cluster_message(settings.address, error)) from error
        started = True
    try:
        check_cluster_fits(stages, settings, ray.cluster_resources(), largest_node(ray.nodes()))
    except ValueError:
        if started:
            ray.shutdown()
        raise
    return started


def no_cluster_message(address: str | None, error: BaseException) -> str:
    """One line for a Ray address with no cluster behind it: joining needs a running cluster, a local run needs none."""
    # Ray's first sentence; its second advises flags of Ray's own CLI (`--address`), not this one's
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    reason = reason.split(". ")[0]
    return (
        f"no running Ray cluster at address {address!r} (--ray-address or the recipe's ray.address; Ray says: "
        f"{reason.rstrip('.')}). --ray-address joins a cluster that is already running: start it first with "
        "`ray start --head` (or give its address); to run on this machine without one, leave the address out and "
        "use --executor ray, which starts a local Ray for the run"
    )


def largest_node(nodes: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The most CPUs and GPUs any one live node of `ray.nodes()` has (an actor runs on one node)."""
    live = [node.get("Resources", {}) for node in nodes if node.get("Alive", True)]
    return {kind: max((resources.get(kind, 0.0) for resources in live), default=0.0) for kind in ("CPU", "GPU")}


def check_cluster_fits(
    stages: Sequence[Stage], settings: RaySettings, cluster: dict[str, float], node: dict[str, float]
) -> None:
    """Refuses a run whose actor pools cannot all be placed at once: Ray Data would start the actors that fit and
    wait without end for the others (seen: 4 stages of Ray's default 1 CPU each on 2 CPUs, silent after 500 s).

    Every stage holds `concurrency` actors of its `num_cpus` / `num_gpus` for the whole run, and one task of
    `input_num_cpus` must still find room to read a shard's input. Checked against `ray.cluster_resources()` (the
    cluster as it is now: an autoscaling cluster that has not grown yet is refused too) and each actor against the
    largest node (`node`).

    Raises:
        ValueError: one line naming each stage's request, the total, and what the cluster has.
    """
    actors = [(stage.name, settings.actor(stage.name)) for stage in stages]
    if not actors:
        return
    for kind, unit, attribute in (("CPU", "CPU", "num_cpus"), ("GPU", "GPU", "num_gpus")):
        asked = [(name, actor.concurrency, getattr(actor, attribute)) for name, actor in actors]
        total = sum(count * each for _, count, each in asked) + (settings.input_num_cpus if kind == "CPU" else 0.0)
        have = cluster.get(kind, 0.0)
        parts = ", ".join(f"{name} {count} x {each:g}" for name, count, each in asked if each)
        reading = f", reading inputs {settings.input_num_cpus:g}" if kind == "CPU" else ""
        if total > have + 1e-9:
            raise ValueError(
                f"the stages ask for {total:g} {unit}s at once ({parts}{reading}: actors x {unit}s each) but the Ray "
                f"cluster has {have:g}, so Ray would wait for the rest without end: lower ray.actors.<stage>."
                f"{attribute} (fractions such as 0.5 are allowed) or ray.actors.<stage>.concurrency in the recipe, or "
                "use a larger cluster"
            )
        too_large = [(name, each) for name, _, each in asked if each > node.get(kind, 0.0) + 1e-9]
        if too_large:
            name, each = too_large[0]
            raise ValueError(
                f"a {name} actor asks for {each:g} {unit}s but the largest node of the Ray cluster has "
                f"{node.get(kind, 0.0):g}, so it would never start: lower ray.actors.{name}.{attribute} in the recipe"
            )


def _map_stage(dataset: Any, stage: Stage, settings: RaySettings, default_batch_size: int) -> Any:
    import ray.data

    actor = settings.actor(stage.name)
    # only named parameters: `**ray_remote_args` (e.g. max_restarts) is deprecated in Ray 2.60 and gone in 2.64;
    # Ray Data's defaults restart a crashed actor and retry its task
    return dataset.map_batches(
        StageActor,
        fn_constructor_args=(stage,),
        batch_format="pyarrow",
        batch_size=stage_batch_size(stage, settings, default_batch_size),
        compute=ray.data.ActorPoolStrategy(size=actor.concurrency),
        num_cpus=actor.num_cpus,
        num_gpus=actor.num_gpus or None,
    )


def compute_on_ray(
    plan: ShardPlan, pending: list[int], stages: Sequence[Stage], output_dir: Path, settings: RaySettings,
    batch_size: int, show_progress: bool = True,
) -> None:  # fmt: skip
    """Runs `stages` over the pending shards (their input files written) on Ray and writes each shard as soon as all
    its rows are back."""
    started = ensure_ray(settings, stages)
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
