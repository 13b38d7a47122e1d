"""Synthetic analogy triplets with a known answer, for checking a relational metric on analogy scoring.

For each source image (a family drawn in some style), two "generated" images stand in for two editing models:
- `relation-kept`: the same family drawn with other objects (another shape and colour): a good analogy;
- `relation-broken`: another family drawn with the source's very objects: the looks kept, the relation lost.
A relational metric should score the first above the second; an attribute metric the other way round.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

from training.synthetic.attributes import colours_for, sample_style, shapes_for
from training.synthetic.families import FAMILY_NAMES, draw_example


KEPT, BROKEN = "relation-kept", "relation-broken"


def write_synthetic_triplets(
    folder: str | Path, per_family: int = 2, split: str = "heldout", image_size: int = 112, seed: int = 0
) -> Path:
    """Draws the images under `folder` and writes `folder/triplets.csv` (`source,generated,model`, two rows per
    source, relative paths); returns the csv path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for family_index, family in enumerate(FAMILY_NAMES):
        for index in range(per_family):
            rng = np.random.default_rng([seed, family_index, index])
            style = sample_style(rng, split)
            other_shape = str(rng.choice([shape for shape in shapes_for(split) if shape != style.shape]))
            other_colour = str(rng.choice([colour for colour in colours_for(split) if colour != style.colour]))
            restyled = dataclasses.replace(style, shape=other_shape, colour=other_colour)
            other_family = FAMILY_NAMES[
                (family_index + 1 + int(rng.integers(len(FAMILY_NAMES) - 1))) % len(FAMILY_NAMES)
            ]
            drawings = {
                "source": draw_example(family, rng, style, image_size, split)[0],
                KEPT: draw_example(family, rng, restyled, image_size, split)[0],
                BROKEN: draw_example(other_family, rng, style, image_size, split)[0],
            }
            names = {}
            for role, image in drawings.items():
                names[role] = f"images/{family}-{index:02d}-{role}.png"
                image.save(folder / names[role])
            rows += [{"source": names["source"], "generated": names[model], "model": model} for model in (KEPT, BROKEN)]
    path = folder / "triplets.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=["source", "generated", "model"])
        writer.writeheader()
        writer.writerows(rows)
    return path
