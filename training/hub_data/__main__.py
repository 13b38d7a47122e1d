"""relsim's dataset pipeline: validate the official source files, download their images, export and publish.

  python -m training.hub_data build seed-groups --input seed_group.json --output built
  python -m training.hub_data build anonymous-captions --train train.jsonl --test test.jsonl --output built
  python -m training.hub_data build anonymous-captions --train handoff/captions.jsonl --image-dir handoff/images \
      --output built          # local images (empty url_link, image_hash = md5 of the file): attached, no download
  python -m training.hub_data build random-pool --input random_pool.jsonl --output built
  python -m training.hub_data build filter-labels --input labels.csv --output built
  python -m training.hub_data download --built built --output downloads --processes 8 --threads 64
      # http(s) URLs only (--allow-url-schemes file,ftp opts in to more), at most --max-image-bytes an image
  python -m training.hub_data export --built built --output hub/relsim-data --repo-id ORG/relsim-data
  python -m training.hub_data push --folder hub/relsim-data --repo-id ORG/relsim-data [--no-dry-run]

Console script: `relsim-data`.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from training.cli import add_command, add_commands, command_line, command_parser
from training.url_fetch import add_fetch_options, policy_from_options


MODULE = "training.hub_data"
logger = logging.getLogger("relsim.data")
SOURCES = ("seed-groups", "anonymous-captions", "random-pool", "filter-labels")


def build(args: argparse.Namespace) -> None:
    """Builds one source's configuration(s); the report is written first, and a split that kept no row stops the
    build before anything is saved (an earlier good build in `--output` stays)."""
    from training.hub_data.captions import build_anonymous_captions, build_random_pool
    from training.hub_data.features import ANONYMOUS_CAPTIONS, FILTER_LABELS, RANDOM_POOL
    from training.hub_data.filter_labels import build_filter_labels
    from training.hub_data.seed_groups import build_seed_groups
    from training.hub_data.store import save_built
    from training.hub_data.validation import RejectionLog, require_kept_rows

    log = RejectionLog(strict=args.strict)
    if args.source == "seed-groups":
        outputs = build_seed_groups(args.input, log)
    elif args.source == "anonymous-captions":
        splits = {"train": args.train, **({"test": args.test} if args.test else {})}
        outputs = {ANONYMOUS_CAPTIONS: build_anonymous_captions(splits, log)}
        if args.image_dir is not None:  # local images (e.g. the pipeline's hand-off): attached now, no download
            from training.hub_data.images import attach_local_images

            outputs[ANONYMOUS_CAPTIONS], _ = attach_local_images(outputs[ANONYMOUS_CAPTIONS], args.image_dir)
    elif args.source == "random-pool":
        outputs = {RANDOM_POOL: build_random_pool(args.input, log)}
    else:
        outputs = {FILTER_LABELS: build_filter_labels(args.input, log)}
    report = log.write(args.output / f"rejected_{args.source.replace('-', '_')}.jsonl")
    given = (getattr(args, name, None) for name in ("input", "train", "test"))
    require_kept_rows(outputs, ", ".join(str(path) for path in given if path is not None), log, report)
    for config, splits in outputs.items():
        save_built(args.output, config, splits)
        sizes = ", ".join(f"{split} {len(data)}" for split, data in splits.items())
        logger.info("built %s (%s rows) in %s", config, sizes, args.output / config)


def download(args: argparse.Namespace) -> None:
    from transformers.utils.logging import tqdm

    from training.hub_data.images import attach_images, download_images, downloaded_images, unique_urls
    from training.hub_data.store import load_built, save_built

    policy = policy_from_options(args)
    built = load_built(args.built)
    report = download_images(
        unique_urls(built), args.output, args.image_size, args.processes, args.threads, args.timeout, policy
    )
    files, failures = downloaded_images(args.output / "images")
    failures.update({row["image_hash"]: row["reason"] for row in report.refused})
    for config, splits in tqdm(built.items(), desc="attaching images", unit="config"):
        save_built(args.built, config, attach_images(config, splits, files, failures, report))
    path = args.output / "download_report.json"
    path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    logger.info("%d rows have no image; they are listed in %s", len(report.missing), path)


def export(args: argparse.Namespace) -> None:
    from training.hub_data.export import export_hub_folder
    from training.hub_data.store import load_built

    export_hub_folder(load_built(args.built), args.output, args.repo_id, args.max_rows_per_shard)


def push(args: argparse.Namespace) -> None:
    from training.hub_data.publish import push_dataset_folder

    push_dataset_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private)


def _add_build_source(sources: argparse._SubParsersAction, source: str, help: str) -> argparse.ArgumentParser:
    parser = add_command(sources, source, help)
    if source == "anonymous-captions":
        parser.add_argument("--train", type=Path, required=True, help="training-split captions (jsonl)")
        parser.add_argument("--test", type=Path, help="test-split captions (jsonl)")
        parser.add_argument(
            "--image-dir", type=Path, help="local <image_hash>.<ext> images to attach (rows with an empty url_link)"
        )
    else:
        parser.add_argument("--input", type=Path, required=True, help="the source file")
    parser.add_argument("--output", type=Path, required=True, help="folder of built datasets")
    parser.add_argument("--strict", action="store_true", help="stop at the first rejected row")
    parser.set_defaults(run=build, source=source)
    return parser


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    steps = add_commands(top)

    building = add_command(steps, "build", "validate a source file and build its dataset(s)")
    sources = add_commands(building, dest="source")
    _add_build_source(sources, "seed-groups", "seed_group.json: a list of {anonymous_caption, image_urls}")
    _add_build_source(sources, "anonymous-captions", "captions jsonl: {image_hash, caption, url_link} rows")
    _add_build_source(sources, "random-pool", "random-pool jsonl: {image_hash, url_link} rows")
    _add_build_source(sources, "filter-labels", "filter labels, jsonl or csv: url, label[, image_hash, annotator]")

    downloading = add_command(steps, "download", "fetch every URL with img2dataset and attach the images")
    downloading.add_argument("--built", type=Path, required=True, help="folder of built datasets")
    downloading.add_argument("--output", type=Path, required=True, help="img2dataset's folder (resumable)")
    downloading.add_argument("--image-size", type=int, default=448, help="shorter side resized to at most this")
    downloading.add_argument("--processes", type=int, default=1, help="img2dataset processes")
    downloading.add_argument("--threads", type=int, default=16, help="img2dataset threads per process")
    downloading.add_argument("--timeout", type=int, default=10, help="seconds per download")
    add_fetch_options(downloading)
    downloading.set_defaults(run=download)

    exporting = add_command(steps, "export", "write parquet shards and the dataset card")
    exporting.add_argument("--built", type=Path, required=True, help="folder of built datasets")
    exporting.add_argument("--output", type=Path, required=True, help="folder to write the Hub dataset into")
    exporting.add_argument("--repo-id", required=True, help="the dataset repository, e.g. ORG/relsim-data")
    exporting.add_argument("--max-rows-per-shard", type=int, default=10_000, help="rows per parquet shard")
    exporting.set_defaults(run=export)

    pushing = add_command(steps, "push", "upload an exported folder (a dry run unless --no-dry-run)")
    pushing.add_argument("--folder", type=Path, required=True, help="the exported folder")
    pushing.add_argument("--repo-id", required=True, help="the dataset repository, e.g. ORG/relsim-data")
    pushing.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=True, help="only list files")
    pushing.add_argument("--private", action="store_true", help="create the repository as private")
    pushing.set_defaults(run=push)
    return top


main, program = command_line(MODULE, parser)

if __name__ == "__main__":
    raise SystemExit(program())
