"""Fetching the images of built datasets with img2dataset and attaching them to the rows by image hash.

img2dataset downloads in parallel, resizes, resumes an interrupted run (`incremental` mode) and records the status
of every URL. URLs are fetched under a `training.url_fetch.FetchPolicy`: http(s) only unless the operator opts in to
more schemes (a refused URL is counted as failed to download, with its reason), redirects held to the same schemes,
at most `max_image_bytes` per image. Rows whose image could not be fetched keep an empty image and are listed, with
the reason, in `download_report.json`; nothing is replaced by a stand-in image.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pandas as pd

from training.hub_data.features import ANONYMOUS_CAPTIONS, IMAGE_COLUMNS, SEED_GROUPS
from training.image_folder import image_file_extensions
from training.image_ids import url_image_hash
from training.json_lines import write_json_lines
from training.url_fetch import FetchPolicy, download_with_policy


logger = logging.getLogger(__name__)


@dataclass
class DownloadReport:
    """img2dataset's totals (the refused URLs counted as failed to download) plus every row left without its image;
    `refused`: the URLs the fetch policy did not hand to img2dataset, each with its image hash and reason."""

    count: int = 0
    successes: int = 0
    failed_to_download: int = 0
    failed_to_resize: int = 0
    status: dict[str, int] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)
    refused: list[dict[str, str]] = field(default_factory=list)


def unique_urls(built: dict[str, datasets.DatasetDict]) -> list[dict[str, str]]:
    """Every URL of every configuration once, with its image hash (md5 of the URL)."""
    urls: dict[str, None] = {}
    for config, splits in built.items():
        for split in splits.values():
            column = split["image_urls"] if config == SEED_GROUPS else [[url] for url in split["url"]]
            urls.update(dict.fromkeys(url for group in column for url in group))
    return [{"url": url, "image_hash": url_image_hash(url)} for url in urls]


def download_images(
    urls: list[dict[str, str]],
    output_folder: str | Path,
    image_size: int = 448,
    processes: int = 1,
    threads: int = 16,
    timeout: int = 10,
    policy: FetchPolicy | None = None,
) -> DownloadReport:
    """Downloads (or resumes downloading) `urls` into `output_folder/images` and sums img2dataset's statistics.

    Images are resized so their shorter side is at most `image_size` (aspect ratio kept; never enlarged): the
    relsim processor crops and resizes them later. The URLs `policy` (default: http(s), 32 MiB an image) refuses are
    not handed to img2dataset: they are the report's `refused`, counted as failed to download.
    """
    policy = policy or FetchPolicy()
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    report = DownloadReport()
    fetched = []
    for row in urls:
        reason = policy.refusal(row["url"])
        if reason is None:
            fetched.append(row)
        else:
            report.refused.append({**row, "reason": reason})
            report.status[reason] = report.status.get(reason, 0) + 1
    report.count = report.failed_to_download = len(report.refused)
    url_list = output_folder / "urls.jsonl"
    write_json_lines(url_list, fetched)
    if fetched:
        download_with_policy(
            policy,
            url_list=str(url_list),
            input_format="jsonl",
            url_col="url",
            save_additional_columns=["image_hash"],
            output_format="files",
            output_folder=str(output_folder / "images"),
            image_size=image_size,
            resize_mode="keep_ratio",
            resize_only_if_bigger=True,
            processes_count=processes,
            thread_count=threads,
            timeout=timeout,
            enable_wandb=False,
            incremental_mode="incremental",
            number_sample_per_shard=10_000,
        )
    for stats_file in sorted((output_folder / "images").glob("*_stats.json")):
        stats = json.loads(stats_file.read_text())
        report.count += stats["count"]
        report.successes += stats["successes"]
        report.failed_to_download += stats["failed_to_download"]
        report.failed_to_resize += stats["failed_to_resize"]
        for status, number in stats["status_dict"].items():
            report.status[status] = report.status.get(status, 0) + number
    logger.info(
        "img2dataset: %d of %d images fetched (%d failed to download, %d failed to resize)",
        report.successes,
        report.count,
        report.failed_to_download,
        report.failed_to_resize,
    )
    return report


def downloaded_images(image_folder: str | Path) -> tuple[dict[str, Path], dict[str, str]]:
    """`(image_hash -> file, image_hash -> failure reason)` from the shards img2dataset wrote."""
    image_folder = Path(image_folder)
    files, failures = {}, {}
    for shard in sorted(image_folder.glob("*.parquet")):
        for row in pd.read_parquet(shard).itertuples():
            if row.status == "success":
                files[row.image_hash] = image_folder / shard.stem / f"{row.key}.jpg"
            else:
                failures[row.image_hash] = str(row.error_message or row.status)
    return files, failures


def attach_images(
    config: str, splits: datasets.DatasetDict, files: dict[str, Path], failures: dict[str, str], report: DownloadReport
) -> datasets.DatasetDict:
    """Adds the image column (bytes embedded, so exports are self-contained); rows without one are reported."""
    column, feature = IMAGE_COLUMNS[config]

    def encoded(url: str, split: str) -> dict[str, Any] | None:
        image_hash = url_image_hash(url)
        if image_hash in files:
            return {"bytes": files[image_hash].read_bytes(), "path": f"{image_hash}.jpg"}
        reason = failures.get(image_hash, "not in the download")
        report.missing.append(
            {"config": config, "split": split, "image_hash": image_hash, "url": url, "reason": reason}
        )
        return None

    attached = {}
    for split, dataset in splits.items():
        if config == SEED_GROUPS:
            values = [[encoded(url, split) for url in urls] for urls in dataset["image_urls"]]
        else:
            values = [encoded(url, split) for url in dataset["url"]]
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
        attached[split] = dataset.add_column(column, values, feature=feature)
    return datasets.DatasetDict(attached)


def attach_local_images(splits: datasets.DatasetDict, image_dir: str | Path) -> tuple[datasets.DatasetDict, list[str]]:
    """Adds the `image` column of an anonymous-captions build from a local folder of `<image_hash>.<ext>` files (the
    data pipeline's hand-off images), matched by `image_hash`; returns the image hashes that have no file there
    (their rows keep None and are reported)."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise NotADirectoryError(f"{image_dir} is not a folder of <image_hash>.<ext> images")
    extensions = image_file_extensions()
    files = {path.stem: path for path in sorted(image_dir.iterdir()) if path.suffix.lower() in extensions}
    column, feature = IMAGE_COLUMNS[ANONYMOUS_CAPTIONS]
    missing: list[str] = []
    attached = {}
    for split, dataset in splits.items():
        values = []
        for image_hash in dataset["image_hash"]:
            file = files.get(image_hash)
            if file is None:
                missing.append(image_hash)
            values.append(None if file is None else {"bytes": file.read_bytes(), "path": file.name})
        if column in dataset.column_names:
            dataset = dataset.remove_columns(column)
        attached[split] = dataset.add_column(column, values, feature=feature)
    if missing:
        logger.warning("%d captions have no image in %s: %s", len(missing), image_dir, missing[:10])
    return datasets.DatasetDict(attached), missing
