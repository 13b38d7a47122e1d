"""relsim's dataset pipeline:

python -m training.hub_data build seed-groups --input seed_group.json --output built
python -m training.hub_data build anonymous-captions --train train.jsonl --test test.jsonl --output built
python -m training.hub_data build random-pool --input random_pool.jsonl --output built
python -m training.hub_data build filter-labels --input labels.csv --output built
python -m training.hub_data download --built built --output downloads --processes 8 --threads 64
python -m training.hub_data export --built built --output hub/relsim-data --repo-id ORG/relsim-data
python -m training.hub_data push --folder hub/relsim-data --repo-id ORG/relsim-data [--no-dry-run]
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from transformers.utils.logging import tqdm

from training.hub_data.captions import build_anonymous_captions, build_random_pool
from training.hub_data.export import export_hub_folder
from training.hub_data.features import ANONYMOUS_CAPTIONS, FILTER_LABELS, RANDOM_POOL
from training.hub_data.filter_labels import build_filter_labels
from training.hub_data.images import attach_images, download_images, downloaded_images, unique_urls
from training.hub_data.publish import push_dataset_folder
from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.store import load_built, save_built
from training.hub_data.validation import RejectionLog, require_kept_rows


logger = logging.getLogger("relsim.datasets")


def build(args: argparse.Namespace) -> None:
    """Builds one source's configuration(s); the report is written first, and a split that kept no row stops the
    build before anything is saved (an earlier good build in `--output` stays)."""
    log = RejectionLog(strict=args.strict)
    if args.source == "seed-groups":
        outputs = build_seed_groups(args.input, log)
    elif args.source == "anonymous-captions":
        splits = {"train": args.train, **({"test": args.test} if args.test else {})}
        outputs = {ANONYMOUS_CAPTIONS: build_anonymous_captions(splits, log)}
    elif args.source == "random-pool":
        outputs = {RANDOM_POOL: build_random_pool(args.input, log)}
    else:
        outputs = {FILTER_LABELS: build_filter_labels(args.input, log)}
    report = log.write(args.output / f"rejected_{args.source.replace('-', '_')}.jsonl")
    sources = ", ".join(str(path) for path in (args.input, args.train, args.test) if path is not None)
    require_kept_rows(outputs, sources, log, report)
    for config, splits in outputs.items():
        save_built(args.output, config, splits)
        sizes = ", ".join(f"{split} {len(data)}" for split, data in splits.items())
        logger.info("built %s (%s rows) in %s", config, sizes, args.output / config)


def download(args: argparse.Namespace) -> None:
    built = load_built(args.built)
    report = download_images(
        unique_urls(built), args.output, args.image_size, args.processes, args.threads, args.timeout
    )
    files, failures = downloaded_images(args.output / "images")
    for config, splits in tqdm(built.items(), desc="attaching images", unit="config"):
        save_built(args.built, config, attach_images(config, splits, files, failures, report))
    path = args.output / "download_report.json"
    path.write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    logger.info("%d rows have no image; they are listed in %s", len(report.missing), path)


def export(args: argparse.Namespace) -> None:
    export_hub_folder(load_built(args.built), args.output, args.repo_id, args.max_rows_per_shard)


def push(args: argparse.Namespace) -> None:
    push_dataset_folder(args.folder, args.repo_id, dry_run=args.dry_run, private=args.private)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = top.add_subparsers(dest="step", required=True)

    building = steps.add_parser("build", help="validate a source file and build its dataset(s)")
    building.add_argument("source", choices=["seed-groups", "anonymous-captions", "random-pool", "filter-labels"])
    building.add_argument("--input", type=Path, help="seed_group.json, random-pool jsonl, or labels jsonl/csv")
    building.add_argument("--train", type=Path, help="anonymous captions: training jsonl")
    building.add_argument("--test", type=Path, help="anonymous captions: test jsonl")
    building.add_argument("--output", type=Path, required=True, help="folder of built datasets")
    building.add_argument("--strict", action="store_true", help="fail on the first rejected row")
    building.set_defaults(run=build)

    downloading = steps.add_parser("download", help="fetch every URL with img2dataset and attach the images")
    downloading.add_argument("--built", type=Path, required=True)
    downloading.add_argument("--output", type=Path, required=True, help="img2dataset's folder (resumable)")
    downloading.add_argument("--image-size", type=int, default=448)
    downloading.add_argument("--processes", type=int, default=1)
    downloading.add_argument("--threads", type=int, default=16)
    downloading.add_argument("--timeout", type=int, default=10)
    downloading.set_defaults(run=download)

    exporting = steps.add_parser("export", help="write parquet shards and the dataset card")
    exporting.add_argument("--built", type=Path, required=True)
    exporting.add_argument("--output", type=Path, required=True)
    exporting.add_argument("--repo-id", required=True)
    exporting.add_argument("--max-rows-per-shard", type=int, default=10_000)
    exporting.set_defaults(run=export)

    pushing = steps.add_parser("push", help="upload an exported folder (dry run unless --no-dry-run)")
    pushing.add_argument("--folder", type=Path, required=True)
    pushing.add_argument("--repo-id", required=True)
    pushing.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=True)
    pushing.add_argument("--private", action="store_true")
    pushing.set_defaults(run=push)
    return top


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.step == "build":
        needed = ["train"] if args.source == "anonymous-captions" else ["input"]
        missing = [f"--{name}" for name in needed if getattr(args, name) is None]
        if missing:
            parser().error(f"build {args.source} needs {' '.join(missing)}")
    args.run(args)


if __name__ == "__main__":
    main()
