"""relsim's data pipeline: images -> relational filter -> anonymous captions -> leak check -> relsim training data.

  python -m training.pipeline run --input IMAGES --output OUT --stages filter,caption,check,handoff \
      --recipe training/configs/pipeline-qwen2.5-vl-7b.yaml      # resumes; OUT/summary.json, OUT/handoff/
  python -m training.pipeline run --input urls.parquet --output OUT --stages download,filter,caption,embed,index \
      --recipe RECIPE.yaml --executor ray                        # on Ray (--ray-address auto: a running cluster)
  python -m training.pipeline filter train --recipe FILTER_SFT.yaml --labels built/filter_labels
  python -m training.pipeline filter score --input IMAGES --output OUT --recipe PIPELINE.yaml
  python -m training.pipeline filter evaluate --scores OUT/filter.jsonl --labels labels.csv --output filter-report
  python -m training.pipeline group-caption --seed-groups seed_group.json --images IMAGES_BY_URL_HASH --output groups
  python -m training.pipeline caption train --recipe CAPTIONER_SFT.yaml --seed-groups groups/seed_group.json \
      --images IMAGES_BY_URL_HASH
  python -m training.pipeline caption generate --input IMAGES --output OUT --recipe PIPELINE.yaml
  python -m training.pipeline caption evaluate --captions OUT/caption.jsonl --references groups/group_captions.jsonl
  python -m training.pipeline check --captions OUT/handoff/captions.jsonl --output check-report
  python -m training.pipeline demo --output pipeline-demo --seeds 0 1 2  # offline, CPU: the pipeline learns

Inputs (--input): a folder of images, a .jsonl/.csv list (`image` or `path`, `url`, optional `image_hash`), or a
`datasets` dataset (saved folder or Hub id) with an image column. The hand-off (OUT/handoff/captions.jsonl and
OUT/handoff/images/) is read by `python -m training.trainer train --captions-jsonl ... --image-dir ...` and by
`python -m training.hub_data build anonymous-captions --train ... --image-dir OUT/handoff/images` (local images keep
an empty url_link). Console script: `relsim-pipeline`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from training.cli import add_command, add_commands, command_parser, configure_logging, prog_name, run_program
from training.url_fetch import add_fetch_options, parse_url_schemes


MODULE = "training.pipeline"
logger = logging.getLogger("relsim.pipeline")
EXECUTORS = ("local", "ray")  # kept as strings so --help imports nothing


def _recipe(args: argparse.Namespace):
    """The run recipe with the command line's overrides (device, Ray address)."""
    from training.pipeline.run.recipe import load_run_recipe

    recipe = load_run_recipe(args.recipe)
    if args.device is not None:
        recipe.pipeline.device = recipe.embed.device = args.device
    if args.ray_address:
        recipe.ray.address = args.ray_address
    return recipe


def _executor(args: argparse.Namespace) -> str:
    return "ray" if args.executor == "ray" or args.ray_address else "local"


def _log_summary(summary, output: Path) -> None:
    for stage in summary.stages:
        logger.info(
            "%s: %d in (%d done earlier), %d kept, %d dropped, failed: %s", stage.stage, stage.rows_in,
            stage.done_before, stage.kept, stage.dropped, stage.failed or "none",
        )  # fmt: skip
    if summary.index:
        logger.info("index: %s", summary.index)
    logger.info("summary: %s", output / "summary.json")


def run_pipeline_command(args: argparse.Namespace):
    """`run`: the stages of `--stages` over the input, sharded, here or on Ray."""
    from training.pipeline.build import parse_stage_names
    from training.pipeline.run.pipeline_run import run_pipeline

    recipe = _recipe(args)
    if args.allow_url_schemes is not None:
        recipe.download.allow_url_schemes = list(parse_url_schemes(args.allow_url_schemes))
    if args.max_image_bytes is not None:
        recipe.download.max_image_bytes = args.max_image_bytes
    recipe.download.fetch_policy()  # a bad value is refused before the input is read
    summary = run_pipeline(
        args.input, args.output, parse_stage_names(args.stages), recipe, batch_size=args.batch_size,
        image_column=args.image_column, split=args.split, executor=_executor(args),
        allow_outside_list_folder=args.allow_outside_list_folder,
    )  # fmt: skip
    _log_summary(summary, Path(args.output))
    return summary


def _run_one_stage(args: argparse.Namespace, name: str):
    """`filter score` / `caption generate`: one stage through the sharded run, here or on Ray (same files)."""
    from training.pipeline.build import build_stages
    from training.pipeline.inputs import iter_input_rows
    from training.pipeline.run.sharded import run

    recipe = _recipe(args)
    rows = iter_input_rows(
        args.input, args.output / "input_images", args.image_column, args.split, args.allow_outside_list_folder
    )
    summary = run(
        rows, build_stages([name], recipe.pipeline, args.output), args.output,
        batch_size=args.batch_size or recipe.pipeline.batch_size, settings=recipe.ray, executor=_executor(args),
        stage_logs=[name],
    )  # fmt: skip
    _log_summary(summary, args.output)
    return summary


