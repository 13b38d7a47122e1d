"""The pipeline's offline demo: does the data half of the method *learn*, end to end, on 2 CPU cores, and does it
carry over to relations it never saw?

    python -m training.pipeline demo --output pipeline-demo                # one seed (sized for <= 25 min, 2 cores)
    python -m training.pipeline demo --output pipeline-demo --seeds 0 1 2  # the whole demo per seed, mean ± std

The world is the compositional one (`training.synthetic.factors`): 407 relations, each a layout, a change, an
exception and a structure; 305 are seen in training (training looks only) and 102 never are.

1. filter: a tiny generating Qwen2.5-VL fine-tuned with TRL to answer "Yes" for images of the seen relations and
   "No" for non-relational negatives (one plain object, an unstructured scatter, an empty textured background);
   agreement on held-out looks of seen relations and of unseen relations, apart;
2. captioner: the single-image anonymous captioner fine-tuned on seed groups of the seen relations; on held-out
   looks of seen and of unseen relations: exact captions, each factor read back from the caption, and the nearest
   (MiniLM) of all 407 relation captions, each beside its chance;
3. pipeline: a pool of seen-relation images and negatives runs through filter -> caption -> check -> hand-off with
   the local executor (the same stages as `python -m training.pipeline run`);
4. relsim: trained twice with one reduced recipe (`training/configs/tiny-cpu.yaml`, fewer steps), on the pipeline's
   hand-off and on the true captions of the pool's relation images; both scored on held-out looks of all relations,
   image -> image mAP (relevant = same relation) for seen and unseen queries apart, beside look baselines.

Writes `<output>/seed-<n>/results.json` per seed (saved after every phase) and `<output>/report.md` with
`<output>/results.json` (every figure's mean ± std over the seeds, the bars judged on the means;
`training.pipeline.demo_report`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from modeling_relsim import RelSimModel, RelSimProcessor
from training.cpu_threads import prefer_passive_waiting
from training.evaluation.methods.base import embed_image_list
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.retrieval import closeness
from training.evaluation.synthetic_retrieval import attribute_baselines
from training.image_ids import file_image_hash
from training.metrics import relational_retrieval_metrics
from training.pipeline.captioning.recipe import load_captioner_recipe
from training.pipeline.captioning.synthetic import train_synthetic_captioner
from training.pipeline.demo_report import PIPELINE_CAPTIONS, TRUE_CAPTIONS, DemoResult, write_report
from training.pipeline.filter.arguments import load_filter_recipe
from training.pipeline.filter.synthetic import TINY_FILTER_RECIPE, train_synthetic_filter
from training.pipeline.handoff import IMAGES_FOLDER, HandoffStage, handoff_image_path, write_captions_jsonl
from training.pipeline.model_stages import CaptionStage, CheckStage, FilterStage
from training.pipeline.run import sharded
from training.pipeline.run.summary import read_stage_rows
from training.synthetic.caption_factors import caption_relation
from training.synthetic.literal import literal_description
from training.synthetic.negatives import negative_examples
from training.synthetic.relation_subset import relation_subset
from training.synthetic.relations import relation_examples
from training.trainer.train import main as train


logger = logging.getLogger("relsim.pipeline.demo")

RELSIM_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
CAPTIONER_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "captioner-tiny-cpu.yaml"
# each role draws its images from its own seed (shifted by SEED_STRIDE per demo seed); held-out images come from
# the generator's "heldout" looks (other shapes and colours), so no image is shared between training and evaluation
SEEDS = {"filter": 11, "captioner": 21, "pool": 31, "benchmark": 1}
SEED_STRIDE = 1000
# the longest relation caption is 26 whole-word tokens; the recipe's 24 would cut it
CAPTION_TOKENS = 40


@dataclass
class SeedRun:
    """One seed's settings: where it writes and which seeds its roles and trainings use."""

    seed: int
    output: Path
    seeds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, seed: int, output: Path) -> SeedRun:
        return cls(seed, output / f"seed-{seed}", {role: base + SEED_STRIDE * seed for role, base in SEEDS.items()})


def _relations(args: argparse.Namespace, split: str):
    return relation_subset(split, args.max_relations)


