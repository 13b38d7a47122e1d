"""The conceptual-distance commands of `python -m training.studies`:

  python -m training.studies distance --model DESCRIBER --images a.png b.png c.png --cache-dir cd-cache --output d.json
  python -m training.studies distance --model DESCRIBER --pairs pairs.txt --cache-dir cd-cache --output d.json
  python -m training.studies distance-eval --literal-model runs/literal-describer-tiny-cpu \\
      --anonymous-model runs/captioner-tiny-cpu/model --anonymous-prompt "Write the anonymous caption of this image." \\
      --relsim RELSIM_FOLDER --output-dir cd-report
  python -m training.studies train-literal-describer --output-dir runs/literal-describer-tiny-cpu

`--images` compares every pair of the images given; a pairs file holds two image paths per line (tab- or
space-separated; paths relative to the file's folder; `#` starts a comment). Descriptions and scores are cached in
the cache folder, so a rerun (or a run killed half-way) computes only what is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import shlex
from pathlib import Path
from typing import Any

from training.cli import add_device_options, resolve_device, resolve_dtype


logger = logging.getLogger("relsim.studies")
DISTANCE_HELP = "conceptual distance of image pairs by description length (a describer VLM samples and scores)"
EVALUATE_HELP = "AUC of the conceptual distance for same- vs different-family synthetic pairs, beside relsim cosine"
TRAIN_HELP = "train the tiny literal describer on the synthetic generator's literal descriptions (offline)"
DEFAULT_LENGTHS = [8, 16, 32, 64]


def read_pairs_file(path: str | Path) -> list[tuple[str, str]]:
    """Two image paths per line (see the module docstring).

    Raises:
        ValueError: a line without exactly two paths, named by file and line.
    """
    path = Path(path)
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = shlex.split(line, comments=True)
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: a pair line holds two image paths, got {len(fields)}: {line!r}")
        pairs.append(tuple(str(path.parent / field) for field in fields))
    if not pairs:
        raise ValueError(f"{path} holds no image pairs")
    return pairs


def add_setting_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lengths", type=int, nargs="+", default=DEFAULT_LENGTHS, help="description budgets, tokens")
    parser.add_argument("--num-samples", type=int, default=8, help="descriptions sampled per image and length")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass when sampling")
    parser.add_argument("--seed", type=int, default=0, help="fixes every sampled description")
    parser.add_argument("--batch-size", type=int, default=16, help="(description, image) pairs per scoring forward")
    parser.add_argument("--max-pixels", type=int, default=448 * 448, help="image budget of the describer(s)")
    add_device_options(parser)


def settings_from(args: argparse.Namespace):
    from training.studies.conceptual_distance_runner import DistanceSettings

    return DistanceSettings(
        tuple(args.lengths), args.num_samples, args.temperature, args.top_p, args.seed, args.batch_size
    )


def add_distance_arguments(parser: argparse.ArgumentParser) -> None:
    images = parser.add_mutually_exclusive_group(required=True)
    images.add_argument("--images", nargs="+", help="image files; every pair of them is compared")
    images.add_argument("--pairs", type=Path, help="a file of image pairs, two paths per line")
    parser.add_argument("--model", required=True, help="the describer: a Qwen2.5-VL folder or hub id")
    parser.add_argument("--adapter", help="a PEFT LoRA folder or hub id merged into --model")
    parser.add_argument("--prompt", help="the describing prompt (default: the folder's describer.json)")
    parser.add_argument("--cache-dir", type=Path, required=True, help="folder of the description and score cache")
    parser.add_argument("--output", type=Path, help="JSON file of the distances (default: only logged)")
    add_setting_arguments(parser)


def run_distance(args: argparse.Namespace) -> list[dict[str, Any]]:
    from training.store import atomic_write
    from training.studies.conceptual_distance_describers import load_describer
    from training.studies.conceptual_distance_runner import ConceptualDistance

    if args.images is not None:
        if len(args.images) < 2:
            raise ValueError(f"--images needs at least two images to compare, got {args.images}")
        pairs = list(itertools.combinations(args.images, 2))
    else:
        pairs = read_pairs_file(args.pairs)
    settings = settings_from(args)
    describer = load_describer(
        args.model, args.prompt, "describer", args.max_pixels, resolve_device(args.device), resolve_dtype(args.dtype),
        args.adapter,
    )  # fmt: skip
    run = ConceptualDistance(describer, args.cache_dir, settings)(pairs, show_progress=True)
    results = []
    for (a, b), hashes, distance in zip(pairs, run.image_hashes, run.distances, strict=True):
        results.append({"a": str(a), "b": str(b), "image_hashes": list(hashes), **distance.as_dict()})
        curve = ", ".join(f"{value:.3f}" for value in distance.curve)
        logger.info("%s | %s: area %.3f, d_L at %s = [%s]", a, b, distance.area, list(distance.lengths), curve)
    logger.info("%s", run.summary())
    if args.output is not None:
        atomic_write(args.output, (json.dumps(results, indent=1) + "\n").encode("utf-8"))
        logger.info("wrote %s", args.output)
    return results


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--literal-model", help="the literal describer's folder (train-literal-describer writes one)")
    parser.add_argument("--literal-prompt", help="its prompt (default: the folder's describer.json)")
    parser.add_argument(
        "--anonymous-model", help="the anonymous captioner's folder (e.g. runs/captioner-tiny-cpu/model)"
    )
    parser.add_argument("--anonymous-prompt", help="its captioning prompt (default: the recipe's, else the pipeline's)")
    parser.add_argument(
        "--anonymous-recipe", type=Path, help="a captioner recipe whose prompt the captioner was trained on"
    )
    parser.add_argument("--relsim", help="a relsim folder or hub id, scored by cosine beside the distances")
    parser.add_argument("--num-per-family", type=int, default=4, help="synthetic images per relation family")
    parser.add_argument("--families", nargs="+", help="relation families to draw (default: all eight)")
    parser.add_argument("--split", choices=("heldout", "train"), default="heldout", help="shapes and colours drawn")
    parser.add_argument("--synthetic-seed", type=int, default=0, help="seed of the synthetic images")
    parser.add_argument("--output-dir", type=Path, required=True, help="report folder (its cache/ makes reruns resume)")
    add_setting_arguments(parser)


def anonymous_prompt(args: argparse.Namespace) -> str:
    if args.anonymous_prompt:
        return args.anonymous_prompt
    if args.anonymous_recipe:
        from training.pipeline.captioning.recipe import load_captioner_recipe

        return load_captioner_recipe(args.anonymous_recipe).captioner.caption_prompt().text
    from training.pipeline.captioning.prompts import SINGLE_IMAGE_PROMPT

    return SINGLE_IMAGE_PROMPT.text


def run_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from training.studies.conceptual_distance_describers import load_describer
    from training.studies.conceptual_distance_evaluation import evaluate_conceptual_distance

    if not args.literal_model and not args.anonymous_model:
        raise ValueError("give --literal-model, --anonymous-model or both: the describers to evaluate")
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    describers = []
    if args.literal_model:
        describers.append(
            load_describer(args.literal_model, args.literal_prompt, "literal", args.max_pixels, device, dtype)
        )
    if args.anonymous_model:
        describers.append(
            load_describer(args.anonymous_model, anonymous_prompt(args), "anonymous", args.max_pixels, device, dtype)
        )
    relsim = None
    if args.relsim:
        from training.evaluation.methods.relsim import RelSimMethod

        relsim = RelSimMethod(args.relsim, device=device)
    report = evaluate_conceptual_distance(
        describers, args.output_dir, relsim, args.num_per_family, args.split, settings_from(args), args.synthetic_seed,
        families=args.families, show_progress=True,
    )  # fmt: skip
    logger.info("wrote the report to %s", args.output_dir)
    return report


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe", type=Path, help="pretraining recipe (default: training/configs/tiny-vlm-pretrain-cpu.yaml)"
    )
    parser.add_argument("--output-dir", type=Path, required=True, help="where the trained describer is saved")
    parser.add_argument("--max-steps", type=int, help="override the recipe's step count")


def run_train(args: argparse.Namespace) -> str:
    from training.studies.conceptual_distance_describers import train_literal_describer

    overrides = {} if args.max_steps is None else {"max_steps": args.max_steps}
    train_literal_describer(args.output_dir, args.recipe, overrides)
    logger.info("saved the literal describer to %s", args.output_dir)
    return str(args.output_dir)
