"""The scaled-out pipeline's output shards: one parquet file per input shard, written once, atomically.

A run splits its input rows into shards of `shard_size` rows (in input order), each with a fingerprint (md5 of its
image hashes). A shard's input rows are written once to `shards/inputs/part-00003.parquet` (as the planner streams
the input, `training.pipeline.run.planning`, or from a plan held in memory) and read back only when that shard is
computed, so no step holds more than a few shards of rows; a run removes them once every shard is finished.
`shards/part-00003.parquet` holds shard 3's output rows (every input row once: kept, dropped by the filter or failed)
and carries the shard's fingerprint in its parquet metadata. It is written under a hidden temporary name
and renamed when complete (`training.store.atomic_write`), so it exists only whole, and the sha256 of its bytes is
recorded beside it (`part-00003.parquet.sha256`, `training.store.write_with_checksum`): a rerun takes a shard as
finished when its bytes match that checksum and its fingerprint matches the plan. A shard damaged after it was
written (e.g. data pages changed under an intact footer, which would read as whole until decoded) is named in a
warning, removed and computed again, with every other unfinished shard. `plan.json`
records the shards of the run and its stages with their settings; a rerun over other input rows, another shard size,
other stages or other stage settings is refused rather than mixed.

Columns: the row fields every stage may write, with fixed Arrow types so shards written by different workers always
agree: `image_hash`, `url`, `image`, `source_caption`, `filter_score`, `kept`, `caption`, `check` (the check's
result as JSON text), `embedding` (list of float32), `handed_off`, `handoff_image`, `handoff_reason`, `error`,
`error_kind`, `error_stage` (which stage reported the error), and `extra` (any other field, as JSON text).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from training.pipeline.stages import Row
from training.store import atomic_write, checksum_problem, remove_with_checksum, write_with_checksum


logger = logging.getLogger(__name__)

SHARDS_FOLDER = "shards"
INPUTS_FOLDER = "inputs"
PLAN_FILE = "plan.json"
FINGERPRINT_KEY = b"relsim.shard_fingerprint"
JSON_COLUMNS = ("check", "extra")
# internal columns the Ray executor carries between stages; never written to a shard
SHARD_COLUMN, POSITION_COLUMN, PASSES_COLUMN = "_shard", "_position", "_passes"

ROW_SCHEMA = pa.schema(
    [
        ("image_hash", pa.string()),
        ("url", pa.string()),
        ("image", pa.string()),
        ("source_caption", pa.string()),
        ("filter_score", pa.float64()),
        ("kept", pa.bool_()),
        ("caption", pa.string()),
        ("check", pa.string()),
        ("embedding", pa.list_(pa.float32())),
        ("handed_off", pa.bool_()),
        ("handoff_image", pa.string()),
        ("handoff_reason", pa.string()),
        ("error", pa.string()),
        ("error_kind", pa.string()),
        ("error_stage", pa.string()),
        ("extra", pa.string()),
    ]
)
CARRIED_SCHEMA = pa.schema(
    [*ROW_SCHEMA, (SHARD_COLUMN, pa.int64()), (POSITION_COLUMN, pa.int64()), (PASSES_COLUMN, pa.bool_())]
)
_NAMED = set(CARRIED_SCHEMA.names) - {"extra"}


def rows_to_table(rows: Sequence[Row], schema: pa.Schema = CARRIED_SCHEMA) -> pa.Table:
    """Rows (dicts) as a table of `schema`: dict/list fields of `JSON_COLUMNS` as JSON text, unknown fields in
    `extra`. Missing fields are nulls."""
    columns: dict[str, list[Any]] = {}
    for name in schema.names:
        if name == "extra":
            values = [{key: value for key, value in row.items() if key not in _NAMED} or None for row in rows]
        else:
            values = [row.get(name) for row in rows]
        if name in JSON_COLUMNS:
            values = [None if value is None else json.dumps(value, sort_keys=True) for value in values]
        columns[name] = values
    return pa.table(columns, schema=schema)


def table_to_rows(table: pa.Table) -> list[Row]:
    """The inverse of `rows_to_table`: nulls left out, JSON columns parsed, `extra` spread back into the row."""
    rows = []
    for record in table.to_pylist():
        row: Row = {}
        for name, value in record.items():
            if value is None:
                continue
            if name == "extra":
                row.update(json.loads(value))
            elif name in JSON_COLUMNS:
                row[name] = json.loads(value)
            else:
                row[name] = value
        rows.append(row)
    return rows


def fingerprint(image_hashes: Iterable[str]) -> str:
    """The identity of a shard: md5 of its image hashes in order."""
    digest = hashlib.md5()
    for image_hash in image_hashes:
        digest.update(image_hash.encode("ascii") + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class ShardSpec:
    index: int
    count: int
    fingerprint: str


@dataclass
class ShardPlan:
    """The input in shards: `rows[i]` are shard i's rows when the plan holds them (small inputs, tests); a streamed
    plan (`rows` None) has them in `shards/inputs/` (`read_shard_input`). `duplicates`: repeated image hashes left
    out while planning. `finished`: the shards a streamed plan found finished (verified once, while planning; None:
    not checked yet)."""

    shard_size: int
    specs: list[ShardSpec]
    rows: list[list[Row]] | None = None
    duplicates: int = 0
    finished: frozenset[int] | None = field(default=None, compare=False)

    @classmethod
    def from_rows(cls, rows: Sequence[Row], shard_size: int) -> ShardPlan:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        chunks = [list(rows[start : start + shard_size]) for start in range(0, len(rows), shard_size)]
        return cls.from_shards(chunks, shard_size)

    @classmethod
    def from_shards(cls, chunks: Sequence[Sequence[Row]], shard_size: int) -> ShardPlan:
        """A plan whose shards are given (e.g. one per downloaded img2dataset shard)."""
        chunks = [list(chunk) for chunk in chunks if chunk]
        specs = [
            ShardSpec(index, len(chunk), fingerprint(row["image_hash"] for row in chunk))
            for index, chunk in enumerate(chunks)
        ]
        return cls(shard_size, specs, chunks)


def shard_path(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / SHARDS_FOLDER / f"part-{index:05d}.parquet"


def shard_input_path(output_dir: str | Path, index: int) -> Path:
    return Path(output_dir) / SHARDS_FOLDER / INPUTS_FOLDER / f"part-{index:05d}.parquet"


def plan_path(output_dir: str | Path) -> Path:
    return Path(output_dir) / SHARDS_FOLDER / PLAN_FILE


def recorded_plan(output_dir: str | Path) -> dict[str, Any] | None:
    """What a previous run recorded in `shards/plan.json` (None when nothing was)."""
    path = plan_path(output_dir)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def other_input_error(output_dir: str | Path, previous: dict[str, Any], this_run: str) -> ValueError:
    """The refusal of a run whose shards differ from the recorded ones (`this_run` says how)."""
    return ValueError(
        f"{plan_path(output_dir)} records {len(previous.get('shards', []))} shards of another input or shard size "
        f"({previous.get('shard_size')}); {this_run}. Use a new --output folder, or the same input and recipe as the "
        "run that wrote it"
    )


def check_plan(plan: ShardPlan, output_dir: str | Path, stages: dict[str, Any] | None = None) -> None:
    """Records the plan (and `stages`: stage name -> the settings that change its output) in `shards/plan.json`, or
    checks them against the ones a previous run recorded.

    Raises:
        ValueError: the output folder holds shards of other input rows, another shard size, or other stages or
            stage settings (finished shards of one would be mixed with new shards of the other).
    """
    path = plan_path(output_dir)
    recorded = {"shard_size": plan.shard_size, "shards": [asdict(spec) for spec in plan.specs], "stages": stages or {}}
    previous = recorded_plan(output_dir)
    if previous is None:
        atomic_write(path, (json.dumps(recorded, indent=1) + "\n").encode("utf-8"))
        return
    if (previous.get("shard_size"), previous.get("shards")) != (recorded["shard_size"], recorded["shards"]):
        raise other_input_error(output_dir, previous, f"this run has {len(plan.specs)} of size {plan.shard_size}")
    check_stages(output_dir, recorded["stages"])


def check_stages(output_dir: str | Path, stages: dict[str, Any]) -> None:
    """Refuses stages or stage settings other than the ones `shards/plan.json` records (nothing recorded: no check).
    Called before planning too, so a long input is not read for a run that would be refused."""
    previous = recorded_plan(output_dir)
    if previous is None:
        return
    path = plan_path(output_dir)
    before, now = previous.get("stages", {}), stages
    if before != now:
        differ = sorted(name for name in {*before, *now} if before.get(name) != now.get(name))
        raise ValueError(
            f"{path} records a run of the stages {list(before)}; this run has {list(now)}, which differ in "
            f"{differ} (stages added, removed or with other settings: {', '.join(_differences(before, now))}). Its "
            "finished shards would be mixed with shards of another recipe: use a new --output folder, or the stages "
            "and recipe of the run that wrote it"
        )


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Short descriptions of how two recorded stage lists differ, e.g. "filter.threshold 0.5 -> 0.7"."""
    described = []
    for name in sorted({*before, *now}):
        if name not in before or name not in now:
            described.append(f"{name} {'added' if name in now else 'removed'}")
            continue
        for key in sorted({*before[name], *now[name]}):
            if before[name].get(key) != now[name].get(key):
                described.append(f"{name}.{key} {before[name].get(key)!r} -> {now[name].get(key)!r}")
    return described


