"""What `python -m training.pipeline run` runs: download -> filter -> caption -> check -> embed -> handoff -> index,
on this machine (`--executor local`, the default) or on Ray Data (`--executor ray` / `--ray-address ADDRESS`),
configured by one YAML recipe (`training.pipeline.run.recipe`). Both executors run the same stage classes and write
the same outputs (`training.pipeline.run.sharded`).

Inputs (`--input`): a `.parquet` or `.jsonl`/`.csv` URL list (LAION-style `url`/`URL`, optional `caption`/`TEXT`), a
folder of image shards (img2dataset's webdataset or parquet output), a folder of images, or a `datasets` dataset. The
driver never holds the input: it streams it (parquet in batches, jsonl a line at a time, a dataset an example at a
time, image shards a file at a time) into shards (`training.pipeline.run.planning`).
Outputs in `--output`: `shards/part-NNNNN.parquet` (one row per input row: image_hash, url, filter score, caption,
embedding, error, ...; the unit of resume), `<stage>.jsonl` for every row stage but embed (whose vectors stay in the
shards and the index), the captions jsonl the dataset builders read (`handoff/captions.jsonl` with the hand-off
stage, else `captions.jsonl`), `index/` with the index stage, `download/` with the download stage (img2dataset: its
`ray` distributor on Ray, `multiprocessing` locally), `summary.json` (with the index's recall@10 against exact search).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from training.image_ids import require_image_hash, url_image_hash
from training.pipeline.build import build_stages
from training.pipeline.handoff import write_captions_jsonl
from training.pipeline.image_shards import (
    DOWNLOAD_STAGE,
    download_shards,
    iter_image_shards,
    refused_download_row,
)
from training.pipeline.index_stage import build_shard_index
from training.pipeline.inputs import iter_input_rows
from training.pipeline.run.planning import SeenHashes, plan_rows, plan_shards
from training.pipeline.run.ray_executor import ensure_ray
from training.pipeline.run.recipe import RunRecipe
from training.pipeline.run.sharded import run, stage_settings
from training.pipeline.run.shards import check_stages
from training.pipeline.run.summary import RunSummary, StageSummary, iter_shard_rows, write_summary
from training.pipeline.stages import Row, Stage


logger = logging.getLogger(__name__)

DOWNLOAD_FOLDER = "download"
CAPTIONS_FILE = "captions.jsonl"
REPEATS_SCRATCH = "input-seen.sqlite"  # the image hashes met while reading, on the download and image-shard routes
UNLOGGED_STAGES = ("embed",)  # no `<stage>.jsonl`: a stage whose output is vectors (kept in shards and index)


@dataclass
class RunInput:
    """The input of a run, streamed: `rows` (a list, cut into shards of `ray.shard_size`, repeats left out) or
    `shards` (a folder of image shards: one output shard each)."""

    rows: Iterator[Row] | None = None
    shards: Iterator[list[Row]] | None = None

    def all_rows(self) -> Iterator[Row]:
        return self.rows if self.rows is not None else (row for shard in self.shards for row in shard)


def iter_parquet_list(path: str | Path, batch_rows: int = 4_096) -> Iterator[Row]:
    """A LAION-style parquet URL list: `url` (or `URL`, `url_link`), optional `caption` (or `TEXT`, `text`) and
    `image_hash`, read `batch_rows` rows at a time (only those columns).

    Raises:
        ValueError: the file has no URL column (its columns named), a row without a URL or with a malformed
            `image_hash` (named by its row number, from 0).
    """
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    names = file.schema_arrow.names
    url_column = next((name for name in ("url", "URL", "url_link") if name in names), None)
    if url_column is None:
        raise ValueError(f"{path}: a URL list needs a `url` (or `URL`, `url_link`) column; it has {names}")
    caption_column = next((name for name in ("caption", "TEXT", "text") if name in names), None)
    columns = [url_column, *(name for name in (caption_column, "image_hash") if name in names)]
    number = 0
    for batch in file.iter_batches(batch_size=batch_rows, columns=columns):
        for record in batch.to_pylist():
            yield _url_row(path, number, record, url_column, caption_column)
            number += 1


def _url_row(path: str | Path, number: int, record: dict, url_column: str, caption_column: str | None) -> Row:
    url = record[url_column]
    if not url:
        raise ValueError(f"{path}: row {number} has no {url_column}")
    given = record.get("image_hash")
    row: Row = {"url": str(url), "image_hash": require_image_hash(given, f"{path}: row {number}: image_hash")
                if given else url_image_hash(str(url))}  # fmt: skip
    if caption_column and record.get(caption_column):
        row["source_caption"] = str(record[caption_column])
    return row


def _is_image_shard_folder(path: Path) -> bool:
    return path.is_dir() and any(file.stem.isdigit() for file in path.glob("*.parquet"))


def read_run_input(
    source: str | Path,
    output_dir: Path,
    image_column: str = "image",
    split: str = "train",
    allow_outside_list_folder: bool = False,
) -> RunInput:
    """The input as a stream of rows, or of shards for a folder of image shards (nothing is read until iterated)."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return RunInput(rows=iter_parquet_list(path))
    if _is_image_shard_folder(path):
        return RunInput(shards=iter_image_shards(path, output_dir / "input_images"))
    rows = iter_input_rows(source, output_dir / "input_images", image_column, split, allow_outside_list_folder)
    return RunInput(rows=rows)