def _labelled_images(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    """Seen-relation images (label 1, with their relation and true caption) then negatives (label 0), with literal
    descriptions for the leak check."""
    drawn = relation_examples(
        args.pool_per_relation, "train", relations=_relations(args, "train"), seed=seed, image_size=args.image_size
    )
    examples = [{**example, "label": 1, "literal": literal_description(example)} for example in drawn]
    examples += [
        {**example, "label": 0, "relation": None, "caption": None, "literal": literal_description(example)}
        for example in negative_examples(args.pool_negatives, "train", seed=seed, image_size=args.image_size)
    ]
    return examples


def _write_pool(examples: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """The pool as PNG files and pipeline input rows (with literal descriptions and the truth kept aside)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for position, example in enumerate(examples):
        name = example["relation"].replace("/", "-") if example["relation"] else f"negative_{example['kind']}"
        path = folder / f"{position:05d}_{name}.png"
        if not path.is_file():
            example["image"].save(path)
        rows.append(
            {"image_hash": file_image_hash(path), "image": str(path), "literal_descriptions": [example["literal"]]}
        )
    return rows


def _sft_overrides(args: argparse.Namespace, steps: int | None, seed: int, warmup_share: int, warmup_cap: int):
    """The demo seed as the SFT seed, the thread count, and a step count with its warm-up and logging scaled to it."""
    overrides: dict[str, Any] = {"seed": seed}
    if args.torch_threads is not None:
        overrides["torch_num_threads"] = args.torch_threads
    if steps is not None:
        warmup = min(steps // warmup_share, warmup_cap)
        overrides.update(max_steps=steps, warmup_steps=warmup, logging_steps=max(1, steps // 5))
    return overrides


def train_the_filter(args: argparse.Namespace, run: SeedRun, result: DemoResult):
    """Fine-tunes the tiny filter (`train_synthetic_filter` with `synthetic_world: relations`: TRL SFT, "Yes"/"No",
    loss weighting for the class balance); records agreement on held-out looks of seen and of unseen relations,
    before and after training. The bars are read at the fixed threshold 0.5 (balanced training makes 0.5 the
    natural one), so nothing is tuned on held-out images; the pipeline then keeps rows at the seen set's
    agreement-maximising threshold, as `filter evaluate` reports it."""
    seen = len(_relations(args, "train"))
    overrides: dict[str, Any] = {
        "synthetic_world": "relations", "synthetic_max_relations": args.max_relations,
        "synthetic_positives_per_family": args.filter_per_relation,
        "synthetic_negatives": seen * args.filter_per_relation,
        "synthetic_eval_positives_per_family": args.heldout_per_relation,
        "synthetic_eval_negatives": seen * args.heldout_per_relation,
        "synthetic_seed": run.seeds["filter"], "synthetic_image_size": args.image_size,
        "max_pixels": args.image_size**2, **_sft_overrides(args, args.filter_steps, run.seed, 10, 20),
    }  # fmt: skip
    _, sft, _ = load_filter_recipe(TINY_FILTER_RECIPE, overrides)
    chat, filtered = train_synthetic_filter(run.output / "filter", TINY_FILTER_RECIPE, overrides)
    result.filter = {
        "seen relations": _filter_figures(filtered.untrained, filtered.trained),
        "unseen relations": _filter_figures(filtered.untrained_unseen_relations, filtered.trained_unseen_relations),
        "threshold": filtered.trained.threshold, "training seconds": filtered.train_seconds,
        "SFT steps": sft.max_steps, "training images per relation": args.filter_per_relation,
        "training relations": seen,
    }  # fmt: skip
    return chat, filtered.trained.threshold


def _filter_figures(untrained, trained) -> dict[str, float]:
    return {
        "untrained agreement": untrained.agreement_at_half, "trained agreement": trained.agreement_at_half,
        "trained ROC-AUC": trained.roc_auc, "untrained ROC-AUC": untrained.roc_auc, "trained F1": trained.f1,
        "held-out images": trained.num_images,
    }  # fmt: skip


def train_the_captioner(args: argparse.Namespace, run: SeedRun, result: DemoResult):
    """Fine-tunes the single-image captioner on seed groups of the seen relations
    (`train_synthetic_captioner` with `synthetic_world: relations`); records how it names held-out looks of seen
    and of unseen relations (`training.pipeline.captioning.composition`)."""
    folder = run.output / "captioner"
    overrides: dict[str, Any] = {
        "output_dir": str(folder / "model"), "synthetic_world": "relations",
        "synthetic_max_relations": args.max_relations, "synthetic_num_per_family": args.captioner_per_relation,
        "synthetic_eval_num_per_family": args.heldout_per_relation, "synthetic_seed": run.seeds["captioner"],
        "synthetic_image_size": args.image_size, "max_pixels": args.image_size**2, "max_new_tokens": CAPTION_TOKENS,
        **_sft_overrides(args, args.captioner_steps, run.seed, 20, 50),
    }  # fmt: skip
    recipe = load_captioner_recipe(CAPTIONER_RECIPE, overrides)
    chat, quality = train_synthetic_captioner(folder, recipe)
    result.captioner = {
        "seen relations": quality.composition["seen_relations"],
        "unseen relations": quality.composition["unseen_relations"],
        "mean cosine": float(quality.mean_cosine), "placeholder rate": float(quality.placeholder_rate),
        "leak rate": float(quality.leak_rate) if quality.leak_rate is not None else float("nan"),
        "held-out images": quality.count, "SFT steps": recipe.sft.max_steps,
        "seed-group images per relation": recipe.data.synthetic_num_per_family,
    }  # fmt: skip
    return chat, recipe.captioner


def run_the_pipeline(args, run: SeedRun, result: DemoResult, filter_chat, threshold: float, captioner, settings):
    """The pool through filter -> caption -> check -> hand-off; returns the pool's examples and input rows."""
    examples = _labelled_images(args, run.seeds["pool"])
    rows = _write_pool(examples, run.output / "pool")
    folder = run.output / "pipeline"
    stages = [
        FilterStage(chat=filter_chat, threshold=threshold, batch_size=32),  # a ready chat: nothing loaded
        CaptionStage(
            chat=captioner,
            prompt=settings.prompt,
            decoding=asdict(settings.decoding()),
            batch_size=settings.generation_batch_size,
            cache_file=str(folder / "caption_cache.jsonl"),
        ),
        CheckStage(),
        HandoffStage(folder / "handoff"),
    ]
    summary = sharded.run(rows, stages, folder, batch_size=32, stage_logs=[stage.name for stage in stages])
    truth = {row["image_hash"]: example for row, example in zip(rows, examples, strict=True)}
    kept = [row for row in read_stage_rows(folder, "filter") if row.get("kept")]
    handed = [row for row in read_stage_rows(folder, "handoff") if row.get("handed_off")]
    right = 0
    for row in handed:
        named = caption_relation(row["caption"])
        right += named is not None and named.name == truth[row["image_hash"]]["relation"]
    result.pipeline = {
        "input images": len(rows), "relation images in the input": sum(example["label"] for example in examples),
        "kept by the filter": len(kept),
        "kept that are relation images": sum(truth[row["image_hash"]]["label"] for row in kept),
        "handed off": len(handed), "handed off naming the right relation": right,
        "check failures": summary.stage("handoff").dropped,
    }  # fmt: skip
    return examples, rows


def write_true_captions(examples: list[dict[str, Any]], rows: list[dict[str, Any]], folder: Path) -> Path:
    """The pool's relation images with their true captions, in the hand-off format (the ideal pipeline's output)."""
    images_dir = folder / IMAGES_FOLDER
    images_dir.mkdir(parents=True, exist_ok=True)
    true_rows = []
    for example, row in zip(examples, rows, strict=True):
        if example["label"] != 1:
            continue
        target, _ = handoff_image_path(images_dir, row["image_hash"], row["image"])
        if not target.is_file():
            target.write_bytes(Path(row["image"]).read_bytes())
        true_rows.append({**row, "caption": example["caption"]})
    return write_captions_jsonl(true_rows, folder / "captions.jsonl")


def train_relsim(args: argparse.Namespace, seed: int, captions: Path, images: Path, run_dir: Path) -> Path:
    """relsim with the demo's reduced recipe (`tiny-cpu.yaml`, fewer steps) on an official captions folder."""
    steps = args.relsim_steps
    threads = [] if args.torch_threads is None else ["--torch-num-threads", str(args.torch_threads)]
    return train([
        "--config", str(RELSIM_RECIPE), "--output-dir", str(run_dir), "--captions-jsonl", str(captions),
        "--image-dir", str(images), "--synthetic-num-per-family", "0", "--synthetic-eval-num-per-family", "0",
        "--max-steps", str(steps), "--warmup-steps", str(max(1, steps // 20)),
        "--logging-steps", str(max(1, steps // 4)), "--seed", str(seed), *threads,
    ])  # fmt: skip


def benchmark(args: argparse.Namespace, run: SeedRun, result: DemoResult, finals: dict[str, Path]) -> None:
    """Image -> image retrieval on held-out looks of every relation (relevant = same relation; the query itself
    left out), scored for seen-relation and unseen-relation queries apart, against the whole pool."""
    methods = dict(attribute_baselines())
    for name, final in finals.items():
        model, processor = RelSimModel.from_pretrained(final), RelSimProcessor.from_pretrained(final)
        methods[name] = RelSimMethod(str(final), device="cpu", model=model, processor=processor)
    unseen = {relation.name for relation in relation_subset("heldout")}
    relations = (*_relations(args, "train"), *_relations(args, "heldout"))
    pool = list(
        relation_examples(
            args.benchmark_per_relation, "heldout", relations=relations, seed=run.seeds["benchmark"],
            image_size=args.image_size,
        )
    )  # fmt: skip
    labels = [example["relation"] for example in pool]
    is_unseen = torch.tensor([label in unseen for label in labels])
    everyone = torch.arange(len(pool))
    queries = {"seen relations": ~is_unseen, "unseen relations": is_unseen, "all relations": torch.ones_like(is_unseen)}
    for name, method in methods.items():
        embeddings = embed_image_list(method, [example["image"] for example in pool])
        similarity = closeness(embeddings, embeddings, method.metric)
        result.benchmark[name] = {}
        for split, chosen in queries.items():
            rows = torch.nonzero(chosen).flatten()
            metrics = relational_retrieval_metrics(
                similarity[rows], [labels[row] for row in rows.tolist()], labels, exclude=everyone[rows]
            )
            result.benchmark[name].update({f"{metric}, {split}": value for metric, value in metrics.items()})
    for missing in {PIPELINE_CAPTIONS, TRUE_CAPTIONS} - set(finals):
        result.benchmark[missing] = dict.fromkeys(result.benchmark[next(iter(methods))], 0.0)


def run_seed(args: argparse.Namespace, seed: int) -> DemoResult:
    """The whole demo with one seed (see the module docstring); returns its numbers."""
    run = SeedRun.of(seed, args.output)
    run.output.mkdir(parents=True, exist_ok=True)
    result = DemoResult(seed=seed)
    started = clock = time.perf_counter()
    cpu = time.process_time()
    result.load_average.append(os.getloadavg()[0])

    def lap(name: str) -> None:
        """Times the phase just finished and saves the results so far (a long run that is stopped keeps them)."""
        nonlocal clock, cpu
        now, cpu_now = time.perf_counter(), time.process_time()
        result.minutes[name] = (now - clock) / 60
        result.cpu_minutes[name] = (cpu_now - cpu) / 60
        clock, cpu = now, cpu_now
        (run.output / "results.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")

    filter_chat, threshold = train_the_filter(args, run, result)
    lap("filter (data, SFT, evaluation)")
    captioner, settings = train_the_captioner(args, run, result)
    lap("captioner (SFT, evaluation)")
    examples, rows = run_the_pipeline(args, run, result, filter_chat, threshold, captioner, settings)
    lap("pipeline run")
    true_captions = write_true_captions(examples, rows, run.output / "true-captions")
    handoff = run.output / "pipeline" / "handoff"
    finals = {
        TRUE_CAPTIONS: train_relsim(
            args, seed, true_captions, true_captions.parent / "images", run.output / "relsim-true"
        )
    }
    if (handoff / "captions.jsonl").read_text(encoding="utf-8").strip():
        pipeline_run = run.output / "relsim-pipeline"
        finals[PIPELINE_CAPTIONS] = train_relsim(
            args, seed, handoff / "captions.jsonl", handoff / "images", pipeline_run
        )
    else:  # nothing to train on: the pipeline's relsim scores nothing, and the report says why
        logger.warning("the pipeline handed off no caption; relsim on pipeline captions is not trained")
    lap("relsim training (two runs)")
    benchmark(args, run, result, finals)
    lap("benchmark")
    result.minutes["total"] = (time.perf_counter() - started) / 60
    result.cpu_minutes["total"] = sum(result.cpu_minutes.values())
    result.load_average.append(os.getloadavg()[0])
    (run.output / "results.json").write_text(json.dumps(asdict(result), indent=2) + "\n", encoding="utf-8")
    return result


# the demo's count options and the least each may be (None: the recipe's or all relations)
LEAST = {
    "filter_per_relation": 1, "captioner_per_relation": 1, "heldout_per_relation": 1, "pool_per_relation": 1,
    "pool_negatives": 0, "benchmark_per_relation": 1, "relsim_steps": 1, "filter_steps": 1, "captioner_steps": 1,
    "max_relations": 1, "torch_threads": 1, "image_size": 32,
}  # fmt: skip


def check_arguments(args: argparse.Namespace) -> None:
    """A ValueError naming the first option out of range, before minutes of training are spent."""
    for name, least in LEAST.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must differ from each other (each writes seed-<n>/), got {args.seeds}")


def run_demo(args: argparse.Namespace) -> list[DemoResult]:
    """Runs the demo once per seed of `args.seeds`; writes the report over all of them."""
    check_arguments(args)
    prefer_passive_waiting()
    args.output.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        results.append(run_seed(args, seed))
        report = write_report(args.output, results)  # after each seed: a stopped run keeps its report so far
    logger.info("%s\nreport: %s", report.read_text(encoding="utf-8"), report)
    return results
