"""The offline end-to-end demo: generate the compositional relational world, train a tiny relsim from scratch with
the project's trainer and recipe, and score it on relations it never saw, against look-matching baselines.

    python -m training.demo --output relsim-demo              # CPU, under 10 minutes on 2 idle cores
    python -m training.demo --output relsim-demo --seeds 0 1 2  # the same three times: mean and spread per figure
    python -m training.demo --device cuda --preset small      # a bigger tiny model on a GPU

Training sees 305 of the world's 407 relations (`training/synthetic/relation_split.json`), drawn in the training
shapes and colours; the benchmark pool draws every relation in held-out shapes and colours. Writes
`<output>/report.md`, which leads with the relations training never saw (neighbour pictures of unseen-relation
queries, a relation-text query for an unseen relation), then the seen ones, and ends by indexing the pool for search
(`<output>/search-index`). `<output>/results.json` holds the figures. With several seeds each run is in
`<output>/seed-<N>/` and the top report gives each figure's mean ± std. The trained model is in `<output>/run/final`
(one seed) or `<output>/seed-<N>/run/final`. Console script: `relsim-demo`. On the CPU a run repeats to the last
digit: the recipe fixes the seeds and the torch thread count and turns on torch's deterministic algorithms. Its time
is the CPU time the machine gives those threads, so OpenMP threads wait passively (they sleep instead of spinning)
and a busy machine slows the run in proportion instead of stalling it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.cli import command_parser, configure_logging, program_of
from training.cpu_threads import prefer_passive_waiting


if TYPE_CHECKING:
    from training.evaluation.relation_benchmark import RelationBenchmarkRun
    from training.search.showcase import SearchShowcase
    from training.trainer.arguments import RelSimTrainingArguments

MODULE = "training.demo"
logger = logging.getLogger("relsim.demo")

RECIPE = Path(__file__).parent / "configs" / "relations-tiny-cpu.yaml"
TRAINED, UNTRAINED = "relsim (trained)", "relsim (untrained)"
RESULTS_FILE = "results.json"
PRESETS = {
    "tiny": [],
    "small": ["--tiny-preset", "small", "--image-size", "224", "--synthetic-image-size", "224"],
}


def training_summary(run_dir: Path, seconds: float) -> str:
    """How training went, with each number explained."""
    state = json.loads((run_dir / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    lines = [
        f"Training: {state['global_step']} steps in {seconds / 60:.1f} min. The relsim here is a tiny model of "
        "Qwen2.5-VL's architecture trained from scratch on generated images of the 305 training relations of the "
        "compositional world, in the training shapes and colours only."
    ]
    if logged:
        first, last = logged[0], logged[-1]
        lines.append(
            f"The contrastive loss went from {first['loss']:.3f} to {last['loss']:.3f}, and the in-batch accuracy (how "
            "often an image's own caption is the closest of the batch's captions) from "
            f"{first['accuracy']:.3f} to {last['accuracy']:.3f}."
        )
    evaluation = run_dir / "eval_results.json"
    if evaluation.is_file():
        metrics = json.loads(evaluation.read_text())
        lines.append(
            "On held-out looks of every relation, seen and unseen, each image's own caption was the closest of all the "
            f"relation captions for {metrics['eval_recall@1']:.1%} of images (recall@1) and among the closest five "
            f"for {metrics['eval_recall@5']:.1%} (recall@5)."
        )
    return " ".join(lines)


def log_time_factors(training_arguments: RelSimTrainingArguments, passive: bool) -> None:
    """Says what the run's time depends on before the long part starts (the progress bar then shows elapsed<ETA)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"
    threads = training_arguments.torch_num_threads or "one per core"
    logger.info(
        "Training %d steps of %d images on %s torch threads (this machine: %s cores, load average %s). The time is "
        "the CPU time those threads get: about 7 minutes on 2 idle cores, longer in proportion to the share of the "
        "cores other processes take%s.",
        training_arguments.max_steps,
        training_arguments.per_device_train_batch_size,
        threads,
        cores,
        load,
        "" if passive else " and much worse, as OpenMP threads spin-wait (OMP_WAIT_POLICY is not PASSIVE)",
    )


