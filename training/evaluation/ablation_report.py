"""The ablation's report folder: `report.md` (the table, mean ± std over seeds, and what each variant is),
`report.json` (every run and the summary) and `ablation.png` (a bar chart with one group per metric)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.evaluation.ablation import REPORTED_METRICS, AblationPlan, Variant


CHART_FILE = "ablation.png"
METRIC_HINTS = {"mAP": "higher is better", "recall@1": "higher is better", "attribute trap": "lower is better"}


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`{metric: {"mean", "std"}}` over a variant's runs, for the reported metrics and the seconds per step."""
    summary = {}
    for metric in REPORTED_METRICS:
        mean, std = mean_and_std([run["metrics"][metric] for run in runs])
        summary[metric] = {"mean": mean, "std": std}
    mean, std = mean_and_std([run["seconds_per_step"] for run in runs])
    summary["seconds per step"] = {"mean": mean, "std": std}
    return summary


def _cell(entry: Mapping[str, float], seeds: int, digits: int = 3) -> str:
    text = f"{entry['mean']:.{digits}f}"
    return f"{text} ± {entry['std']:.{digits}f}" if seeds > 1 else text


def markdown(
    plan: AblationPlan, variants: Sequence[Variant], summaries: Mapping[str, Mapping], seeds: int, steps: int
) -> str:
    columns = [*REPORTED_METRICS, "s/step"]
    lines = [
        "# Ablation: objective options and tuned baselines on the synthetic benchmark",
        "",
        f"Each variant trains from `{plan.recipe}` for the same {steps} steps (warm-up {plan.warmup_fraction:.0%}), "
        f"seeds 0..{seeds - 1} (training order and new-parameter initialisation), then embeds the held-out pool: "
        f"{plan.pool_num_per_family} images per relation family drawn with shapes and colours training never shows "
        f"(pool seed {plan.pool_seed}); every image queries all the others. "
        + (f"Mean ± sample standard deviation over {seeds} seeds." if seeds > 1 else "One seed: no spread."),
        "",
        "| variant | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for variant in variants:
        summary = summaries[variant.name]
        cells = [_cell(summary[metric], seeds) for metric in REPORTED_METRICS]
        cells.append(_cell(summary["seconds per step"], seeds, digits=2))
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *[f"- **{metric}**: {METRIC_HINTS[metric]}." for metric in REPORTED_METRICS],
        "- **s/step**: training wall time per step on this machine (data loading included).",
        "",
        "## Variants",
        "",
        *[
            f"- **{variant.name}**: {variant.about or 'no description'}; overrides "
            f"`{json.dumps(variant.overrides, sort_keys=True)}`"
            for variant in variants
        ],
        "",
        f"![ablation bar chart]({CHART_FILE})",
    ]
    return "\n".join(lines) + "\n"


def draw_chart(variants: Sequence[Variant], summaries: Mapping[str, Mapping], path: Path, seeds: int) -> Path:
    """One group of bars per metric, one bar per variant, with ± one standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    positions = np.arange(len(REPORTED_METRICS))
    width = 0.8 / max(len(variants), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(variants) + 3), 4.0), layout="constrained")
    colours = plt.get_cmap("tab10")
    for index, variant in enumerate(variants):
        summary = summaries[variant.name]
        means = [summary[metric]["mean"] for metric in REPORTED_METRICS]
        errors = [summary[metric]["std"] for metric in REPORTED_METRICS] if seeds > 1 else None
        axes.bar(
            positions + (index - (len(variants) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=2,
            label=variant.name,
            color=colours(index % 10),
        )
    axes.set_xticks(positions, [f"{metric}\n({METRIC_HINTS[metric]})" for metric in REPORTED_METRICS])
    axes.set_ylim(0, 1)
    axes.set_ylabel(f"mean over {seeds} seed{'s' if seeds > 1 else ''}")
    axes.set_title("held-out synthetic benchmark")
    axes.legend(fontsize="small", ncols=2)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_ablation_report(
    plan: AblationPlan,
    results: Mapping[str, Sequence[Mapping[str, Any]]],
    output_dir: str | Path,
    seeds: int,
    steps: int,
) -> dict[str, Path]:
    """Writes report.md, report.json and the bar chart for `results` (`{variant: [run result, ...]}`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    variants = [variant for variant in plan.variants if variant.name in results]
    summaries = {name: summarise(runs) for name, runs in results.items()}
    document = {
        "plan": plan.source,
        "recipe": str(plan.recipe),
        "steps": steps,
        "seeds": seeds,
        "pool": {"num_per_family": plan.pool_num_per_family, "seed": plan.pool_seed},
        "variants": [
            {
                "name": variant.name,
                "about": variant.about,
                "overrides": variant.overrides,
                "summary": summaries[variant.name],
                "runs": [
                    {key: run[key] for key in ("seed", "steps", "seconds_per_step", "train_loss", "metrics")}
                    for run in results[variant.name]
                ],
            }
            for variant in variants
        ],
    }
    written = {
        "report.json": output_dir / "report.json",
        "report.md": output_dir / "report.md",
        CHART_FILE: output_dir / CHART_FILE,
    }
    written["report.json"].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    written["report.md"].write_text(markdown(plan, variants, summaries, seeds, steps), encoding="utf-8")
    draw_chart(variants, summaries, written[CHART_FILE], seeds)
    return written
