"""The pipeline's offline demo: does the data half of the method *learn*, end to end, on 2 CPU cores?

    python -m training.pipeline demo --output pipeline-demo          # the full run (~20 min on 2 quiet cores)

1. data: synthetic images of the 8 relation families and non-relational negatives (one plain object, an unstructured
   scatter, an empty textured background; `training.synthetic`), each role drawn from its own seed;
2. filter: a tiny generating Qwen2.5-VL fine-tuned with TRL to answer "Yes"/"No"; agreement on held-out shapes and
   colours, trained against untrained;
3. captioner: the single-image anonymous captioner fine-tuned on seed groups (images of one family with that
   family's true anonymous caption, like the paper's verified seed groups); on held-out images, how often the
   generated caption's MiniLM embedding is closest to the right family's caption;
4. pipeline: a pool of family images and negatives runs through filter -> caption -> check -> hand-off with the
   local runner (the same stages as `python -m training.pipeline run`);
5. relsim: trained twice with one reduced recipe (`training/configs/tiny-cpu.yaml`, fewer steps): on the pipeline's
   hand-off and on the true captions of the pool's family images; both on the synthetic benchmark (held-out shapes
   and colours), side by side.

Writes `<output>/report.md` (the table, the bars, the verdict in words) and `<output>/results.json`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


logger = logging.getLogger("relsim.pipeline.demo")

RELSIM_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny-cpu.yaml"
PIPELINE_CAPTIONS, TRUE_CAPTIONS = "relsim (pipeline captions)", "relsim (true captions)"
FILTER_AGREEMENT_BAR, CAPTIONER_BAR, RELSIM_RATIO_BAR = 0.9, 0.8, 0.9
# each role draws its images from its own seed, so no image is shared between training and evaluation
SEEDS = {"filter": 11, "filter_heldout": 12, "captioner": 21, "captioner_heldout": 22, "pool": 31, "benchmark": 1}


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", type=Path, default=Path("pipeline-demo"), help="folder of the report and runs")
    parser.add_argument("--filter-per-family", type=int, default=24, help="filter training images per family")
    parser.add_argument("--filter-steps", type=int, default=150, help="filter SFT steps")
    parser.add_argument("--captioner-per-family", type=int, default=24, help="seed-group images per family")
    parser.add_argument("--captioner-steps", type=int, default=300, help="captioner SFT steps")
    parser.add_argument("--heldout-per-family", type=int, default=10, help="held-out images per family (bars)")
    parser.add_argument("--pool-per-family", type=int, default=60, help="pipeline input images per family")
    parser.add_argument("--pool-negatives", type=int, default=120, help="pipeline input non-relational images")
    parser.add_argument("--relsim-steps", type=int, default=700, help="relsim training steps (each of two runs)")
    parser.add_argument("--benchmark-per-family", type=int, default=50, help="benchmark images per family")
    parser.add_argument("--image-size", type=int, default=112, help="side of the generated images")


@dataclass
class DemoResult:
    filter: dict[str, float] = field(default_factory=dict)
    captioner: dict[str, float] = field(default_factory=dict)
    pipeline: dict[str, Any] = field(default_factory=dict)
    benchmark: dict[str, dict[str, float]] = field(default_factory=dict)
    minutes: dict[str, float] = field(default_factory=dict)


def _labelled_images(per_family: int, negatives: int, split: str, seed: int, size: int) -> list[dict[str, Any]]:
    """Family images (label 1, with their family and true caption) then negatives (label 0), with literal
    descriptions for the leak check."""
    from training.synthetic import synthetic_examples
    from training.synthetic.literal import literal_description
    from training.synthetic.negatives import negative_examples

    examples = [
        {**example, "label": 1, "literal": literal_description(example)}
        for example in synthetic_examples(per_family, split, seed=seed, image_size=size)
    ]
    examples += [
        {**example, "label": 0, "family": None, "caption": None, "literal": literal_description(example)}
        for example in negative_examples(negatives, split, seed=seed, image_size=size)
    ]
    return examples


def _write_pool(examples: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """The pool as PNG files and pipeline input rows (with literal descriptions and the truth kept aside)."""
    from training.image_ids import file_image_hash

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for position, example in enumerate(examples):
        name = example["family"] or f"negative_{example['kind']}"
        path = folder / f"{position:05d}_{name}.png"
        if not path.is_file():
            example["image"].save(path)
        rows.append(
            {"image_hash": file_image_hash(path), "image": str(path), "literal_descriptions": [example["literal"]]}
        )
    return rows


def train_filter_stage(args: argparse.Namespace, result: DemoResult):
    """Fine-tunes the tiny filter; records held-out agreement before and after."""
    from training.pipeline.filter import evaluate_filter, filter_rows, score_images, train_filter
    from training.vlm.sft_training import VLMSFTArguments, load_recipe
    from training.vlm.tiny import build_tiny_chat

    train = _labelled_images(
        args.filter_per_family, 8 * args.filter_per_family, "train", SEEDS["filter"], args.image_size
    )
    heldout = _labelled_images(
        args.heldout_per_family, 8 * args.heldout_per_family, "heldout", SEEDS["filter_heldout"], args.image_size
    )
    images, labels = [example["image"] for example in heldout], [example["label"] for example in heldout]
    chat = build_tiny_chat(("Yes", "No"), seed=0)
    before = evaluate_filter(score_images(chat, images, batch_size=32), labels, args.output / "filter" / "untrained")
    (arguments,) = load_recipe(
        FILTER_RECIPE,
        [VLMSFTArguments],
        {"output_dir": str(args.output / "filter" / "model"), "max_steps": args.filter_steps},
    )
    rows = filter_rows([example["image"] for example in train], [example["label"] for example in train])
    chat = train_filter(chat, rows, arguments)
    after = evaluate_filter(score_images(chat, images, batch_size=32), labels, args.output / "filter" / "trained")
    result.filter = {
        "untrained agreement": before.agreement, "trained agreement": after.agreement,
        "trained F1": after.f1, "trained ROC-AUC": after.roc_auc, "threshold": after.best_threshold,
    }  # fmt: skip
    return chat, after.best_threshold


FILTER_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "filter-tiny-cpu.yaml"
CAPTIONER_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "captioner-tiny-cpu.yaml"


def run_demo(args: argparse.Namespace) -> DemoResult:
    """Runs the demo (see the module docstring); returns its numbers and writes the report."""
    raise NotImplementedError