def is_finished(output_dir: str | Path, spec: ShardSpec) -> bool:
    """Whether the shard's output file exists with the bytes written (its recorded sha256), this shard's fingerprint
    and row count. A damaged one is named in a warning and removed, so it is computed again (and warned about once)."""
    path = shard_path(output_dir, spec.index)
    if not path.is_file():
        return False
    problem = checksum_problem(path)
    if problem is not None:
        logger.warning("%s is damaged: %s; shard %d is removed and computed again", path, problem, spec.index)
        remove_with_checksum(path)
        return False
    return _has_fingerprint(path, spec)


def pending_shards(plan: ShardPlan, output_dir: str | Path) -> list[int]:
    """The shards of `plan` to compute: those not finished (as the planner found them, else checked now)."""
    if plan.finished is not None:
        return [spec.index for spec in plan.specs if spec.index not in plan.finished]
    return [spec.index for spec in plan.specs if not is_finished(output_dir, spec)]


def write_shard(output_dir: str | Path, spec: ShardSpec, rows: Sequence[Row]) -> Path:
    """Writes shard `spec` (its rows in input order) under a temporary name and renames it into place."""
    if len(rows) != spec.count:
        raise RuntimeError(f"shard {spec.index} has {len(rows)} rows, expected {spec.count}")
    table = rows_to_table(rows, ROW_SCHEMA)
    table = table.replace_schema_metadata({FINGERPRINT_KEY: spec.fingerprint.encode()})
    written = pa.BufferOutputStream()
    pq.write_table(table, written)
    return write_with_checksum(shard_path(output_dir, spec.index), written.getvalue().to_pybytes())