class RepeatedInputs:
    """Leaves out the rows that repeat an earlier row's image_hash (the first is kept), counting them, on the routes
    that plan shards as given (download, a folder of image shards), as `plan_rows` does on the others: every route
    gives one row per image and the same `duplicate_inputs`. The hashes met are kept on disk (`SeenHashes`)."""

    def __init__(self, scratch: Path) -> None:
        self.scratch, self.count, self.position = scratch, 0, 0

    def shards(self, shards: Iterable[list[Row]]) -> Iterator[list[Row]]:
        with SeenHashes(self.scratch) as seen:
            for shard in shards:
                kept = []
                for row in shard:
                    where = f"input row {self.position}: image_hash"
                    self.position += 1
                    if seen.add(require_image_hash(row.get("image_hash"), where)):
                        kept.append(row)
                self.count += len(shard) - len(kept)
                yield kept

    def rows(self, rows: Iterable[Row]) -> Iterator[Row]:
        for kept in self.shards([row] for row in rows):
            yield from kept


def _download(
    run_input: RunInput, output_dir: Path, recipe: RunRecipe, on_ray: bool, repeats: RepeatedInputs
) -> Iterator[list[Row]]:
    """The shards after img2dataset: one per download shard (streamed), then the rows that had nothing to fetch (a
    local image, a URL the fetch policy refuses, or failed already), in shards of `ray.shard_size`, kept aside in a
    jsonl file meanwhile. Repeated images are left out before anything is fetched."""
    policy = recipe.download.fetch_policy()
    local_file = output_dir / f"{DOWNLOAD_FOLDER}-local.jsonl"
    with local_file.open("w", encoding="utf-8") as local:

        def to_fetch() -> Iterator[Row]:
            for row in repeats.rows(run_input.all_rows()):
                if row.get("url") and not row.get("image") and "error" not in row:
                    refused = refused_download_row(row, policy)
                    if refused is None:
                        yield row
                        continue
                    row = refused
                local.write(json.dumps(row, ensure_ascii=False) + "\n")

        folder = download_shards(to_fetch(), output_dir / DOWNLOAD_FOLDER, recipe.download, on_ray)
    if folder is not None:
        yield from iter_image_shards(folder, output_dir / "images")
    shard: list[Row] = []
    with local_file.open(encoding="utf-8") as lines:
        for line in lines:
            shard.append(json.loads(line))
            if len(shard) == recipe.ray.shard_size:
                yield shard
                shard = []
    if shard:
        yield shard
    local_file.unlink()


