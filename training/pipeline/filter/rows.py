"""SFT rows for the filter: one user turn (the image and the fixed question), one assistant turn ("Yes"/"No").

Class imbalance (the paper's labels are about 1 relational to 8 not): the default is **loss weighting**, each row
weighted by `n / (2 * n_class)` (mean weight 1). Every human label is then seen exactly once per epoch, none is
dropped (undersampling would discard 7 of 8 negatives) and none is repeated (oversampling would show each
positive 8 times per epoch, which a LoRA memorises), while the loss still counts both classes equally, so P(yes)
reads as a balanced-prior probability; the operating threshold is then chosen on held-out labels
(`evaluate_filter`). `balance="oversample"` (positives repeated to the negatives' count) and `"none"` remain for
comparison.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from training.pipeline.filter.question import ANSWERS, RELATIONAL_QUESTION


logger = logging.getLogger(__name__)

BALANCES = ("weight", "oversample", "none")
FILTER_LABELS_CONFIG = "filter_labels"


def _label_value(label: Any, position: int) -> int:
    """1 for relational, 0 for not: ints/bools 1/0 or the `filter_labels` ClassLabel names."""
    if isinstance(label, str):
        names = {"relational": 1, "not_relational": 0, "yes": 1, "no": 0}
        if label.strip().lower() in names:
            return names[label.strip().lower()]
    elif isinstance(label, (bool, int, np.integer)) and int(label) in (0, 1):
        return int(label)
    raise ValueError(f"label {position} is {label!r}; expected 1/0, True/False, 'relational'/'not_relational'")


def filter_rows(
    images: Sequence[Any], labels: Sequence[Any], question: str = RELATIONAL_QUESTION
) -> list[dict[str, Any]]:
    """SFT rows (`images`, `prompt`, `answer`) from images (PIL images or file paths) and their labels."""
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    return [
        {"images": [image], "prompt": question, "answer": ANSWERS[0] if _label_value(label, position) else ANSWERS[1]}
        for position, (image, label) in enumerate(zip(images, labels, strict=True))
    ]


def load_filter_labels(path: str | Path, split: str = "train") -> datasets.Dataset:
    """The `filter_labels` dataset that `python -m training.hub_data build filter-labels` + `download` write: the
    built folder (holding `filter_labels/`), that configuration's folder, or a `save_to_disk` dataset."""
    path = Path(path)
    folder = path / FILTER_LABELS_CONFIG if (path / FILTER_LABELS_CONFIG).is_dir() else path
    if not folder.is_dir():
        raise FileNotFoundError(f"{path} is no folder; expected the output of `python -m training.hub_data download`")
    loaded = datasets.load_from_disk(str(folder))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ValueError(f"{folder} has the splits {list(loaded)}, not {split!r}")
        loaded = loaded[split]
    missing = [name for name in ("image", "label") if name not in loaded.column_names]
    if missing:
        raise ValueError(
            f"{folder} lacks the columns {missing}; run `python -m training.hub_data download` to attach the images"
        )
    return loaded


def filter_label_rows(dataset: datasets.Dataset, question: str = RELATIONAL_QUESTION) -> list[dict[str, Any]]:
    """SFT rows from a `filter_labels` dataset; rows whose image failed to download (None) are skipped, counted and
    logged with their image hash."""
    images = dataset.cast_column("image", datasets.Image(decode=False))["image"] if "image" in dataset.features else []
    hashes = dataset["image_hash"] if "image_hash" in dataset.column_names else range(len(dataset))
    kept_images, kept_labels, missing = [], [], []
    for image, label, image_hash in zip(images, dataset["label"], hashes, strict=True):
        if image is None:
            missing.append(str(image_hash))
            continue
        kept_images.append(image["bytes"] if image.get("bytes") else image["path"])
        kept_labels.append(label)
    if missing:
        logger.warning("%d labelled images have no image (not downloaded), skipped: %s", len(missing), missing[:10])
    return filter_rows(kept_images, kept_labels, question)


def class_weights(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`n / (2 * n_answer)` per answer: both classes carry half the loss, and the mean row weight is 1."""
    counts = Counter(row["answer"] for row in rows)
    if set(counts) != set(ANSWERS):
        raise ValueError(f"the filter needs both answers among its rows, got counts {dict(counts)}")
    return {answer: len(rows) / (2 * count) for answer, count in counts.items()}


def balance_rows(rows: Sequence[Mapping[str, Any]], balance: str, seed: int = 0) -> list[dict[str, Any]]:
    """The rows with the class balance applied (see the module docstring for the choice)."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    rows = [dict(row) for row in rows]
    if balance == "none":
        return rows
    if balance == "weight":
        weights = class_weights(rows)
        return [{**row, "weight": weights[row["answer"]]} for row in rows]
    by_answer = {answer: [row for row in rows if row["answer"] == answer] for answer in ANSWERS}
    target = max(len(group) for group in by_answer.values())
    rng = np.random.default_rng(seed)
    balanced = []
    for group in by_answer.values():
        if not group:
            raise ValueError("the filter needs both answers among its rows")
        extra = rng.choice(len(group), target - len(group), replace=True) if target > len(group) else []
        balanced += group + [group[index] for index in extra]
    return [balanced[index] for index in rng.permutation(len(balanced))]