def read_shard(output_dir: str | Path, index: int, columns: Sequence[str] | None = None) -> list[Row]:
    """Shard `index`'s rows (only `columns` when given).

    Raises:
        ValueError: the file cannot be decoded (damaged since this run checked it), naming it.
    """
    path = shard_path(output_dir, index)
    try:
        table = pq.read_table(path, columns=list(columns) if columns else None)
    except FileNotFoundError:
        raise
    except (pa.ArrowInvalid, OSError) as error:  # pyarrow reports damaged data as either
        raise ValueError(f"{path}: unreadable shard ({error}); rerun the command to compute it again") from error
    return table_to_rows(table)


def write_shard_input(output_dir: str | Path, spec: ShardSpec, rows: Sequence[Row]) -> Path:
    """Writes shard `spec`'s input rows (with their shard and position, the columns the stages carry) once, atomically;
    a file already there with this shard's fingerprint is kept."""
    path = shard_input_path(output_dir, spec.index)
    if _has_fingerprint(path, spec):
        return path
    carried = [{**row, SHARD_COLUMN: spec.index, POSITION_COLUMN: position} for position, row in enumerate(rows)]
    table = rows_to_table(carried).replace_schema_metadata({FINGERPRINT_KEY: spec.fingerprint.encode()})
    return atomic_write(path, lambda temporary: pq.write_table(table, temporary))


def read_shard_input(output_dir: str | Path, spec: ShardSpec) -> list[Row]:
    """Shard `spec`'s input rows as `write_shard_input` wrote them (with shard and position).

    Raises:
        FileNotFoundError: the file is missing or belongs to another plan (rerun the command: planning writes it).
    """
    path = shard_input_path(output_dir, spec.index)
    if not _has_fingerprint(path, spec):
        raise FileNotFoundError(f"{path}: shard {spec.index}'s input is missing or of another plan; run again")
    return table_to_rows(pq.read_table(path))


def _has_fingerprint(path: Path, spec: ShardSpec) -> bool:
    """Whether `path` exists whole with this shard's fingerprint and row count."""
    if not path.is_file():
        return False
    try:
        metadata = pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid) as error:
        logger.warning("%s is unreadable (%s); it is written again", path, error)
        return False
    stored = (metadata.metadata or {}).get(FINGERPRINT_KEY, b"").decode()
    return stored == spec.fingerprint and metadata.num_rows == spec.count


def read_all_shards(output_dir: str | Path, plan: ShardPlan) -> list[Row]:
    """Every output row, shard by shard, in input order, all in memory: for small outputs and tests (the run itself
    streams shard by shard, `training.pipeline.run.sharded.iter_shard_rows`)."""
    return [row for spec in plan.specs for row in read_shard(output_dir, spec.index)]
