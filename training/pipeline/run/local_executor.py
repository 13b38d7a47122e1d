"""The local executor of the sharded run: each pending shard through every stage in this process, shard after shard,
each shard written as soon as it is done."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from training.pipeline.run.carried import output_rows, run_stage_on_carried, stage_batch_size
from training.pipeline.run.recipe import RaySettings
from training.pipeline.run.shards import ShardPlan, read_shard_input, write_shard
from training.pipeline.stages import Stage


logger = logging.getLogger(__name__)


def compute_shards_locally(
    plan: ShardPlan, pending: Sequence[int], stages: Sequence[Stage], output_dir: Path, settings: RaySettings,
    batch_size: int, show_progress: bool = True,
) -> None:  # fmt: skip
    """Runs `stages` over the pending shards (their input files written) here and writes each shard when done."""
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