def filter_score(args: argparse.Namespace):
    return _run_one_stage(args, "filter")


def caption_generate(args: argparse.Namespace):
    return _run_one_stage(args, "caption")


def filter_train(args: argparse.Namespace) -> dict:
    from training.pipeline.filter.commands import train_filter_command

    report = train_filter_command(args.recipe, args.labels, args.synthetic_per_family, args.output)
    logger.info("filter on held-out labels: %s", json.dumps(report.get("trained", {}), indent=1))
    return report


def filter_evaluate(args: argparse.Namespace):
    from training.pipeline.filter.commands import evaluate_scores_command

    report = evaluate_scores_command(args.scores, args.labels, args.output, target_precision=args.target_precision)
    logger.info("filter evaluation (%s): %s", args.output, report)
    return report


def group_caption(args: argparse.Namespace) -> dict:
    from training.pipeline.captioning.commands import group_caption_command

    return group_caption_command(args.seed_groups, args.output, args.recipe, images=args.images)


def caption_train(args: argparse.Namespace) -> dict:
    from training.pipeline.captioning.commands import train_captioner_command

    quality = train_captioner_command(args.recipe, seed_groups=args.seed_groups, images=args.images)
    logger.info("captioner quality on held-out groups: %s", quality or "no held-out groups")
    return quality


def caption_evaluate(args: argparse.Namespace):
    from training.pipeline.captioning.commands import evaluate_captions_command

    quality = evaluate_captions_command(args.captions, args.references, args.output)
    logger.info("captioner evaluation (%s): %s", args.output, quality.summary())
    return quality


def check(args: argparse.Namespace):
    from training.pipeline.leak_check_files import check_caption_file

    report = check_caption_file(
        args.captions, args.output, descriptions_jsonl=args.descriptions, extra_relational_words=args.relational_words
    )
    logger.info("checked %s: %s; report in %s", args.captions, report.summary(), args.output)
    return report


def demo(args: argparse.Namespace) -> None:
    from training.cpu_threads import prefer_passive_waiting

    prefer_passive_waiting()  # before torch loads: OpenMP reads its wait policy once
    from training.pipeline.demo import run_demo

    run_demo(args)


def _add_run_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--input", required=True, help="image folder, .jsonl/.csv list, or datasets dataset")
    command.add_argument(
        "--allow-outside-list-folder",
        action="store_true",
        help="a list's image/path entries may lead outside the list's folder (by default such a row is a failed row)",
    )
    command.add_argument("--output", type=Path, required=True, help="output folder (a rerun resumes there)")
    command.add_argument("--recipe", type=Path, help="pipeline recipe (YAML), e.g. training/configs/pipeline-*.yaml")
    command.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="where the stages run (ray: a local Ray started here)"
    )
    command.add_argument(
        "--ray-address",
        help="join this running Ray cluster, e.g. auto (`ray start --head` first; implies --executor ray)",
    )
    command.add_argument("--batch-size", type=int, help="rows per stage call (default: the recipe's)")
    command.add_argument("--device", help="override the recipe's device: auto, cpu, cuda, cuda:1")
    command.add_argument("--image-column", default="image", help="datasets input: the image column")
    command.add_argument("--split", default="train", help="datasets input: the split")


def _add_demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("pipeline-demo"), help="folder of the report and runs")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="run the whole demo once per seed (e.g. 0 1 2): mean ± std"
    )
    parser.add_argument("--filter-per-relation", type=int, default=10, help="filter training images per relation")
    parser.add_argument("--filter-steps", type=int, help="filter SFT steps (default: filter-tiny-cpu.yaml's)")
    parser.add_argument("--captioner-per-relation", type=int, default=20, help="seed-group images per relation")
    parser.add_argument(
        "--captioner-steps", type=int, default=3000, help="captioner SFT steps (the recipe's 900 serve eight captions)"
    )
    parser.add_argument(
        "--heldout-per-relation", type=int, default=2, help="held-out-look images per relation (filter, captioner)"
    )
    parser.add_argument("--pool-per-relation", type=int, default=4, help="pipeline input images per seen relation")
    parser.add_argument("--pool-negatives", type=int, default=120, help="pipeline input non-relational images")
    parser.add_argument("--relsim-steps", type=int, default=1500, help="relsim training steps (each of two runs)")
    parser.add_argument("--benchmark-per-relation", type=int, default=3, help="benchmark images per relation")
    parser.add_argument(
        "--max-relations", type=int, help="at most this many seen and this many unseen relations (quick runs, tests)"
    )
    parser.add_argument("--image-size", type=int, default=112, help="side of the generated images")
    parser.add_argument("--torch-threads", type=int, help="torch threads of every training (default: the recipes')")


