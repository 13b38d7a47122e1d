"""Non-relational renders: the negatives a relational filter learns to reject.

Three kinds, drawn with the same shapes, colours, textures and backgrounds as the relation families so that the
look alone never tells a negative from a positive:

- `plain_object`: one object somewhere on the canvas;
- `scatter`: three to six objects with no logic a relation family has, by construction (see `is_unstructured`):
  every object its own shape/colour pair, at least two shapes and two colours (no odd-one-out or repetition), sizes
  that differ (no single size), no two centres aligned on either axis (no row, column, tower or grid), centres
  spread in two dimensions and not on a ring (no progression, stacking, radial or mosaic), no overlap (no nesting),
  no separator lines (no counting panels) and no mirror symmetry (checked on the pixels);
- `empty_background`: a background with a faint smooth texture and nothing on it.

Plain objects and scatters get the textured background half of the time, so texture alone does not mark a negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image

from training.synthetic.attributes import (
    BACKGROUNDS,
    COLOURS,
    SPLITS,
    TEXTURES,
    colours_for,
    shapes_for,
)
from training.synthetic.shapes import draw_object


NEGATIVE_KINDS = ("plain_object", "scatter", "empty_background")
# Keeps negative seeds apart from the families' `[seed, split, family_index, index]`.
_SEED_TAG = 1000
_SCATTER_ATTEMPTS = 500
# The thresholds of `is_unstructured`, as fractions of the image side where they are distances.
MIN_AXIS_OFFSET = 0.04
MIN_SPREAD_RATIO = 0.12
MIN_RING_DEVIATION = 0.12
MIN_SIZE_RATIO = 1.6  # radii; a square's extent is 1.41 r, a circle's 2 r
MAX_MIRROR_OVERLAP = 0.35
Drawing = tuple[PIL.Image.Image, dict[str, Any]]


def textured_background(rng: np.random.Generator, rgb: tuple[int, int, int], size: int) -> PIL.Image.Image:
    """`rgb` with smooth low-contrast blotches and a fine grain: paper- or wall-like, with no shape or edge."""
    coarse = np.clip(rng.normal(0.0, 1.0, (6, 6, 3)), -2.5, 2.5).astype(np.float32)
    blotches = np.stack(
        [
            np.asarray(PIL.Image.fromarray(coarse[..., channel], mode="F").resize((size, size), PIL.Image.BICUBIC))
            for channel in range(3)
        ],
        axis=-1,
    )
    grain = rng.normal(0.0, 2.5, (size, size, 3))
    pixels = np.asarray(rgb, dtype=np.float32) + 6.0 * blotches + grain
    return PIL.Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _background(rng: np.random.Generator, background: str, size: int, textured: bool) -> PIL.Image.Image:
    if textured:
        return textured_background(rng, BACKGROUNDS[background], size)
    return PIL.Image.new("RGB", (size, size), BACKGROUNDS[background])


def draw_plain_object(rng: np.random.Generator, split: str, size: int) -> Drawing:
    """One object of random shape, colour, texture and size, anywhere on the canvas."""
    shape, colour = str(rng.choice(shapes_for(split))), str(rng.choice(colours_for(split)))
    texture, background = str(rng.choice(TEXTURES)), str(rng.choice(list(BACKGROUNDS)))
    textured = bool(rng.random() < 0.5)
    radius = float(rng.uniform(0.12, 0.32) * size)
    centre = (float(rng.uniform(radius + 2, size - radius - 2)), float(rng.uniform(radius + 2, size - radius - 2)))
    image = _background(rng, background, size, textured)
    draw_object(image, shape, centre, radius, COLOURS[colour], texture)
    item = {"shape": shape, "colour": colour, "texture": texture, "x": centre[0], "y": centre[1], "radius": radius}
    metadata = {"objects": [item], "textured_background": textured}
    return image, {"shape": shape, "colour": colour, "texture": texture, "background": background, **metadata}


def draw_scatter(rng: np.random.Generator, split: str, size: int) -> Drawing:
    """Three to six objects, each its own shape, colour, texture and size, at random places that form no pattern.

    Layouts are drawn until one passes `is_unstructured`; with the same generator state the result is the same.

    Raises:
        RuntimeError: when no layout passes in `_SCATTER_ATTEMPTS` draws (an image side far too small).
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    textured = bool(rng.random() < 0.5)
    for _ in range(_SCATTER_ATTEMPTS):
        objects = _scatter_layout(rng, split, size)
        if objects is None or not is_unstructured(objects, size):
            continue
        image = _background(rng, background, size, textured)
        foreground = np.zeros((size, size), dtype=bool)
        for item in objects:
            centre, rgb = (item["x"], item["y"]), COLOURS[item["colour"]]
            foreground |= draw_object(image, item["shape"], centre, item["radius"], rgb, item["texture"])
        if mirror_overlap(foreground) <= MAX_MIRROR_OVERLAP:
            attributes = {"shape": "mixed", "colour": "mixed", "texture": "mixed", "background": background}
            return image, {**attributes, "objects": objects, "textured_background": textured}
    raise RuntimeError(f"no unstructured scatter found in {_SCATTER_ATTEMPTS} draws at image_size={size}")


