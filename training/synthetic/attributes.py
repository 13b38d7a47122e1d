"""The nuisance attributes of synthetic objects, and which of them training never sees.

Relational similarity must not depend on what an object looks like, so every image draws its shape, colour,
texture, size and background at random; a few shapes and colours are held out of training entirely and appear only
in held-out images, where a model that matched looks instead of logic would be caught.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


TRAIN_SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "heart")
HELD_OUT_SHAPES = ("star", "cross", "arrow")
SHAPES = TRAIN_SHAPES + HELD_OUT_SHAPES

TRAIN_COLOURS = {
    "red": (214, 48, 49),
    "orange": (230, 126, 34),
    "yellow": (222, 178, 0),
    "green": (39, 174, 96),
    "blue": (41, 98, 255),
    "purple": (142, 68, 173),
    "brown": (121, 85, 61),
    "black": (30, 30, 30),
    "navy": (20, 40, 110),
}
HELD_OUT_COLOURS = {"teal": (0, 150, 150), "pink": (232, 67, 147), "olive": (128, 128, 0)}
COLOURS = {**TRAIN_COLOURS, **HELD_OUT_COLOURS}

TEXTURES = ("solid", "outline", "striped")
BACKGROUNDS = {
    "white": (255, 255, 255),
    "cream": (250, 243, 224),
    "pale grey": (226, 230, 233),
    "pale blue": (222, 235, 247),
    "pale green": (226, 244, 226),
}
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class ObjectStyle:
    """How the objects of one image look: everything a relational embedding should ignore."""

    shape: str
    colour: str
    texture: str
    background: str
    scale: float

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        return BACKGROUNDS[self.background]


def shapes_for(split: str) -> tuple[str, ...]:
    """Training images use the training shapes; held-out images use only the held-out ones."""
    _check_split(split)
    return TRAIN_SHAPES if split == "train" else HELD_OUT_SHAPES


def colours_for(split: str) -> tuple[str, ...]:
    _check_split(split)
    return tuple(TRAIN_COLOURS) if split == "train" else tuple(HELD_OUT_COLOURS)


def sample_style(rng: np.random.Generator, split: str) -> ObjectStyle:
    """A random style from the split's vocabulary; the size scale varies the objects by a factor of about 1.5."""
    return ObjectStyle(
        shape=str(rng.choice(shapes_for(split))),
        colour=str(rng.choice(colours_for(split))),
        texture=str(rng.choice(TEXTURES)),
        background=str(rng.choice(list(BACKGROUNDS))),
        scale=float(rng.uniform(0.8, 1.2)),
    )


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