def show_search(model, processor, run: RelationBenchmarkRun, folder: Path, report: Path) -> SearchShowcase:
    """The demo's last step: the trained model indexes the held-out pool for search (`training.search`); an image
    query and a relation-text query, both of relations training never saw, with their top 5 and "why" labels, and
    the relation-text mAP and why accuracy of seen and unseen relations, are added to the report."""
    from training.search.model import SearchModel
    from training.search.showcase import search_showcase

    showcase = search_showcase(SearchModel(model, processor, name=TRAINED), run.pool, folder)
    with report.open("a", encoding="utf-8") as out:
        out.write("\n" + showcase.markdown())
    return showcase


def parser() -> argparse.ArgumentParser:
    parser = command_parser(MODULE, __doc__)
    parser.add_argument("--output", type=Path, default=Path("relsim-demo"), help="folder of the report and the run")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the model trains")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="size of the model trained")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed (training and data)")
    parser.add_argument("--max-steps", type=int, help="override the recipe's training steps")
    parser.add_argument("--train-per-relation", type=int, help="override the recipe's training images per relation")
    parser.add_argument("--pool-per-relation", type=int, default=5, help="held-out benchmark images per relation")
    return parser


def training_overrides(args: argparse.Namespace, run_dir: Path, seed: int) -> list[str]:
    """The recipe overrides of one run: output folder, device, model size, seed and the short-run settings."""
    overrides = ["--output-dir", str(run_dir), "--use-cpu", str(args.device == "cpu").lower(), *PRESETS[args.preset]]
    overrides += ["--seed", str(seed), "--synthetic-seed", str(seed)]
    if args.device == "cuda":  # CUDA kernels differ by GPU, and some lack a deterministic version
        overrides += ["--full-determinism", "false"]
    if args.max_steps is not None:
        overrides += ["--max-steps", str(args.max_steps), "--logging-steps", str(max(1, args.max_steps // 4))]
        overrides += ["--warmup-steps", str(args.max_steps // 20)]
    if args.train_per_relation is not None:
        overrides += ["--synthetic-num-per-family", str(args.train_per_relation)]
    return overrides


def run_seed(args: argparse.Namespace, output: Path, seed: int, passive: bool) -> RelationBenchmarkRun:
    """Trains one relsim, benchmarks it with the baselines, writes `output/report.md` and `output/results.json`."""
    # heavy imports here, not at module level, so that `--help` and argument errors answer at once
    from modeling_relsim import RelSimModel, RelSimProcessor
    from training.evaluation.methods.relsim import RelSimMethod
    from training.evaluation.relation_benchmark import relation_pool, run_relation_benchmark
    from training.evaluation.relation_report import relation_verdict, verdict_markdown, write_relation_report
    from training.evaluation.synthetic_retrieval import PIXEL_COSINE, attribute_baselines
    from training.trainer.model_factory import build_base, load_model_arguments
    from training.trainer.train import main as train
    from training.trainer.train import parse_arguments

    run_dir = output / "run"
    training_argv = ["--config", str(RECIPE), *training_overrides(args, run_dir, seed)]
    log_time_factors(parse_arguments(training_argv)[2], passive)
    started = time.perf_counter()
    final = train(training_argv)
    training_seconds = time.perf_counter() - started

    image_size = 224 if args.preset == "small" else 112
    _, untrained = build_base(load_model_arguments(run_dir))
    trained = RelSimModel.from_pretrained(final)
    processor = RelSimProcessor.from_pretrained(final)
    device = "cuda" if args.device == "cuda" else "cpu"
    methods = {
        **attribute_baselines(),
        UNTRAINED: RelSimMethod(UNTRAINED, device=device, model=untrained, processor=processor),
        TRAINED: RelSimMethod(str(final), device=device, model=trained, processor=processor),
    }
    pool = relation_pool(args.pool_per_relation, seed=1, image_size=image_size)
    run = run_relation_benchmark(methods, pool)
    summary = verdict_markdown(relation_verdict(run.table, run.chance, TRAINED), TRAINED)
    notes = training_summary(run_dir, training_seconds)
    report = write_relation_report(run, output, grid_methods=[TRAINED, PIXEL_COSINE], summary=summary, notes=notes)
    showcase = show_search(trained, processor, run, output / "search-index", report)
    results = {"seed": seed, "table": run.table, "chance": run.chance, "search": showcase.metrics}
    results["training_seconds"] = training_seconds
    (output / RESULTS_FILE).write_text(json.dumps(results, indent=1) + "\n")
    logger.info("%s\n\n%s\nreport: %s\n%s", summary, notes, report, showcase.log_text())
    return run


def seeds_markdown(results: Sequence[dict[str, Any]]) -> str:
    """The figures of several seeds' `results.json`: each method's mean ± std, the targets judged on the means, and
    the search figures' mean ± std."""
    from training.evaluation.relation_benchmark import FACTOR_METRICS, SEEN_METRICS, UNSEEN_METRICS
    from training.evaluation.relation_report import (
        mean_table,
        relation_verdict,
        seeds_summary,
        summary_rows,
        verdict_markdown,
    )
    from training.evaluation.reporting.tables import markdown_table

    seeds = ", ".join(str(result["seed"]) for result in results)
    summary = seeds_summary([result["table"] for result in results])
    search = seeds_summary([{TRAINED: result["search"]} for result in results])
    chance = results[0]["chance"]

    def chance_row(columns: Sequence[str]) -> dict[str, str]:
        return {"method": "chance (random ranking)", **{c: f"{chance[c]:.3f}" for c in columns if c in chance}}

    lines = [
        f"# relsim on relations it never saw: {len(results)} seeds ({seeds})",
        "",
        "Each figure is the mean ± the standard deviation over the seeds (each seed draws its own training images and "
        "initialises its own model; the benchmark pool is the same). Relations training never saw:",
        "",
        markdown_table([*summary_rows(summary, UNSEEN_METRICS), chance_row(UNSEEN_METRICS)], columns=UNSEEN_METRICS),
        "",
        verdict_markdown(relation_verdict(mean_table(summary), chance, TRAINED), f"{TRAINED}, mean of the seeds"),
        "",
        "Which factors carry over to unseen relations (a neighbour counted right when it shares that one factor):",
        "",
        markdown_table([*summary_rows(summary, FACTOR_METRICS), chance_row(FACTOR_METRICS)], columns=FACTOR_METRICS),
        "",
        "Relations seen in training (in held-out looks):",
        "",
        markdown_table(summary_rows(summary, SEEN_METRICS), columns=SEEN_METRICS),
        "",
        "Search with the trained model (relation-text mAP and why accuracy, unseen and seen relations):",
        "",
        markdown_table(summary_rows(search, list(results[0]["search"])), columns=list(results[0]["search"])),
        "",
    ]
    return "\n".join(lines)


def write_seeds_report(output: Path, seed_folders: Sequence[Path]) -> Path:
    """The top report of a several-seed run, with links to each run's own report."""
    results = [json.loads((folder / RESULTS_FILE).read_text()) for folder in seed_folders]
    report = output / "report.md"
    links = ", ".join(f"[seed {result['seed']}]({folder.name}/report.md)" for result, folder in zip(
        results, seed_folders, strict=True
    ))  # fmt: skip
    report.write_text(seeds_markdown(results) + f"\nEach run's own report, with its pictures: {links}.\n")
    return report


def main(argv: Sequence[str] | None = None) -> Any:
    """Runs the demo; errors propagate (see `program` for the command-line behaviour). Returns the benchmark run (one
    seed) or the list of runs (several seeds)."""
    command = parser()
    args = command.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds):
        command.error(f"--seeds repeats a seed: {args.seeds}")
    configure_logging(getattr(args, "debug", False))
    passive = prefer_passive_waiting()  # before torch is first imported: OpenMP reads it once, when loaded
    started = time.perf_counter()
    if len(args.seeds) == 1:
        run = run_seed(args, args.output, args.seeds[0], passive)
    else:
        folders = [args.output / f"seed-{seed}" for seed in args.seeds]
        run = [run_seed(args, folder, seed, passive) for seed, folder in zip(args.seeds, folders, strict=True)]
        logger.info("report over %d seeds: %s", len(folders), write_seeds_report(args.output, folders))
    logger.info("demo finished in %.1f min", (time.perf_counter() - started) / 60)
    return run


program = program_of(MODULE, main, has_commands=False)


if __name__ == "__main__":
    raise SystemExit(program())