def _scatter_layout(rng: np.random.Generator, split: str, size: int) -> list[dict[str, Any]] | None:
    count = int(rng.integers(3, 7))
    pairs = list(itertools.product(shapes_for(split), colours_for(split)))
    chosen = rng.choice(len(pairs), size=count, replace=False)
    objects: list[dict[str, Any]] = []
    for pair_index in chosen:
        shape, colour = pairs[int(pair_index)]
        radius = float(rng.uniform(0.05, 0.14) * size)
        for _ in range(50):
            x, y = (float(value) for value in rng.uniform(radius + 2, size - radius - 2, 2))
            if all(math.hypot(x - o["x"], y - o["y"]) > radius + o["radius"] + 4 for o in objects):
                break
        else:
            return None
        texture = str(rng.choice(TEXTURES))
        objects.append({"shape": shape, "colour": colour, "texture": texture, "x": x, "y": y, "radius": radius})
    return objects


def is_unstructured(objects: Sequence[dict[str, Any]], size: int) -> bool:
    """Whether a layout avoids every relation family's logic (the pixel-level mirror check is `mirror_overlap`).

    Args:
        objects: dicts with `shape`, `colour`, `x`, `y`, `radius`.
        size: the image side, which scales the distance thresholds.
    """
    pairs = [(item["shape"], item["colour"]) for item in objects]
    if len(set(pairs)) < len(pairs) or len({s for s, _ in pairs}) < 2 or len({c for _, c in pairs}) < 2:
        return False
    radii = np.array([item["radius"] for item in objects])
    if radii.max() / radii.min() < MIN_SIZE_RATIO:
        return False
    centres = np.array([[item["x"], item["y"]] for item in objects])
    for first, second in itertools.combinations(centres, 2):
        if np.abs(first - second).min() < MIN_AXIS_OFFSET * size:
            return False
    return spread_ratio(centres) >= MIN_SPREAD_RATIO and (
        len(objects) < 4 or ring_deviation(centres) >= MIN_RING_DEVIATION
    )


def spread_ratio(centres: np.ndarray) -> float:
    """Square root of the smaller over the larger eigenvalue of the centres' covariance: 0 for points on a line."""
    eigenvalues = np.linalg.eigvalsh(np.cov(np.asarray(centres, dtype=float).T))
    return float(math.sqrt(max(eigenvalues[0], 0.0) / eigenvalues[1])) if eigenvalues[1] > 0 else 0.0


def ring_deviation(centres: np.ndarray) -> float:
    """Spread of the centres' distances to their mean over the mean distance: 0 for points on a circle."""
    centres = np.asarray(centres, dtype=float)
    distances = np.linalg.norm(centres - centres.mean(0), axis=1)
    return float(distances.std() / distances.mean())


def mirror_overlap(mask: np.ndarray) -> float:
    """The larger share of foreground pixels that land on foreground when the mask is flipped left-right or
    up-down: 1 for a mirror-symmetric picture."""
    total = mask.sum()
    if total == 0:
        return 0.0
    return float(max((mask & mask[:, ::-1]).sum(), (mask & mask[::-1, :]).sum()) / total)


def draw_empty_background(rng: np.random.Generator, split: str, size: int) -> Drawing:
    """Nothing but a textured background."""
    background = str(rng.choice(list(BACKGROUNDS)))
    image = textured_background(rng, BACKGROUNDS[background], size)
    metadata = {"objects": [], "textured_background": True}
    return image, {"shape": "none", "colour": "none", "texture": "none", "background": background, **metadata}


_DRAWERS = {
    "plain_object": draw_plain_object,
    "scatter": draw_scatter,
    "empty_background": draw_empty_background,
}


def negative_examples(
    num: int,
    split: str = "train",
    seed: int = 0,
    image_size: int = 112,
    kinds: Sequence[str] = NEGATIVE_KINDS,
) -> Iterator[dict[str, Any]]:
    """Yields `num` non-relational examples, the kinds taking turns (so any prefix is balanced).

    Each example is drawn from its own seed `(seed, split, kind, index within the kind)`, so it does not depend
    on `num` and never coincides with a relation family's image.

    Args:
        split: `"train"` draws the training shapes and colours, `"heldout"` only the held-out ones.

    Yields:
        dicts with `image` (PIL RGB), `kind`, `shape`, `colour`, `texture` (`"mixed"` for a scatter, `"none"` for an
        empty background), `background`, `index` (within the kind) and `metadata` (`objects`: each object's shape,
        colour, texture, centre `x`, `y` and `radius` in pixels; `textured_background`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = [kind for kind in kinds if kind not in _DRAWERS]
    if unknown or not kinds:
        raise ValueError(f"unknown negative kinds {unknown or kinds}; choose from {NEGATIVE_KINDS}")
    if num < 0 or image_size < 32:
        raise ValueError(f"need num >= 0 and image_size >= 32, got {num} and {image_size}")
    for position in range(num):
        kind, index = kinds[position % len(kinds)], position // len(kinds)
        rng = np.random.default_rng([seed, SPLITS.index(split), _SEED_TAG + NEGATIVE_KINDS.index(kind), index])
        image, attributes = _DRAWERS[kind](rng, split, image_size)
        metadata = {"objects": attributes.pop("objects"), "textured_background": attributes.pop("textured_background")}
        yield {"image": image, "kind": kind, **attributes, "index": index, "metadata": metadata}
