"""The row rule both executors of the sharded run apply: every row flows through every stage, carried with its shard,
position and whether it still passes.

A row that failed or that a filter dropped passes the later stages untouched (no model time is spent on it; its score
stays), so a shard's output has exactly its input rows, in input order, whichever executor computed it.
"""

from __future__ import annotations

from collections.abc import Iterable

from training.pipeline.run.recipe import RaySettings
from training.pipeline.run.shards import PASSES_COLUMN, POSITION_COLUMN, SHARD_COLUMN
from training.pipeline.stages import Row, Stage, passes_on


INTERNAL = (SHARD_COLUMN, POSITION_COLUMN, PASSES_COLUMN)
INPUT_STAGE = "input"  # `error_stage` of rows that arrived failed (unreadable input file, failed download)
ERROR_FIELDS = ("error", "error_kind", "error_stage")


def start_carrying(row: Row) -> Row:
    """A shard input row (with its shard and position) as the first stage takes it: whether it passes (a row that
    arrived failed does not, and keeps which step failed it)."""
    if PASSES_COLUMN in row:
        return row
    failed = {"error_stage": row.get("error_stage", INPUT_STAGE)} if "error" in row else {}
    return {**row, PASSES_COLUMN: "error" not in row, **failed}


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
