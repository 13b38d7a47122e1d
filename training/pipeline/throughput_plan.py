"""Planning on paper: GPU-hours and cluster sizes of a pipeline run, projected from per-GPU throughputs.

Nothing here is measured: the rates are inputs. `DESIGN_RATES` holds the figures the design states for
Qwen2.5-VL-7B at 448x448 in bf16 on one H100 (the embedding feasibility probe: 90.8 img/s) and the assumptions that
extend them to the other stages (each labelled in `assumption`). `python -m training.pipeline.throughput_plan`
prints the projection as a markdown table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class StageRate:
    """One GPU stage: images per second per GPU, the share of the input images that reach it, and where the rate
    comes from."""

    stage: str
    images_per_second: float
    share_of_input: float = 1.0
    assumption: str = ""


KEEP_SHARE = 0.05  # assumed share of web images the relational filter keeps (the paper reports its kept count only)
DESIGN_RATES = (
    StageRate("filter", 90.8, 1.0, "one 7B forward per image, as the embedding probe (90.8 img/s); no generation"),
    StageRate("caption", 10.0, KEEP_SHARE, "assumed: prefill + ~48 greedy tokens with transformers, not measured"),
    StageRate("embed", 90.8, KEEP_SHARE, "the design's probe: one-call window attention + compiled vision blocks"),
)


@dataclass(frozen=True)
class Projection:
    images: int
    gpu_hours: dict[str, float]
    total_gpu_hours: float
    gpus_needed: int
    wall_clock_hours: float


def project(
    images: int,
    rates: Sequence[StageRate] = DESIGN_RATES,
    wall_clock_hours: float = 24.0 * 7,
    utilization: float = 0.8,
    gpus_per_node: int = 8,
) -> Projection:
    """GPU-hours per stage (`images * share / rate / 3600`) and the GPUs (rounded up to whole nodes) that finish the
    run in `wall_clock_hours` when each GPU is busy `utilization` of the time (loading, shard writes, stragglers)."""
    if images < 0 or wall_clock_hours <= 0 or not 0 < utilization <= 1 or gpus_per_node < 1:
        raise ValueError("images >= 0, wall_clock_hours > 0, 0 < utilization <= 1 and gpus_per_node >= 1 are needed")
    hours = {rate.stage: images * rate.share_of_input / rate.images_per_second / 3600.0 for rate in rates}
    total = sum(hours.values())
    gpus = math.ceil(total / (wall_clock_hours * utilization))
    gpus = math.ceil(gpus / gpus_per_node) * gpus_per_node if gpus else 0
    return Projection(images, hours, total, gpus, wall_clock_hours)


def projection_table(sizes: Sequence[int] = (1_000_000, 100_000_000, 2_000_000_000), **options) -> str:
    """A markdown table of `project` for each pool size."""
    stages = [rate.stage for rate in options.get("rates", DESIGN_RATES)]
    header = f"| images | {' | '.join(f'{stage} GPU-h' for stage in stages)} | total GPU-h | H100s for the wall clock |"
    lines = [header, "|" + "---|" * (len(stages) + 3)]
    for size in sizes:
        result = project(size, **options)
        cells = " | ".join(f"{result.gpu_hours[stage]:,.1f}" for stage in stages)
        lines.append(
            f"| {size:,} | {cells} | {result.total_gpu_hours:,.1f} | {result.gpus_needed} "
            f"({result.wall_clock_hours:g} h) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(projection_table() + "\n")
