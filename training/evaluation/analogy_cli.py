"""Score analogical generations: relsim, CLIP-I and LPIPS between source and generated (and reference) images.

  python -m training.evaluation analogy --triplets triplets.csv --model relsim-final --output analogy-report

Triplets: csv with a header `source,generated,reference,model` (reference and model optional) or jsonl with those
keys; paths relative to the file. Writes scores.jsonl, report.md / report.json (per-model tables) and
relational_vs_attribute.png. Bad rows (missing field or file, unreadable image) are listed with file and line.
LPIPS needs the `perceptual` extra (and torchvision); leave it out with --metrics relsim clip-i.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from training.cli import add_device_options, resolve_device


logger = logging.getLogger("relsim.eval")
HELP = "score analogy triplets (source, generated, reference) with relsim, CLIP-I and LPIPS, per generating model"
METRICS = ("relsim", "clip-i", "lpips")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--triplets", required=True, help="csv (with a header) or jsonl of triplets")
    parser.add_argument("--model", required=True, help="the relsim folder or hub id")
    parser.add_argument("--metrics", nargs="+", choices=METRICS, default=list(METRICS), help="metrics to score")
    parser.add_argument("--clip-model", help="CLIP weights for clip-i (default: the evaluation's CLIP-I model)")
    parser.add_argument(
        "--lpips-random-backbone",
        action="store_true",
        help="LPIPS on a random AlexNet trunk (offline; marked as a stand-in in the report)",
    )
    parser.add_argument(
        "--note",
        action="append",
        default=[],
        metavar="METRIC=TEXT",
        help='a note shown with a metric in every table, e.g. clip-i="random-weight stand-in"',
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward")
    add_device_options(parser, dtype=False)
    parser.add_argument("--output", type=Path, default=Path("analogy-report"), help="folder of the report")


def parse_notes(values: list[str]) -> dict[str, str]:
    notes = {}
    for value in values:
        metric, separator, text = value.partition("=")
        if not separator or metric not in METRICS or not text.strip():
            raise ValueError(f"--note {value!r}: expected METRIC=TEXT with METRIC one of {', '.join(METRICS)}")
        notes[metric] = text.strip()
    return notes


def run(args: argparse.Namespace) -> Any:
    from training.evaluation.analogy import read_triplets, score_triplets, write_analogy_report

    notes = parse_notes(args.note)
    triplets, bad = read_triplets(args.triplets)
    device = resolve_device(args.device)
    methods = {}
    for metric in args.metrics:
        if metric == "relsim":
            from training.evaluation.methods.relsim import RelSimMethod

            methods[metric] = RelSimMethod(args.model, device=device)
        elif metric == "clip-i":
            from training.evaluation.methods.vision_encoders import CLIP_DEFAULT, ClipImageMethod

            methods[metric] = ClipImageMethod(args.clip_model or CLIP_DEFAULT, device=device)
        else:
            from training.evaluation.methods.perceptual import LpipsMethod

            methods[metric] = LpipsMethod(device=device, pretrained_backbone=not args.lpips_random_backbone)
            if args.lpips_random_backbone:
                notes.setdefault("lpips", "random-weight stand-in (random AlexNet trunk, offline)")
    rows = score_triplets(triplets, methods, batch_size=args.batch_size)
    written = write_analogy_report(rows, bad, args.output, notes)
    logger.info("scored %d triplets (%d rows left out): %s", len(rows), len(bad), written["markdown"])
    return written
