"""Planning a sharded run while the input streams by: rows are cut into shards as they arrive, and each shard's rows
are written once to `shards/inputs/` (`training.pipeline.run.shards.write_shard_input`), so the driver holds one shard
of rows at a time, never the input list (2 billion LAION rows do not fit in memory).

Repeated image hashes are left out (the first one is kept) through `SeenHashes`, a set kept on disk by SQLite: an
in-memory set of every hash would itself be O(input). A shard already finished by an earlier run gets no input
file, and a plan that departs from the one `shards/plan.json` records is refused at the first differing shard, not
after the whole input has been read. The plan equals `ShardPlan.from_rows` over the same rows.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

from training.image_ids import require_image_hash
from training.pipeline.run.shards import (
    SHARDS_FOLDER,
    ShardPlan,
    ShardSpec,
    fingerprint,
    is_finished,
    other_input_error,
    recorded_plan,
    write_shard_input,
)
from training.pipeline.stages import Row


logger = logging.getLogger(__name__)

SEEN_FILE = "planning-seen.sqlite"


class SeenHashes:
    """The image hashes met so far, as 16-byte keys of an on-disk SQLite table (about 30 bytes a hash on disk, a
    bounded page cache in memory). A scratch file: created empty, deleted on close."""

    def __init__(self, path: str | Path, cache_mib: int = 64) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.connection = sqlite3.connect(self.path)
        # nothing to recover after a crash: planning starts the file afresh
        self.connection.execute("PRAGMA journal_mode=OFF")
        self.connection.execute("PRAGMA synchronous=OFF")
        self.connection.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")
        self.connection.execute("CREATE TABLE seen (image_hash BLOB PRIMARY KEY) WITHOUT ROWID")

    def add(self, image_hash: str) -> bool:
        """Adds a 32-hex-digit hash; returns whether it was new."""
        cursor = self.connection.execute("INSERT OR IGNORE INTO seen VALUES (?)", (bytes.fromhex(image_hash),))
        return cursor.rowcount == 1

    def close(self) -> None:
        self.connection.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> SeenHashes:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType) -> None:
        self.close()


class _Planner:
    """Collects shard specs, writes each unfinished shard's input, refuses a shard the recorded plan does not have."""

    def __init__(self, output_dir: str | Path, shard_size: int) -> None:
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.output_dir, self.shard_size = Path(output_dir), shard_size
        self.previous = recorded_plan(self.output_dir)
        self.specs: list[ShardSpec] = []
        self.finished: set[int] = set()

    def add(self, rows: Sequence[Row]) -> None:
        spec = ShardSpec(len(self.specs), len(rows), fingerprint(row["image_hash"] for row in rows))
        if self.previous is not None:
            recorded = self.previous.get("shards", [])
            if self.previous.get("shard_size") != self.shard_size or (
                spec.index >= len(recorded) or recorded[spec.index] != asdict(spec)
            ):
                raise other_input_error(
                    self.output_dir, self.previous,
                    f"this run's shard {spec.index} ({spec.count} rows of size {self.shard_size}) is not among them",
                )  # fmt: skip
        if is_finished(self.output_dir, spec):
            self.finished.add(spec.index)
        else:
            write_shard_input(self.output_dir, spec, rows)
        self.specs.append(spec)
        if len(self.specs) % 100 == 0:
            logger.info("planned %d shards", len(self.specs))


def plan_rows(rows: Iterable[Row], output_dir: str | Path, shard_size: int) -> ShardPlan:
    """Shards of `shard_size` rows in input order, repeated image hashes left out, each unfinished shard's input
    written to `output_dir/shards/inputs/` as soon as it is complete.

    Raises:
        ValueError: a row without a valid `image_hash` (named by its position), or a shard that the plan recorded in
            `output_dir` does not have.
    """
    planner = _Planner(output_dir, shard_size)
    duplicates, shard = 0, []
    with SeenHashes(planner.output_dir / SHARDS_FOLDER / SEEN_FILE) as seen:
        for position, row in enumerate(rows):
            if not seen.add(require_image_hash(row.get("image_hash"), f"input row {position}: image_hash")):
                duplicates += 1
                continue
            shard.append(row)
            if len(shard) == shard_size:
                planner.add(shard)
                shard = []
        if shard:
            planner.add(shard)
    if duplicates:
        logger.info("%d input rows repeat an earlier row's image_hash and are left out", duplicates)
    return ShardPlan(shard_size, planner.specs, duplicates=duplicates, finished=frozenset(planner.finished))


def plan_shards(shards: Iterable[Sequence[Row]], output_dir: str | Path, shard_size: int) -> ShardPlan:
    """One shard per given list of rows (e.g. per downloaded img2dataset shard; empty ones left out), each written to
    `shards/inputs/` as it arrives: the streamed `ShardPlan.from_shards`."""
    planner = _Planner(output_dir, shard_size)
    for shard in shards:
        if shard:
            planner.add(shard)
    return ShardPlan(shard_size, planner.specs, finished=frozenset(planner.finished))
