"""Synthetic relational datasets: every image drawn from its own seed, so any subset is reproducible on its own."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from transformers.utils.logging import tqdm

from training.image_ids import url_image_hash
from training.json_lines import write_json_lines
from training.synthetic.attributes import SPLITS, ObjectStyle, sample_style
from training.synthetic.families import FAMILIES, FAMILY_NAMES, draw_example


logger = logging.getLogger(__name__)

FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "family": datasets.ClassLabel(names=list(FAMILY_NAMES)),
        "shape": datasets.Value("string"),
        "colour": datasets.Value("string"),
        "texture": datasets.Value("string"),
        "background": datasets.Value("string"),
        "index": datasets.Value("int32"),
    }
)


def synthetic_examples(
    num_per_family: int,
    split: str = "train",
    seed: int = 0,
    image_size: int = 112,
    families: Sequence[str] = FAMILY_NAMES,
    show_progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yields `num_per_family` examples of each family (families interleaved), each with its metadata.

    Args:
        split: `"train"` draws the training shapes and colours, `"heldout"` only the held-out ones.
        seed: with `(split, family, index)` it fixes every pixel of an example.
    """
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; choose from {FAMILY_NAMES}")
    if num_per_family < 1 or image_size < 32:
        raise ValueError(f"need num_per_family >= 1 and image_size >= 32, got {num_per_family} and {image_size}")
    draws = seeded_draws(families, FAMILY_NAMES.index, num_per_family, split, seed, "images", show_progress)
    for index, name, rng, style in draws:
        image, metadata = draw_example(name, rng, style, image_size, split)
        yield {
            "image": image,
            "caption": FAMILIES[name].caption,
            "family": name,
            **look_columns(style, style.shape, index, metadata),
        }


def seeded_draws(
    items: Sequence[Any],
    number_of: Callable[[Any], int],
    count: int,
    split: str,
    seed: int,
    what: str,
    show_progress: bool = False,
) -> Iterator[tuple[int, Any, np.random.Generator, ObjectStyle]]:
    """`(index, item, rng, style)` for `count` rounds over `items` (interleaved): each draw's generator is seeded by
    `(seed, split, number_of(item), index)`, so one example's pixels never depend on which others are drawn."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with tqdm(total=count * len(items), desc=f"drawing {split} {what}", unit="image", disable=not show_progress) as bar:
        for index in range(count):
            for item in items:
                rng = np.random.default_rng([seed, SPLITS.index(split), number_of(item), index])
                yield index, item, rng, sample_style(rng, split)
                bar.update(1)


def look_columns(style: ObjectStyle, shape: str, index: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """The nuisance columns every generated example carries beside its relation: its look, index and metadata."""
    return {
        "shape": shape,
        "colour": style.colour,
        "texture": style.texture,
        "background": style.background,
        "index": index,
        "metadata": metadata,
    }


def synthetic_dataset(num_per_family: int, split: str = "train", **drawing: Any) -> datasets.Dataset:
    """The examples as a `datasets.Dataset` (`image`, `caption`, `family` label and the nuisance attributes).

    `drawing`: `synthetic_examples`' other settings (`seed`, `image_size`, `families`, `show_progress`).
    """
    return examples_dataset(synthetic_examples(num_per_family, split, **drawing), FEATURES)


def examples_dataset(examples: Iterable[Mapping[str, Any]], features: datasets.Features) -> datasets.Dataset:
    """Generated examples as a `datasets.Dataset` of the columns `features` names (metadata dicts left out)."""
    rows: dict[str, list[Any]] = {name: [] for name in features}
    for example in examples:
        for name in features:
            rows[name].append(example[name])
    return datasets.Dataset.from_dict(rows, features=features)


def synthetic_url(split: str, family: str, index: int) -> str:
    return f"synthetic://{split}/{family}/{index}"


def write_official_format(dataset: datasets.Dataset, folder: str | Path, split: str) -> Path:
    """Writes `images/<md5(url)>.png` and `captions.jsonl` rows `{"image_hash", "caption", "url_link"}` with the
    caption wrapped in literal quotes, as the official release stores them; returns the jsonl path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    family_names = dataset.features["family"].names
    lines = []
    for example in dataset:
        url = synthetic_url(split, family_names[example["family"]], example["index"])
        image_hash = url_image_hash(url)
        example["image"].save(folder / "images" / f"{image_hash}.png")
        lines.append({"image_hash": image_hash, "caption": f'"{example["caption"]}"', "url_link": url})
    jsonl = write_json_lines(folder / "captions.jsonl", lines)
    logger.info("wrote %d images and %s", len(lines), jsonl)
    return jsonl
