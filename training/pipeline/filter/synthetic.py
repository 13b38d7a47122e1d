"""The filter proven offline: the tiny Qwen2.5-VL learns to tell generated relational images (the eight relation
families, or the compositional world's training relations) from generated non-relational ones (one plain object, an
unstructured scatter, an empty textured background), and is judged on shapes and colours it never saw in training,
against its untrained self. In the compositional world it is judged twice: on relations it was trained on and on
relations it never saw, each beside the same held-out negatives."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.pipeline.filter.arguments import FilterArguments, load_filter_recipe
from training.pipeline.filter.evaluation import FilterReport, evaluate_filter
from training.pipeline.filter.rows import filter_rows
from training.pipeline.filter.scoring import score_images
from training.pipeline.filter.training import train_filter
from training.store import atomic_write
from training.synthetic.dataset import synthetic_examples
from training.synthetic.negatives import negative_examples
from training.synthetic.relation_subset import relation_subset
from training.synthetic.relations import relation_examples
from training.vlm.chat import QwenVLChat


logger = logging.getLogger(__name__)

TINY_FILTER_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "filter-tiny-cpu.yaml"
SUMMARY_FILE = "synthetic_filter.json"


@dataclass(frozen=True)
class SyntheticFilterRun:
    """The untrained and the trained filter on the same held-out images, and what training cost."""

    untrained: FilterReport
    trained: FilterReport
    train_seconds: float
    num_train_relational: int
    num_train_not_relational: int
    # the compositional world: `untrained`/`trained` are on held-out looks of the training relations, these on
    # held-out looks of the relations training never saw (None for the eight families)
    untrained_unseen_relations: FilterReport | None = None
    trained_unseen_relations: FilterReport | None = None

    def to_dict(self) -> dict[str, Any]:
        unseen = {
            name: report.to_dict()
            for name, report in (
                ("untrained_unseen_relations", self.untrained_unseen_relations),
                ("trained_unseen_relations", self.trained_unseen_relations),
            )
            if report is not None
        }
        return {
            "untrained": self.untrained.to_dict(),
            "trained": self.trained.to_dict(),
            **unseen,
            "train_seconds": self.train_seconds,
            "num_train_relational": self.num_train_relational,
            "num_train_not_relational": self.num_train_not_relational,
        }


def synthetic_positive_images(
    num_per_relation: int,
    split: str,
    seed: int,
    image_size: int,
    world: str = "families",
    relations: str = "train",
    max_relations: int | None = None,
) -> list[Any]:
    """Relational images of `split`'s looks: `num_per_relation` of each family, or of each relation of the
    `relations` split (`train`, `heldout`) of the compositional world (at most `max_relations` of them)."""
    if world == "relations":
        chosen = relation_subset(relations, max_relations)
        drawn = relation_examples(num_per_relation, split, relations=chosen, seed=seed, image_size=image_size)
    else:
        drawn = synthetic_examples(num_per_relation, split, seed, image_size)
    return [example["image"] for example in drawn]


def synthetic_filter_examples(
    positives_per_family: int,
    negatives: int,
    split: str,
    seed: int,
    image_size: int,
    world: str = "families",
    max_relations: int | None = None,
) -> tuple[list[Any], np.ndarray]:
    """Images and labels (1 relational, 0 not): the relation families (or training relations) of `split`, then
    its negatives."""
    positives = synthetic_positive_images(
        positives_per_family, split, seed, image_size, world, max_relations=max_relations
    )
    negative_images = [example["image"] for example in negative_examples(negatives, split, seed, image_size)]
    labels = np.array([1] * len(positives) + [0] * len(negative_images))
    return positives + negative_images, labels


def _evaluate(chat: QwenVLChat, images, labels, settings: FilterArguments, output_dir: Path) -> FilterReport:
    scores = score_images(chat, images, batch_size=settings.score_batch_size)
    return evaluate_filter(scores, labels, output_dir, target_precision=settings.target_precision)


def _evaluate_seen_and_unseen(
    chat: QwenVLChat, eval_sets: dict[str, tuple[list[Any], np.ndarray]], settings: FilterArguments, output_dir: Path
) -> dict[str, FilterReport]:
    """One report per held-out set (`<output_dir>/<name>/`); the negatives shared by the sets are scored once."""
    images = {id(image): image for set_images, _ in eval_sets.values() for image in set_images}
    scores = dict(zip(images, score_images(chat, list(images.values()), settings.score_batch_size), strict=True))
    return {
        name: evaluate_filter(
            np.array([scores[id(image)] for image in set_images]),
            labels,
            output_dir / name,
            target_precision=settings.target_precision,
        )
        for name, (set_images, labels) in eval_sets.items()
    }


def heldout_relation_sets(settings: FilterArguments) -> dict[str, tuple[list[Any], np.ndarray]]:
    """Held-out looks of the seen and of the unseen relations, each with as many of the same held-out negatives as
    it has positives (at most `synthetic_eval_negatives`), so agreement means the same on both."""
    negatives = [
        example["image"]
        for example in negative_examples(
            settings.synthetic_eval_negatives, "heldout", settings.synthetic_seed, settings.synthetic_image_size
        )
    ]
    sets = {}
    for name, relations in (("seen_relations", "train"), ("unseen_relations", "heldout")):
        positives = synthetic_positive_images(
            settings.synthetic_eval_positives_per_family, "heldout", settings.synthetic_seed,
            settings.synthetic_image_size, "relations", relations, settings.synthetic_max_relations,
        )  # fmt: skip
        chosen = negatives[: len(positives)]
        sets[name] = (positives + chosen, np.array([1] * len(positives) + [0] * len(chosen)))
    return sets


def train_synthetic_filter(
    output_dir: str | Path, recipe: str | Path = TINY_FILTER_RECIPE, overrides: Mapping[str, Any] | None = None
) -> tuple[QwenVLChat, SyntheticFilterRun]:
    """Trains the filter of `recipe` on generated images and reports it on held-out shapes and colours.

    Writes `<output_dir>/model` (the fine-tuned filter), `<output_dir>/untrained|trained/` (each a
    `filter_report.json` and `pr_curve.png`; with `synthetic_world: relations` one folder per held-out set below
    them, `seen_relations/` and `unseen_relations/`) and `<output_dir>/synthetic_filter.json` (the reports and the
    time).
    """
    output_dir = Path(output_dir)
    model_arguments, sft_arguments, settings = load_filter_recipe(
        recipe, {**(overrides or {}), "output_dir": str(output_dir / "model")}
    )
    if not settings.synthetic_positives_per_family or not settings.synthetic_negatives:
        raise ValueError(f"{recipe}: set synthetic_positives_per_family and synthetic_negatives")
    train_images, train_labels = synthetic_filter_examples(
        settings.synthetic_positives_per_family,
        settings.synthetic_negatives,
        "train",
        settings.synthetic_seed,
        settings.synthetic_image_size,
        settings.synthetic_world,
        settings.synthetic_max_relations,
    )
    chat = model_arguments.load_chat()
    if settings.synthetic_world == "relations":
        eval_sets = heldout_relation_sets(settings)
        untrained_sets = _evaluate_seen_and_unseen(chat, eval_sets, settings, output_dir / "untrained")
    else:
        eval_images, eval_labels = synthetic_filter_examples(
            settings.synthetic_eval_positives_per_family,
            settings.synthetic_eval_negatives,
            "heldout",
            settings.synthetic_seed,
            settings.synthetic_image_size,
        )
        untrained = _evaluate(chat, eval_images, eval_labels, settings, output_dir / "untrained")
    started = time.perf_counter()
    trained_chat = train_filter(chat, filter_rows(train_images, train_labels), sft_arguments, settings.balance)
    train_seconds = time.perf_counter() - started
    counts = (int(train_labels.sum()), int((1 - train_labels).sum()))
    if settings.synthetic_world == "relations":
        trained_sets = _evaluate_seen_and_unseen(trained_chat, eval_sets, settings, output_dir / "trained")
        run = SyntheticFilterRun(
            untrained_sets["seen_relations"], trained_sets["seen_relations"], train_seconds, *counts,
            untrained_sets["unseen_relations"], trained_sets["unseen_relations"],
        )  # fmt: skip
    else:
        trained = _evaluate(trained_chat, eval_images, eval_labels, settings, output_dir / "trained")
        run = SyntheticFilterRun(untrained, trained, train_seconds, *counts)
    atomic_write(output_dir / SUMMARY_FILE, (json.dumps(run.to_dict(), indent=2) + "\n").encode())
    logger.info(
        "synthetic filter: held-out agreement at 0.5 %.3f (untrained %.3f), ROC-AUC %.3f (untrained %.3f), "
        "trained in %.0f s",
        run.trained.agreement_at_half,
        run.untrained.agreement_at_half,
        run.trained.roc_auc,
        run.untrained.roc_auc,
        train_seconds,
    )
    return trained_chat, run
