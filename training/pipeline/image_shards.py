"""Download with img2dataset, and read image shards (img2dataset's webdataset or parquet output) as pipeline rows.

`download_shards` runs img2dataset over the rows' URLs: its own `ray` distributor when Ray is up (one Ray task per
shard), its `multiprocessing` one otherwise; `incremental` mode, so a rerun fetches only the shards it has no stats
for. The URLs stream into a folder of jsonl files of `url_file_shards` download shards each (img2dataset reads one
input file whole, so no file is larger than that). `iter_image_shards` turns a folder of such shards (downloaded here
or elsewhere) into rows, one list per shard, a shard at a time: a successful image is written once to
`images_dir/<image_hash>.jpg` (the stages read files), a failed one becomes a row with an `error` naming the URL and
img2dataset's reason, so every URL is accounted for. URLs are fetched under the recipe's `training.url_fetch`
policy: http(s) only unless opted in (a refused URL is a failed row: `refused_download_row`), redirects held to the
same schemes, at most `download.max_image_bytes` per image.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow.parquet as pq

from training.image_ids import url_image_hash
from training.pipeline.run.recipe import DownloadSettings
from training.pipeline.stages import Row, failed_row
from training.store import atomic_write
from training.url_fetch import FetchPolicy, download_with_policy


logger = logging.getLogger(__name__)

DOWNLOAD_STAGE = "download"


def write_url_lists(rows: Iterable[Row], folder: str | Path, rows_per_file: int) -> Path:
    """Streams the rows with a `url` into `folder/part-NNNNN.jsonl` files of `rows_per_file` rows each (old files
    removed first); returns `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*.jsonl"):
        old.unlink()
    batch: list[str] = []
    written = 0
    for row in rows:
        if row.get("url"):
            fields = {"url": row["url"], "image_hash": row["image_hash"], "source_caption": row.get("source_caption")}
            batch.append(json.dumps(fields))
        if len(batch) == rows_per_file:
            atomic_write(folder / f"part-{written:05d}.jsonl", ("\n".join(batch) + "\n").encode("utf-8"))
            batch, written = [], written + 1
    if batch:
        atomic_write(folder / f"part-{written:05d}.jsonl", ("\n".join(batch) + "\n").encode("utf-8"))
    return folder


def download_shards(
    rows: Iterable[Row], output_folder: str | Path, settings: DownloadSettings, on_ray: bool
) -> Path | None:
    """Fetches every row's `url` into img2dataset shards under `output_folder` (resumable) under the settings'
    `FetchPolicy` (schemes, redirects, bytes per image); returns that folder, or None when no row has a URL. Rows the
    policy refuses are the caller's to leave out first (`refused_download_row`): here they would fail in img2dataset."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    url_list = write_url_lists(
        rows, output_folder.parent / f"{output_folder.name}-urls", settings.shard_size * settings.url_file_shards
    )
    if not any(url_list.glob("part-*.jsonl")):
        return None
    download_with_policy(
        settings.fetch_policy(),
        url_list=str(url_list),
        input_format="jsonl",
        url_col="url",
        save_additional_columns=["image_hash", "source_caption"],
        output_format=settings.output_format,
        output_folder=str(output_folder),
        image_size=settings.image_size,
        resize_mode=settings.resize_mode,
        resize_only_if_bigger=True,
        processes_count=settings.processes,
        thread_count=settings.threads,
        timeout=settings.timeout,
        retries=settings.retries,
        enable_wandb=False,
        incremental_mode="incremental",
        number_sample_per_shard=settings.shard_size,
        distributor="ray" if on_ray else "multiprocessing",
    )
    return output_folder


def download_failed_row(row: Row, source: str, reason: str) -> Row:
    """`row` as failed in the download stage, with `reason` (counted per kind in the run summary)."""
    return {**failed_row(row, source, reason), "error_stage": DOWNLOAD_STAGE}


def refused_download_row(row: Row, policy: FetchPolicy) -> Row | None:
    """`row` failed with the reason its URL is not fetched (a scheme the policy does not allow), or None when its URL
    may be fetched."""
    reason = policy.refusal(row["url"])
    return None if reason is None else download_failed_row(row, row["url"], reason)


def _tar_images(path: Path) -> dict[str, bytes]:
    images = {}
    with tarfile.open(path) as archive:
        for member in archive.getmembers():
            key, _, suffix = member.name.rpartition(".")
            if member.isfile() and suffix.lower() in ("jpg", "jpeg", "png", "webp"):
                images[key] = archive.extractfile(member).read()
    return images


def _shard_images(metadata_file: Path) -> dict[str, bytes]:
    """key -> encoded image of one shard: from the `.tar` beside the metadata (webdataset), or the `jpg` column of
    the parquet itself (img2dataset's parquet format)."""
    tar = metadata_file.with_suffix(".tar")
    if tar.is_file():
        return _tar_images(tar)
    names = pq.read_schema(metadata_file).names
    if "jpg" not in names or "key" not in names:
        raise ValueError(
            f"{metadata_file}: neither a {tar.name} beside it nor `key` and `jpg` columns (it has {names}); not an "
            "image shard"
        )
    table = pq.read_table(metadata_file, columns=["key", "jpg"])
    return {key: data for key, data in zip(table["key"].to_pylist(), table["jpg"].to_pylist(), strict=True) if data}


def iter_image_shards(folder: str | Path, images_dir: str | Path) -> Iterator[list[Row]]:
    """One list of rows per shard of `folder` (img2dataset layout: `NNNNN.parquet` metadata, images in `NNNNN.tar`
    or in the parquet's `jpg` column), a shard at a time; ids are md5(url), or the shard's `image_hash` column when
    it has one.

    Raises:
        ValueError: no shard in `folder`, or a shard without its images (named, with the columns it has).
    """
    folder, images_dir = Path(folder), Path(images_dir)
    metadata_files = sorted(path for path in folder.glob("*.parquet") if path.stem.isdigit())
    if not metadata_files:
        raise ValueError(f"{folder}: no image shards (NNNNN.parquet, with NNNNN.tar for webdataset) found")
    for metadata_file in metadata_files:
        columns = [name for name in pq.read_schema(metadata_file).names if name != "jpg"]
        records = pq.read_table(metadata_file, columns=columns).to_pylist()
        images = _shard_images(metadata_file)
        rows = []
        for record in records:
            url = record.get("url") or ""
            row: Row = {"image_hash": record.get("image_hash") or url_image_hash(url)}
            if url:
                row["url"] = url
            for name in ("source_caption", "caption"):
                if record.get(name):
                    row["source_caption"] = record[name]
                    break
            data = images.get(record.get("key"))
            if record.get("status", "success") == "success" and data:
                file = images_dir / f"{row['image_hash']}.jpg"
                if not file.is_file():
                    atomic_write(file, data)
                row["image"] = str(file)
            else:
                reason = record.get("error_message") or record.get("status") or "no image in the shard"
                row = download_failed_row(row, url or str(metadata_file), str(reason))
            rows.append(row)
        yield rows
