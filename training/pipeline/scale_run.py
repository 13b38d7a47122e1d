"""`python -m training.pipeline run`: download -> filter -> caption -> check -> embed -> handoff -> index, on this
machine (`--executor local`, the default) or on Ray Data (`--executor ray` / `--ray-address ADDRESS`), configured by
one YAML recipe (`scale_recipe`). Both executors run the same stage classes and write the same outputs
(`training.pipeline.sharded_run`).

Inputs (`--input`): a `.parquet` or `.jsonl`/`.csv` URL list (LAION-style `url`/`URL`, optional `caption`/`TEXT`), a
folder of image shards (img2dataset's webdataset or parquet output), a folder of images, or a `datasets` dataset.
Outputs in `--output`: `shards/part-NNNNN.parquet` (one row per input row: image_hash, url, filter score, caption,
embedding, error, ...; the unit of resume), `<stage>.jsonl` for every row stage but embed (whose vectors stay in the
shards and the index), the captions jsonl the dataset builders read (`handoff/captions.jsonl` with the hand-off
stage, else `captions.jsonl`), `index/` with the index stage, `download/` with the download stage (img2dataset: its
`ray` distributor on Ray, `multiprocessing` locally), `summary.json` (with the index's recall@10 against exact search).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from training.image_ids import require_image_hash, url_image_hash
from training.pipeline.scale_recipe import ScaleRecipe
from training.pipeline.stages import Row, Stage


logger = logging.getLogger(__name__)

DOWNLOAD_FOLDER = "download"
CAPTIONS_FILE = "captions.jsonl"
UNLOGGED_STAGES = ("embed",)  # no `<stage>.jsonl`: a stage whose output is vectors (kept in shards and index)


def rows_from_parquet_list(path: str | Path) -> list[Row]:
    """A LAION-style parquet URL list: `url` (or `URL`), optional `caption` (or `TEXT`) and `image_hash`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    url_column = next((name for name in ("url", "URL", "url_link") if name in table.column_names), None)
    if url_column is None:
        raise ValueError(f"{path}: a URL list needs a `url` (or `URL`) column; it has {table.column_names}")
    caption_column = next((name for name in ("caption", "TEXT", "text") if name in table.column_names), None)
    rows = []
    for number, record in enumerate(table.to_pylist()):
        url = record[url_column]
        if not url:
            raise ValueError(f"{path}: row {number} has no {url_column}")
        given = record.get("image_hash")
        row: Row = {"url": str(url), "image_hash": require_image_hash(given, f"{path}: row {number}: image_hash")
                    if given else url_image_hash(str(url))}  # fmt: skip
        if caption_column and record.get(caption_column):
            row["source_caption"] = str(record[caption_column])
        rows.append(row)
    return rows


def _is_image_shard_folder(path: Path) -> bool:
    return path.is_dir() and any(file.stem.isdigit() for file in path.glob("*.parquet"))


def read_scale_input(source: str | Path, output_dir: Path, image_column: str = "image", split: str = "train"):
    """Input rows (a list), or one list of rows per shard for a folder of image shards."""
    from training.pipeline.image_shards import rows_from_image_shards
    from training.pipeline.inputs import read_input_rows

    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".parquet":
        return rows_from_parquet_list(path)
    if _is_image_shard_folder(path):
        return rows_from_image_shards(path, output_dir / "input_images")
    return read_input_rows(source, output_dir / "input_images", image_column, split)


def build_scale_stages(names: Sequence[str], recipe: ScaleRecipe, output_dir: Path) -> list[Stage]:
    """The row stages among `names` (download and index are not row stages), built from the recipe."""
    from training.pipeline.build import build_stages

    return build_stages(names, recipe.pipeline, output_dir, recipe.embed)


def _download(rows: list[Row], output_dir: Path, recipe: ScaleRecipe, on_ray: bool) -> list[list[Row]]:
    from training.pipeline.image_shards import download_shards, rows_from_image_shards

    to_fetch = [row for row in rows if row.get("url") and not row.get("image") and "error" not in row]
    fetched = {id(row) for row in to_fetch}
    local = [row for row in rows if id(row) not in fetched]
    shards: list[list[Row]] = []
    if to_fetch:
        folder = download_shards(to_fetch, output_dir / DOWNLOAD_FOLDER, recipe.download, on_ray)
        shards = rows_from_image_shards(folder, output_dir / "images")
    size = recipe.ray.shard_size
    return shards + [local[start : start + size] for start in range(0, len(local), size)]


