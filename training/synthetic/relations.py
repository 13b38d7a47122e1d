"""Which relations training sees, and the compositional world as examples and a `datasets.Dataset`.

Besides held-out looks (`attributes`), a quarter of the valid relations is held out of training entirely, chosen
so that every factor value still appears in training in other combinations: a model that names or retrieves a
held-out relation must have composed it. The split is fixed by a seed and checked in as `relation_split.json`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from training.synthetic.dataset import examples_dataset, look_columns, seeded_draws
from training.synthetic.drawing import draw_relation
from training.synthetic.factors import FACTORS, VALID_NAMES, VALID_RELATIONS, Relation, check_valid


SPLIT_FILE = Path(__file__).with_name("relation_split.json")
SPLIT_SEED = 27
HELD_OUT_FRACTION = 0.25
RELATION_SPLITS = ("train", "heldout", "all")

FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "caption": datasets.Value("string"),
        "relation": datasets.Value("string"),
        **{factor: datasets.Value("string") for factor in FACTORS},
        "shape": datasets.Value("string"),
        "colour": datasets.Value("string"),
        "texture": datasets.Value("string"),
        "background": datasets.Value("string"),
        "index": datasets.Value("int32"),
    }
)


def held_out_relations(seed: int = SPLIT_SEED, fraction: float = HELD_OUT_FRACTION) -> tuple[Relation, ...]:
    """The relations training never sees: a seeded shuffle of the valid ones, each taken only while every factor
    value it uses stays in at least two training relations, until `fraction` of them is held out."""
    order = np.random.default_rng(seed).permutation(len(VALID_RELATIONS))
    uses = Counter((factor, getattr(r, factor)) for r in VALID_RELATIONS for factor in FACTORS)
    target = round(fraction * len(VALID_RELATIONS))
    held_out = []
    for index in order:
        relation = VALID_RELATIONS[index]
        values = [(factor, getattr(relation, factor)) for factor in FACTORS]
        if len(held_out) == target:
            break
        if all(uses[value] > 2 for value in values):
            held_out.append(relation)
            uses.subtract(values)
    return tuple(sorted(held_out))


def relation_split(which: str) -> tuple[Relation, ...]:
    """The relations of `which` split (`train`, `heldout` or `all`), as written in `relation_split.json`."""
    if which not in RELATION_SPLITS:
        raise ValueError(f"relation split must be one of {RELATION_SPLITS}, got {which!r}")
    held_out = {Relation.from_name(name) for name in json.loads(SPLIT_FILE.read_text())["heldout"]}
    if which == "all":
        return VALID_RELATIONS
    return tuple(r for r in VALID_RELATIONS if (r in held_out) == (which == "heldout"))


def write_split(path: str | Path = SPLIT_FILE) -> Path:
    """Writes the held-out relations by name (run once when the world changes; a test keeps the file in sync)."""
    names = [relation.name for relation in held_out_relations()]
    record = {"seed": SPLIT_SEED, "fraction": HELD_OUT_FRACTION, "valid": len(VALID_NAMES), "heldout": names}
    Path(path).write_text(json.dumps(record, indent=1) + "\n")
    return Path(path)


def relation_examples(
    num_per_relation: int,
    split: str = "train",
    relations: str | Sequence[Relation] = "train",
    seed: int = 0,
    image_size: int = 112,
    show_progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Yields `num_per_relation` examples of each relation (relations interleaved), each with its metadata.

    Args:
        split: the looks: `"train"` draws the training shapes and colours, `"heldout"` only the held-out ones.
        relations: a relation split (`"train"`, `"heldout"`, `"all"`) or the relations themselves.
        seed: with `(split, relation, index)` it fixes every pixel of an example.
    """
    chosen = relation_split(relations) if isinstance(relations, str) else tuple(map(check_valid, relations))
    if num_per_relation < 1 or image_size < 32:
        raise ValueError(f"need num_per_relation >= 1 and image_size >= 32, got {num_per_relation} and {image_size}")
    draws = seeded_draws(chosen, VALID_RELATIONS.index, num_per_relation, split, seed, "relations", show_progress)
    for index, relation, rng, style in draws:
        image, metadata = draw_relation(relation, rng, style, image_size, split)
        yield {
            "image": image,
            "caption": relation.caption,
            "relation": relation.name,
            **{factor: getattr(relation, factor) for factor in FACTORS},
            **look_columns(style, metadata["shape"], index, metadata),
        }


def relation_dataset(num_per_relation: int, split: str = "train", **drawing: Any) -> datasets.Dataset:
    """The examples as a `datasets.Dataset` (image, caption, relation and its factors, the nuisance attributes).

    `drawing`: `relation_examples`' other settings (`relations`, `seed`, `image_size`, `show_progress`).
    """
    return examples_dataset(relation_examples(num_per_relation, split, **drawing), FEATURES)
