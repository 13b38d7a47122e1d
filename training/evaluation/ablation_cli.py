"""Ablate the training objective on the synthetic benchmark: every variant of a plan (default relsim loss, each
objective option, all options, tuned CLIP and DINOv2 baselines) trained for the same reduced step count over
several seeds, then a report with mean ± std and a bar chart.

  python -m training.evaluation ablate --output ablation-report [--seeds 3] [--steps 1000]
  python -m training.evaluation ablate --output ablation-report --variants relsim tuned-clip tuned-dinov2

Finished runs are kept under OUTPUT/runs/ and skipped on a rerun with the same settings.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.cli import run_sub_command


logger = logging.getLogger("relsim.eval")
HELP = "train objective variants and tuned baselines for a fixed step count and compare them on the benchmark"
DEFAULT_PLAN = Path(__file__).resolve().parents[1] / "configs" / "ablation-tiny-cpu.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, required=True, help="folder of the report and the runs")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    parser.add_argument("--steps", type=int, help="training steps of every run (default: the plan's)")
    parser.add_argument(
        "--plan", type=Path, default=DEFAULT_PLAN, help="the ablation plan (YAML); default: ablation-tiny-cpu.yaml"
    )
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="run only these variants of the plan")
    parser.add_argument("--batch-size", type=int, default=64, help="images per embedding forward")


def run(args: argparse.Namespace) -> Any:
    from training.cpu_threads import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads: two spinning OpenMP threads on a busy machine run ten times slower
    from training.errors import import_extra

    import_extra("matplotlib", "eval", "the ablation bar chart")  # missing: say so before hours of training
    from training.evaluation.ablation import read_plan, run_ablation
    from training.evaluation.ablation_report import write_ablation_report

    plan = read_plan(args.plan)
    steps = args.steps or plan.steps
    results = run_ablation(plan, args.output, args.seeds, steps, args.variants, args.batch_size)
    written = write_ablation_report(plan, results, args.output, args.seeds, steps)
    logger.info(
        "\n%s\nreport: %s", written["report.md"].read_text(encoding="utf-8").split("\n## ")[0], written["report.md"]
    )
    return results


def main(argv: Sequence[str] | None = None) -> Any:
    """`python -m training.evaluation ablate ...` from Python: each variant's run results; errors propagate."""
    return run_sub_command("training.evaluation", "ablate", __doc__, add_arguments, run, argv)
