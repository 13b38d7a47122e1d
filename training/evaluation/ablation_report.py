"""The ablation's report folder: `report.md` (the table, mean ± std over seeds, and what each variant is),
`report.json` (every run and the summary) and `ablation.png` (a bar chart with one group per metric)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from training.evaluation.ablation import AblationPlan, Variant
from training.evaluation.relation_report import format_mean_std, seeds_summary


CHART_FILE = "ablation.png"
HIGHER, LOWER = "higher is better", "lower is better"
METRIC_HINTS = {
    "mAP": HIGHER,
    "recall@1": HIGHER,
    "attribute trap": LOWER,
    "seen mAP": f"relations training saw, new looks; {HIGHER}",
    "unseen mAP": f"relations training never saw; {HIGHER}",
    "unseen text mAP": f"an unseen relation's caption ranks the pool; {HIGHER}",
    "unseen attribute trap": f"unseen queries fooled by shape or colour; {LOWER}",
}


def summarise(runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """`{metric: {"mean", "std"}}` over a variant's runs, for `metrics` and the seconds per step."""
    tables = [{"run": {**run["metrics"], "seconds per step": run["seconds_per_step"]}} for run in runs]
    summary = seeds_summary(tables)["run"]
    return {metric: summary[metric] for metric in (*metrics, "seconds per step")}


def pool_size(plan: AblationPlan) -> dict[str, int]:
    if plan.world == "relations":
        return {"num_per_relation": plan.pool_num_per_relation}
    return {"num_per_family": plan.pool_num_per_family}


def pool_description(plan: AblationPlan) -> str:
    """What the variants are scored on, in words."""
    if plan.world == "relations":
        return (
            f"{plan.pool_num_per_relation} images of every relation of the compositional world, drawn with shapes and "
            "colours training never shows; a quarter of the relations never appear in training (unseen), the "
            "others did (seen)"
        )
    return f"{plan.pool_num_per_family} images per relation family drawn with shapes and colours training never shows"


def _cell(entry: Mapping[str, float], seeds: int, digits: int = 3) -> str:
    if seeds > 1:
        return format_mean_std(entry, digits)
    return "–" if math.isnan(entry["mean"]) else f"{entry['mean']:.{digits}f}"


def markdown(
    plan: AblationPlan, variants: Sequence[Variant], summaries: Mapping[str, Mapping], seeds: int, steps: int
) -> str:
    metrics = plan.reported_metrics
    columns = [*metrics, "s/step"]
    lines = [
        "# Ablation: objective options and tuned baselines on the synthetic benchmark",
        "",
        f"Each variant trains from `{plan.recipe}` for the same {steps} steps (warm-up {plan.warmup_fraction:.0%}), "
        f"seeds 0..{seeds - 1} (training order and new-parameter initialisation), then embeds the held-out pool: "
        f"{pool_description(plan)} (pool seed {plan.pool_seed}); every image queries all the others. "
        + (f"Mean ± sample standard deviation over {seeds} seeds." if seeds > 1 else "One seed: no spread."),
        "",
        "| variant | " + " | ".join(columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for variant in variants:
        summary = summaries[variant.name]
        cells = [_cell(summary[metric], seeds) for metric in metrics]
        cells.append(_cell(summary["seconds per step"], seeds, digits=2))
        lines.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        *[f"- **{metric}**: {METRIC_HINTS[metric]}." for metric in metrics],
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


def draw_chart(
    variants: Sequence[Variant], summaries: Mapping[str, Mapping], path: Path, seeds: int, metrics: Sequence[str]
) -> Path:
    """One group of bars per metric, one bar per variant, with ± one standard deviation as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    positions = np.arange(len(metrics))
    width = 0.8 / max(len(variants), 1)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(variants) + 3), 4.0), layout="constrained")
    colours = plt.get_cmap("tab10")
    for index, variant in enumerate(variants):
        summary = summaries[variant.name]
        means = [summary[metric]["mean"] for metric in metrics]
        errors = [summary[metric]["std"] for metric in metrics] if seeds > 1 else None
        axes.bar(
            positions + (index - (len(variants) - 1) / 2) * width,
            means,
            width,
            yerr=errors,
            capsize=2,
            label=variant.name,
            color=colours(index % 10),
        )
    axes.set_xticks(positions, [f"{metric}\n({METRIC_HINTS[metric].rsplit('; ', 1)[-1]})" for metric in metrics])
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
    summaries = {name: summarise(runs, plan.reported_metrics) for name, runs in results.items()}
    document = {
        "plan": plan.source,
        "recipe": str(plan.recipe),
        "steps": steps,
        "seeds": seeds,
        "world": plan.world,
        "pool": {**pool_size(plan), "seed": plan.pool_seed},
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
    draw_chart(variants, summaries, written[CHART_FILE], seeds, plan.reported_metrics)
    return written
