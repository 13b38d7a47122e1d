"""Score relsim folders on the synthetic relational benchmark, next to the attribute baselines:

python -m training.evaluation synthetic --model relsim-final [--model other=path] --output benchmark-report
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.reporting.tables import markdown_table, rows_from_table
from training.evaluation.synthetic_report import METRIC_COLUMNS, write_report
from training.evaluation.synthetic_retrieval import (
    PIXEL_COSINE,
    BenchmarkRun,
    attribute_baselines,
    held_out_pool,
    run_benchmark,
)


logger = logging.getLogger("relsim.benchmark")


def parse_models(values: Sequence[str]) -> dict[str, str]:
    """`path` or `name=path` entries, named after the folder by default."""
    models = {}
    for value in values:
        name, _, path = value.rpartition("=") if "=" in value else (Path(value).name, "", value)
        models[name] = path
    return models


def main(argv: Sequence[str] | None = None) -> BenchmarkRun:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", default=[], help="relsim folder or hub id, optionally name=path")
    parser.add_argument("--num-per-family", type=int, default=50, help="held-out pool images per relation family")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=112, help="side of the generated images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output", type=Path, default=Path("benchmark-report"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = {name: RelSimMethod(path, device=args.device) for name, path in parse_models(args.model).items()}
    pool = held_out_pool(args.num_per_family, args.seed, args.image_size)
    run = run_benchmark({**attribute_baselines(), **models}, pool, batch_size=args.batch_size)
    shown = [*models, PIXEL_COSINE]
    write_report(run, args.output, grid_methods=shown, plot_methods=shown)
    table = markdown_table(rows_from_table(run.table), columns=METRIC_COLUMNS)
    logger.info("\n%s\nreport: %s", table, args.output / "report.md")
    return run


if __name__ == "__main__":
    main()
