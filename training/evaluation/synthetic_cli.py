"""Score relsim folders on the synthetic relational benchmark, next to the attribute baselines.

  python -m training.evaluation synthetic --model relsim-final [--model other=path] --output benchmark-report
  python -m training.evaluation synthetic --model relsim-final --tuned-encoder tuned-clip=runs/tuned-clip/final
  python -m training.evaluation synthetic --world families --model relsim-final --num-per-family 50

The default world is the compositional one (`--world relations`): held-out looks of every valid relation,
--num-per-relation images each, scored apart for the relations training saw and the ones it never saw (image->image,
relation-text->image, per factor, attribute trap, chance levels), with the issue's three targets checked for every
--model and --tuned-encoder. `--world families` is the eight-family benchmark as before.

A relsim folder is loaded with the installed modeling_relsim classes; a folder of another model type is refused
unless --trust-remote-code lets its own code run.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.cli import add_device_options, resolve_device, run_sub_command


logger = logging.getLogger("relsim.eval")
HELP = "score relsim folders on the generated relational benchmark, next to attribute baselines"


def parse_models(values: Sequence[str]) -> dict[str, str]:
    """`path` or `name=path` entries, named after the folder by default."""
    models = {}
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else (Path(value).name, "", value)
        models[name] = path
    return models


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", default=[], help="relsim folder or hub id, optionally name=path")
    parser.add_argument(
        "--tuned-encoder",
        action="append",
        default=[],
        help="a tuned CLIP/DINOv2 folder (training.trainer train with image_encoder), optionally name=path",
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="load each --model with the code saved beside it (AutoModel); without it only relsim folders load",
    )
    parser.add_argument(
        "--world",
        choices=("relations", "families"),
        default="relations",
        help="the compositional world with unseen relations (default), or the eight relation families",
    )
    parser.add_argument(
        "--num-per-relation", type=int, default=5, help="held-out pool images per relation (relations world)"
    )
    parser.add_argument(
        "--num-per-family", type=int, default=50, help="held-out pool images per relation family (families world)"
    )
    parser.add_argument(
        "--text-encoder",
        default="sentence-transformers/all-MiniLM-L6-v2",
        help="the caption encoder the models were trained against: embeds the relation-text queries (relations world)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated pool")
    parser.add_argument("--image-size", type=int, default=112, help="side of the generated images")
    parser.add_argument("--batch-size", type=int, default=64, help="images per relsim forward")
    add_device_options(parser, dtype=False)
    parser.add_argument("--output", type=Path, default=Path("benchmark-report"), help="folder of the report")


def run(args: argparse.Namespace) -> Any:
    from training.evaluation.methods.relsim import RelSimMethod
    from training.evaluation.methods.tuned_encoder import TunedEncoderMethod
    from training.evaluation.reporting.tables import markdown_table, rows_from_table
    from training.evaluation.synthetic_report import METRIC_COLUMNS, write_report
    from training.evaluation.synthetic_retrieval import PIXEL_COSINE, attribute_baselines, held_out_pool, run_benchmark

    device = resolve_device(args.device)
    models = {
        name: RelSimMethod(path, device=device, trust_remote_code=args.trust_remote_code)
        for name, path in parse_models(args.model).items()
    }
    models.update(
        {name: TunedEncoderMethod(path, device=device) for name, path in parse_models(args.tuned_encoder).items()}
    )
    if args.world == "relations":
        return run_relations(args, models)
    pool = held_out_pool(args.num_per_family, args.seed, args.image_size)
    run = run_benchmark({**attribute_baselines(), **models}, pool, batch_size=args.batch_size)
    shown = [*models, PIXEL_COSINE]
    write_report(run, args.output, grid_methods=shown, plot_methods=shown)
    table = markdown_table(rows_from_table(run.table), columns=METRIC_COLUMNS)
    logger.info("\n%s\nreport: %s", table, args.output / "report.md")
    return run


def run_relations(args: argparse.Namespace, models: dict[str, Any]) -> Any:
    """The compositional world: seen and unseen relations apart, the targets checked for every model."""
    from training.evaluation.relation_benchmark import UNSEEN_METRICS, relation_pool, run_relation_benchmark
    from training.evaluation.relation_report import relation_verdict, verdict_markdown, write_relation_report
    from training.evaluation.reporting.tables import markdown_table, rows_from_table
    from training.evaluation.synthetic_retrieval import PIXEL_COSINE, attribute_baselines

    pool = relation_pool(args.num_per_relation, args.seed, args.image_size)
    run = run_relation_benchmark(
        {**attribute_baselines(), **models}, pool, batch_size=args.batch_size, text_encoder=args.text_encoder
    )
    verdicts = [verdict_markdown(relation_verdict(run.table, run.chance, name), name) for name in models]
    write_relation_report(run, args.output, grid_methods=[*models, PIXEL_COSINE], summary="\n\n".join(verdicts))
    table = markdown_table(rows_from_table(run.table), columns=UNSEEN_METRICS)
    logger.info("\n%s\n%s\nreport: %s", table, "\n\n".join(verdicts), args.output / "report.md")
    return run


def main(argv: Sequence[str] | None = None) -> Any:
    """`python -m training.evaluation synthetic ...` from Python: the `RelationBenchmarkRun` (or the families'
    `BenchmarkRun`); errors propagate."""
    return run_sub_command("training.evaluation", "synthetic", __doc__, add_arguments, run, argv)