class DownloadCounts:
    """The download stage's counts, taken as its shards stream into the plan: rows with a URL, failed per reason."""

    def __init__(self) -> None:
        self.rows_in, self.failed = 0, Counter()

    def watch(self, shards: Iterable[list[Row]]) -> Iterator[list[Row]]:
        for shard in shards:
            for row in shard:
                if row.get("url"):
                    self.rows_in += 1
                    if row.get("error_stage") == DOWNLOAD_STAGE:
                        self.failed[row.get("error_kind", "error")] += 1
            yield shard

    def summary(self) -> StageSummary:
        kept = self.rows_in - sum(self.failed.values())
        return StageSummary(DOWNLOAD_STAGE, self.rows_in, self.rows_in, 0, kept, 0, dict(sorted(self.failed.items())))


def _captioned(rows: Iterable[Row]) -> Iterable[Row]:
    return (
        row for row in rows if row.get("caption") and "error" not in row and (row.get("check") or {}).get("ok", True)
    )


def run_pipeline(
    source: str | Path,
    output_dir: str | Path,
    names: Sequence[str],
    recipe: RunRecipe,
    batch_size: int | None = None,
    image_column: str = "image",
    split: str = "train",
    show_progress: bool = True,
    stages: Sequence[Stage] | None = None,
    executor: str = "local",
    allow_outside_list_folder: bool = False,
) -> RunSummary:
    """Reads the input, downloads when asked, runs the row stages sharded (`executor` "local" or "ray"), writes the
    captions jsonl and the index.

    Args:
        stages: the row stages to run instead of building them from `names` (tests, custom stages); `names` still
            decides download and index.
        allow_outside_list_folder: a `.jsonl`/`.csv` list's local images may lead outside the list's folder (else
            such a row fails, naming its line, and its file is never read).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    row_stages = list(stages) if stages is not None else build_stages(names, recipe.pipeline, output_dir, recipe.embed)
    on_ray = executor == "ray"
    started = False
    if on_ray:
        started = ensure_ray(recipe.ray, row_stages)
    try:
        # refuse other stages before a long input is read; the input streams into shard files as it is planned
        check_stages(output_dir, {stage.name: stage_settings(stage) for stage in row_stages})
        run_input = read_run_input(source, output_dir, image_column, split, allow_outside_list_folder)
        downloads = DownloadCounts()
        repeats = RepeatedInputs(output_dir / REPEATS_SCRATCH)
        if "download" in names:
            shards = downloads.watch(_download(run_input, output_dir, recipe, on_ray, repeats))
            plan = plan_shards(shards, output_dir, recipe.ray.shard_size)
            plan.duplicates = repeats.count
        elif run_input.shards is not None:
            plan = plan_shards(repeats.shards(run_input.shards), output_dir, recipe.ray.shard_size)
            plan.duplicates = repeats.count
        else:
            plan = plan_rows(run_input.rows, output_dir, recipe.ray.shard_size)
        logged = [stage.name for stage in row_stages if stage.name not in UNLOGGED_STAGES]
        summary = run(
            plan, row_stages, output_dir, batch_size or recipe.pipeline.batch_size, recipe.ray, executor,
            show_progress, stage_logs=logged,
        )  # fmt: skip
    finally:
        if started:
            import ray

            ray.shutdown()
    if "download" in names:
        summary.stages.insert(0, downloads.summary())
    if "caption" in names and "handoff" not in names:
        write_captions_jsonl(_captioned(iter_shard_rows(output_dir, plan)), output_dir / CAPTIONS_FILE)
    if "index" in names:
        summary.index = asdict(build_shard_index(output_dir, plan, recipe.index))
    write_summary(summary, output_dir)
    return summary
