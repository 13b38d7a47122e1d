"""The bodies of `python -m training.pipeline filter train|evaluate`, over the filter package's functions.

- `train_filter_command`: the recipe's label source: generated images (`train_synthetic_filter`: trained, then
  judged on held-out shapes and colours against its untrained self) or a built `filter_labels` dataset (a stratified
  `eval_fraction` of it held out, the rest trained on, the held-out part scored and evaluated). The model lands in
  `<output>/model`, the reports beside it.
- `evaluate_scores_command`: a scoring run's `filter.jsonl` against held-out labels (csv or jsonl of `image_hash`,
  `label`), joined by image hash.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from training.json_lines import read_json_lines
from training.pipeline.filter.arguments import load_filter_recipe
from training.pipeline.filter.evaluation import evaluate_filter
from training.pipeline.filter.rows import load_filter_labels
from training.pipeline.filter.scoring import score_images
from training.pipeline.filter.synthetic import train_synthetic_filter
from training.pipeline.filter.training import train_filter
from training.store import RecordLog


logger = logging.getLogger(__name__)

MODEL_FOLDER = "model"
EVALUATION_FOLDER = "evaluation"


def train_filter_command(
    recipe: str | Path,
    labels: str | None = None,
    synthetic_per_family: int | None = None,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Trains the filter of `recipe` and evaluates it on held-out labels.

    Args:
        labels: a built `filter_labels` folder; overrides the recipe's label source.
        synthetic_per_family: train on generated images instead, this many relational images per family and as many
            non-relational ones in all.
        output_dir: where the model and reports go (default: the recipe's `output_dir`).

    Returns:
        the held-out report(s) as a dict (`trained`, and `untrained` for generated images).
    """
    if labels and synthetic_per_family:
        raise ValueError("give --labels or --synthetic-per-family, not both")
    overrides: dict[str, Any] = {}
    if labels:
        overrides.update(labels=str(labels), synthetic_positives_per_family=None)
    if synthetic_per_family:
        if synthetic_per_family < 1:
            raise ValueError(f"--synthetic-per-family must be at least 1, got {synthetic_per_family}")
        overrides.update(
            labels=None,
            synthetic_positives_per_family=synthetic_per_family,
            synthetic_negatives=8 * synthetic_per_family,
        )
    _, sft, settings = load_filter_recipe(recipe, overrides)
    output = Path(output_dir) if output_dir is not None else Path(sft.output_dir)
    if settings.synthetic_positives_per_family:
        _, run = train_synthetic_filter(output, recipe, overrides)
        return run.to_dict()
    if not settings.labels:
        raise ValueError(f"{recipe}: no labels; set `labels` (or pass --labels) or synthetic_positives_per_family")
    return _train_on_labels(recipe, overrides, output)


def _train_on_labels(recipe: str | Path, overrides: Mapping[str, Any], output: Path) -> dict[str, Any]:
    from sklearn.model_selection import train_test_split

    model_arguments, sft, settings = load_filter_recipe(recipe, {**overrides, "output_dir": str(output / MODEL_FOLDER)})
    dataset = load_filter_labels(settings.labels, settings.labels_split)
    values = [int(value) for value in dataset["label"]]
    positions = np.arange(len(dataset))
    if settings.eval_fraction:
        train_positions, eval_positions = train_test_split(
            positions, test_size=settings.eval_fraction, stratify=values, random_state=sft.seed
        )
    else:
        train_positions, eval_positions = positions, np.array([], dtype=int)
    chat = train_filter(model_arguments.load_chat(), dataset.select(sorted(train_positions)), sft, settings.balance)
    if not len(eval_positions):
        logger.info("eval_fraction is 0: no held-out labels, no evaluation")
        return {}
    held_out = dataset.select(sorted(eval_positions))
    scores = score_images(chat, held_out, batch_size=settings.score_batch_size)
    report = evaluate_filter(
        scores, [int(value) for value in held_out["label"]], output / EVALUATION_FOLDER, settings.target_precision
    )
    return {"trained": report.to_dict()}


def _label(value: Any, where: str) -> int:
    names = {"1": 1, "0": 0, "true": 1, "false": 0, "yes": 1, "no": 0, "relational": 1, "not_relational": 0}
    key = str(value).strip().lower()
    if key not in names:
        raise ValueError(f"{where}: label {value!r}; expected 1/0, true/false, yes/no or relational/not_relational")
    return names[key]


def read_labels(path: str | Path) -> dict[str, int]:
    """`image_hash -> 1/0` from a csv (header naming `image_hash` and `label`) or a jsonl of such rows."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as file:
            records = list(enumerate(csv.DictReader(file), start=2))
    elif path.suffix.lower() == ".jsonl":
        records = list(read_json_lines(path))
    else:
        raise ValueError(f"{path}: labels are a .csv or .jsonl file of image_hash, label")
    labels = {}
    for number, record in records:
        where = f"{path}:{number}"
        if not isinstance(record, dict) or not record.get("image_hash") or record.get("label") in (None, ""):
            raise ValueError(f"{where}: a label row needs `image_hash` and `label`")
        labels[str(record["image_hash"])] = _label(record["label"], where)
    return labels


def evaluate_scores_command(
    scores_jsonl: str | Path, labels_path: str | Path, output_dir: str | Path, target_precision: float | None = None
):
    """Evaluates a scoring run's `filter.jsonl` against labels, joined by `image_hash`; an image the filter could not
    read (an `error` row) counts as unscored. Labelled images the run never saw and scored images without a label
    are left out and logged.

    Returns:
        the `FilterReport` (also written to `output_dir` with the PR curve).
    """
    labels = read_labels(labels_path)
    scored: dict[str, float] = {}
    for _, row in RecordLog(scores_jsonl, what="filter score", required=("image_hash",)).records():
        score = row.get("filter_score")
        scored[row["image_hash"]] = float("nan") if score is None or row.get("error") else float(score)
    common = [image_hash for image_hash in labels if image_hash in scored]
    if not common:
        raise ValueError(f"no image_hash of {labels_path} is among the scores of {scores_jsonl}")
    if len(common) < len(labels):
        logger.warning("%d labelled images have no score in %s", len(labels) - len(common), scores_jsonl)
    if len(common) < len(scored):
        logger.info("%d scored images have no label and are left out", len(scored) - len(common))
    return evaluate_filter(
        [scored[image_hash] for image_hash in common],
        [labels[image_hash] for image_hash in common],
        output_dir,
        target_precision,
    )