def _download_summary(shards: list[list[Row]]):
    from training.pipeline.image_shards import DOWNLOAD_STAGE
    from training.pipeline.runner import StageSummary

    rows = [row for shard in shards for row in shard if row.get("url")]
    failed = Counter(row.get("error_kind", "error") for row in rows if row.get("error_stage") == DOWNLOAD_STAGE)
    kept = len(rows) - sum(failed.values())
    return StageSummary(DOWNLOAD_STAGE, len(rows), len(rows), 0, kept, 0, dict(sorted(failed.items())))


def _captioned(rows: Iterable[Row]) -> Iterable[Row]:
    return (
        row for row in rows if row.get("caption") and "error" not in row and (row.get("check") or {}).get("ok", True)
    )


def run_scaled(
    source: str | Path,
    output_dir: str | Path,
    names: Sequence[str],
    recipe: ScaleRecipe,
    batch_size: int | None = None,
    image_column: str = "image",
    split: str = "train",
    show_progress: bool = True,
    stages: Sequence[Stage] | None = None,
    executor: str = "local",
):
    """Reads the input, downloads when asked, runs the row stages sharded (`executor` "local" or "ray"), writes the
    captions jsonl and the index.

    Args:
        stages: the row stages to run instead of building them from `names` (tests, custom stages); `names` still
            decides download and index.
    """
    from training.pipeline.handoff import write_captions_jsonl
    from training.pipeline.index_stage import build_shard_index
    from training.pipeline.runner import unique_rows, write_summary
    from training.pipeline.sharded_run import iter_shard_rows, run_sharded
    from training.pipeline.shards import ShardPlan

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    row_stages = list(stages) if stages is not None else build_scale_stages(names, recipe, output_dir)
    on_ray = executor == "ray"
    started = False
    if on_ray:
        from training.pipeline.ray_executor import ensure_ray

        started = ensure_ray(recipe.ray)
    try:
        rows = read_scale_input(source, output_dir, image_column, split)
        shards = rows if rows and isinstance(rows[0], list) else None
        if "download" in names:
            flat = [row for shard in shards for row in shard] if shards else rows
            shards = _download(flat, output_dir, recipe, on_ray=on_ray)
        duplicates = 0
        if shards is not None:
            plan = ShardPlan.from_shards(shards, recipe.ray.shard_size)
        else:
            unique, duplicates = unique_rows(rows)
            plan = ShardPlan.from_rows(unique, recipe.ray.shard_size)
        del rows
        logged = [stage.name for stage in row_stages if stage.name not in UNLOGGED_STAGES]
        summary = run_sharded(
            plan, row_stages, output_dir, batch_size or recipe.pipeline.batch_size, recipe.ray, executor,
            show_progress, stage_logs=logged,
        )  # fmt: skip
    finally:
        if started:
            import ray

            ray.shutdown()
    summary.duplicate_inputs = duplicates
    if "download" in names:
        summary.stages.insert(0, _download_summary(shards))
    if "caption" in names and "handoff" not in names:
        write_captions_jsonl(_captioned(iter_shard_rows(output_dir, plan)), output_dir / CAPTIONS_FILE)
    if "index" in names:
        summary.index = asdict(build_shard_index(output_dir, plan, recipe.index))
    write_summary(summary, output_dir)
    return summary


def run_command(args) -> None:
    """The `run` command on either executor: `args` as `training.pipeline.__main__` parses them."""
    from training.pipeline.build import parse_stage_names
    from training.pipeline.scale_recipe import load_scale_recipe

    recipe = load_scale_recipe(args.recipe)
    if args.device is not None:
        recipe.pipeline.device = recipe.embed.device = args.device
    if args.ray_address:
        recipe.ray.address = args.ray_address
    executor = "ray" if args.executor == "ray" or args.ray_address else "local"
    summary = run_scaled(
        args.input, args.output, parse_stage_names(args.stages), recipe, batch_size=args.batch_size,
        image_column=args.image_column, split=args.split, executor=executor,
    )  # fmt: skip
    for stage in summary.stages:
        logger.info(
            "%s: %d in (%d done earlier), %d kept, %d dropped, failed: %s", stage.stage, stage.rows_in,
            stage.done_before, stage.kept, stage.dropped, stage.failed or "none",
        )  # fmt: skip
    if summary.index:
        logger.info("index: %s", summary.index)
    logger.info("summary: %s", Path(args.output) / "summary.json")
    return summary