def parser() -> argparse.ArgumentParser:
    top = command_parser(MODULE, __doc__)
    commands = add_commands(top)

    run_parser = add_command(commands, "run", "run stages over the input in shards, here or on Ray (resumes)")
    _add_run_options(run_parser)
    run_parser.add_argument(
        "--stages", default="filter,caption,check,handoff",
        help="comma-separated, in the order download,filter,caption,check,embed,handoff,index",
    )  # fmt: skip
    add_fetch_options(run_parser, recipe_defaults=True)
    run_parser.set_defaults(run=run_pipeline_command)

    filter_parser = add_command(commands, "filter", "the relational filter: train, score, evaluate")
    filter_commands = add_commands(filter_parser, dest="filter_command")
    train = add_command(filter_commands, "train", "fine-tune the filter (TRL SFT, LoRA) on yes/no labels")
    train.add_argument("--recipe", type=Path, required=True, help="the filter's SFT recipe (YAML)")
    train.add_argument("--labels", help="filter labels: a built filter_labels folder (training.hub_data build)")
    train.add_argument("--synthetic-per-family", type=int, help="train on synthetic images instead (per family)")
    train.add_argument("--output", type=Path, help="model and reports folder (default: the recipe's output_dir)")
    train.set_defaults(run=filter_train)
    score = add_command(filter_commands, "score", "P(yes) of every input image (the filter stage alone)")
    _add_run_options(score)
    score.set_defaults(run=filter_score)
    evaluate = add_command(filter_commands, "evaluate", "agreement, P/R/F1, ROC-AUC, threshold, PR curve")
    evaluate.add_argument("--scores", type=Path, required=True, help="filter.jsonl of a scoring run")
    evaluate.add_argument("--labels", type=Path, required=True, help="held-out labels: csv/jsonl of image_hash, label")
    evaluate.add_argument("--output", type=Path, required=True, help="report folder")
    evaluate.add_argument("--target-precision", type=float, help="pick the threshold meeting this precision")
    evaluate.set_defaults(run=filter_evaluate)

    grouping = add_command(commands, "group-caption", "one anonymous caption per seed group (frozen VLM, cached)")
    grouping.add_argument(
        "--seed-groups", type=Path, required=True, help="seed_group.json (with --images) or a built seed_groups folder"
    )
    grouping.add_argument("--images", type=Path, help="folder of the groups' <md5(url)>.<ext> images")
    grouping.add_argument("--output", type=Path, required=True, help="output folder (reruns ask only new groups)")
    grouping.add_argument("--recipe", type=Path, help="pipeline recipe (YAML): the captioner model and decoding")
    grouping.set_defaults(run=group_caption)

    caption_parser = add_command(commands, "caption", "the single-image anonymous captioner: train, generate, evaluate")
    caption_commands = add_commands(caption_parser, dest="caption_command")
    train = add_command(caption_commands, "train", "fine-tune the captioner (TRL SFT) on seed-group pairs")
    train.add_argument("--recipe", type=Path, required=True, help="the captioner's SFT recipe (YAML)")
    train.add_argument(
        "--seed-groups", type=Path, help="seed_group.json (e.g. group-caption's) or a built seed_groups folder"
    )
    train.add_argument("--images", type=Path, help="folder of the seed_group.json's <md5(url)>.<ext> images")
    train.set_defaults(run=caption_train)
    generate = add_command(caption_commands, "generate", "caption every input image (the caption stage alone)")
    _add_run_options(generate)
    generate.set_defaults(run=caption_generate)
    evaluate = add_command(
        caption_commands, "evaluate", "MiniLM cosine to the group caption, placeholder and leak rates"
    )
    evaluate.add_argument("--captions", type=Path, required=True, help="caption.jsonl of a captioning run")
    evaluate.add_argument(
        "--references", type=Path, required=True, help="reference captions: group_captions.jsonl or captions jsonl"
    )
    evaluate.add_argument("--output", type=Path, required=True, help="report folder")
    evaluate.set_defaults(run=caption_evaluate)

    checking = add_command(commands, "check", "leak and format check of captions: per caption and rates")
    checking.add_argument("--captions", type=Path, required=True, help="captions jsonl (image_hash, caption)")
    checking.add_argument("--descriptions", type=Path, help="literal descriptions jsonl by image_hash (leaks)")
    checking.add_argument("--relational-words", nargs="*", default=[], help="words never counted as leaks")
    checking.add_argument("--output", type=Path, required=True, help="report folder")
    checking.set_defaults(run=check)

    demo_parser = add_command(
        commands,
        "demo",
        "offline end to end, seen and unseen relations: filter, captioner, relsim on pipeline captions",
    )
    _add_demo_options(demo_parser)
    demo_parser.set_defaults(run=demo)
    return top


def main(argv: Sequence[str] | None = None):
    """Parses `argv` and runs the command; errors propagate (see `program` for the command-line behaviour)."""
    args = parser().parse_args(argv)
    configure_logging(getattr(args, "debug", False))
    return args.run(args)


def program() -> int:
    """Console script `relsim-pipeline`: expected errors as one line (exit status 2), tracebacks with --debug."""
    return run_program(main, prog=prog_name(MODULE), has_commands=True)


if __name__ == "__main__":
    raise SystemExit(program())
