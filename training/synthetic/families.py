"""Eight relation families: each draws an image whose logic is known exactly and carries an anonymous caption.

Objects of one image share a style (shape, colour, texture) drawn at random; the relation, not the look, is what
images of one family have in common. Each drawer returns the image and metadata a test can check against pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image

from training.synthetic.attributes import COLOURS, ObjectStyle, colours_for, shapes_for
from training.synthetic.shapes import draw_object


SEPARATOR_RGB = (90, 90, 90)
Drawing = tuple[PIL.Image.Image, dict[str, Any]]


@dataclass(frozen=True)
class RelationFamily:
    name: str
    caption: str
    draw: Callable[[np.random.Generator, ObjectStyle, int, str], Drawing]


def _canvas(style: ObjectStyle, size: int) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (size, size), style.background_rgb)


def _paint(image: PIL.Image.Image, style: ObjectStyle, centre, radius, shape=None, colour=None) -> None:
    draw_object(image, shape or style.shape, centre, radius, colour or style.rgb, style.texture)


def draw_progression(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """A row of the same object growing in size from one end to the other."""
    # three steps and no style shrink: each step must add clearly visible size at 112 pixels
    count = 3
    slot = size * 0.92 / count
    largest = min(slot / 2 - 1.5, size * 0.22)
    # the smallest object stays large enough for thin shapes (a star's points) to survive rasterisation
    radii = list(np.linspace(max(largest * 0.45, size * 0.06), largest, count))
    if rng.random() < 0.5:
        radii.reverse()
    centre_y = size / 2 + rng.uniform(-1, 1) * (size / 2 - largest - 2) * 0.6
    vertical = bool(rng.random() < 0.5)
    image = _canvas(style, size)
    for index, radius in enumerate(radii):
        along, across = size * 0.04 + slot * (index + 0.5), centre_y
        _paint(image, style, (across, along) if vertical else (along, across), radius)
    return image, {"radii": [float(radius) for radius in radii], "vertical": vertical}


def draw_odd_one_out(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """A 3x3 or 4x4 grid of identical objects, one of which differs in shape or colour."""
    side = int(rng.choice([3, 4]))
    cell = size // side  # whole pixels: identical objects then rasterise identically in every cell
    margin = (size - side * cell) // 2
    radius = cell * 0.32 * min(style.scale, 1.1)
    odd_index = int(rng.integers(side * side))
    if rng.random() < 0.5:
        odd_kind, odd_value = "shape", str(rng.choice([s for s in shapes_for(split) if s != style.shape]))
    else:
        odd_kind, odd_value = "colour", str(rng.choice([c for c in colours_for(split) if c != style.colour]))
    image = _canvas(style, size)
    for index in range(side * side):
        centre = (margin + cell * (index % side + 0.5), margin + cell * (index // side + 0.5))
        if index == odd_index and odd_kind == "shape":
            _paint(image, style, centre, radius, shape=odd_value)
        elif index == odd_index:
            _paint(image, style, centre, radius, colour=COLOURS[odd_value])
        else:
            _paint(image, style, centre, radius)
    metadata = {"odd_index": odd_index, "odd_kind": odd_kind, "odd_value": odd_value}
    return image, {**metadata, "side": side, "cell": cell, "margin": margin}


def _scatter(rng, count, radius_range, bounds, attempts=200) -> list[tuple[float, float, float]]:
    """Non-overlapping circles (x, y, r) inside `bounds` = (left, top, right, bottom), by rejection sampling."""
    left, top, right, bottom = bounds
    placed: list[tuple[float, float, float]] = []
    for _ in range(attempts):
        if len(placed) == count:
            break
        radius = rng.uniform(*radius_range)
        x, y = rng.uniform(left + radius, right - radius), rng.uniform(top + radius, bottom - radius)
        if all(math.hypot(x - px, y - py) > radius + pr + 3 for px, py, pr in placed):
            placed.append((x, y, radius))
    return placed


def draw_mirror_symmetry(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Objects on the left half mirrored exactly onto the right half."""
    half = size // 2
    radius_range = (size * 0.06 * style.scale, size * 0.11 * style.scale)
    objects = _scatter(rng, int(rng.integers(2, 5)), radius_range, (2, 2, half - 3, size - 2))
    image = _canvas(style, size)
    for x, y, radius in objects:
        _paint(image, style, (x, y), radius)
    pixels = np.asarray(image).copy()
    pixels[:, size - half :] = pixels[:, :half][:, ::-1]
    return PIL.Image.fromarray(pixels), {"count": len(objects)}


def draw_nesting(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """An object inside a larger object of the same kind (two or three levels), colour alternating with ground."""
    levels = int(rng.integers(2, 4))
    outer = size * 0.42 * min(style.scale, 1.1)
    centre = (
        size / 2 + rng.uniform(-1, 1) * (size / 2 - outer - 1),
        size / 2 + rng.uniform(-1, 1) * (size / 2 - outer - 1),
    )
    radii = [outer * 0.55**level for level in range(levels)]
    # stripes across nested contours hide the nesting, so a striped style is drawn as outlines here
    texture = "outline" if style.texture == "striped" else style.texture
    image = _canvas(style, size)
    for level, radius in enumerate(radii):
        colour = style.rgb if level % 2 == 0 or texture != "solid" else style.background_rgb
        draw_object(image, style.shape, centre, radius, colour, texture)
    return image, {"radii": [float(radius) for radius in radii], "centre": [float(value) for value in centre]}


# No circle: small objects along a circle would be the radial family's relation.
OUTLINE_SHAPES = ("square", "triangle", "diamond")


def draw_mosaic(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Small objects placed along the outline of a large square, triangle or diamond."""
    outline_shape = str(rng.choice(OUTLINE_SHAPES))
    count = int(rng.integers(10, 15))
    big = size * 0.4
    small = size * 0.045 * style.scale
    centre = (size / 2, size / 2 + (big * 0.15 if outline_shape == "triangle" else 0))
    image = _canvas(style, size)
    for point in _outline_points(outline_shape, centre, big, count):
        _paint(image, style, point, small)
    return image, {"outline": outline_shape, "count": count}


def _outline_points(shape: str, centre: tuple[float, float], radius: float, count: int) -> list[tuple[float, float]]:
    """`count` points spaced along the perimeter of a regular polygon (by corner-to-corner fraction)."""
    sides, start_degrees = {"square": (4, -135), "triangle": (3, -90), "diamond": (4, -90)}[shape]
    corners = [
        (centre[0] + radius * math.cos(math.radians(start_degrees + 360 * k / sides)),
         centre[1] + radius * math.sin(math.radians(start_degrees + 360 * k / sides)))
        for k in range(sides)
    ]  # fmt: skip
    points = []
    for k in range(count):
        position = k * sides / count
        side, fraction = int(position), position - int(position)
        (x0, y0), (x1, y1) = corners[side], corners[(side + 1) % sides]
        points.append((x0 + (x1 - x0) * fraction, y0 + (y1 - y0) * fraction))
    return points


def draw_counting(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Three panels (side by side or stacked) holding one, two and three objects, separated by lines."""
    panel = size / 3
    image = _canvas(style, size)
    pixels = np.asarray(image).copy()
    for boundary in (1, 2):
        column = round(panel * boundary)
        pixels[:, column - 1 : column + 1] = SEPARATOR_RGB
    image = PIL.Image.fromarray(pixels)
    radius = min(panel * 0.3, size / 8 - 2) * min(style.scale, 1.0)
    for panel_index in range(3):
        count = panel_index + 1
        for slot in range(count):
            x = panel * (panel_index + 0.5) + rng.uniform(-1, 1) * (panel / 2 - radius - 3)
            y = size * (slot + 1) / (count + 1)
            _paint(image, style, (x, y), radius)
    vertical = bool(rng.random() < 0.5)
    if vertical:
        image = image.transpose(PIL.Image.Transpose.TRANSPOSE)
    return image, {"counts": [1, 2, 3], "separators": [round(panel), round(2 * panel)], "vertical": vertical}


def draw_radial(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Objects spaced evenly around a ring."""
    count = int(rng.integers(5, 10))
    ring = size * 0.33
    radius = min(size * 0.075 * style.scale, ring * math.sin(math.pi / count) * 0.8)
    offset = rng.uniform(0, 2 * math.pi)
    image = _canvas(style, size)
    for k in range(count):
        angle = offset + 2 * math.pi * k / count
        _paint(image, style, (size / 2 + ring * math.cos(angle), size / 2 + ring * math.sin(angle)), radius)
    return image, {"count": count}


def draw_stacking(rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Objects resting one on top of another in a vertical tower standing on a ground line."""
    count = int(rng.integers(3, 6))
    gap = 2  # a sliver of ground between objects keeps them countable without looking apart
    radius = min((size * 0.88 - gap * count) / (2 * count), size * 0.16) * min(style.scale, 1.0)
    ground = size - 3
    pixels = np.asarray(_canvas(style, size)).copy()
    pixels[ground:, :] = SEPARATOR_RGB
    image = PIL.Image.fromarray(pixels)
    base_x = size / 2 + rng.uniform(-1, 1) * (size / 2 - radius * 1.5)
    for level in range(count):
        x = base_x + rng.uniform(-0.15, 0.15) * radius
        _paint(image, style, (x, ground - gap - (2 * radius + gap) * level - radius), radius)
    return image, {"count": count}


FAMILIES = {
    family.name: family
    for family in (
        RelationFamily(
            "progression", "the same {Object} repeated in a row, growing larger step by step", draw_progression
        ),
        RelationFamily(
            "odd_one_out", "a grid of identical {Object}s in which exactly one is different", draw_odd_one_out
        ),
        RelationFamily("mirror_symmetry", "{Object}s mirrored exactly across a vertical axis", draw_mirror_symmetry),
        RelationFamily("nesting", "an {Object} nested inside a larger {Object} of the same kind", draw_nesting),
        RelationFamily("mosaic", "many small {Object}s tracing the outline of a large {Shape}", draw_mosaic),
        RelationFamily("counting", "panels that count one, two and three {Object}s in order", draw_counting),
        RelationFamily("radial", "{Object}s spaced evenly around a ring like the hours of a clock", draw_radial),
        RelationFamily("stacking", "{Object}s stacked one on top of another into a tower", draw_stacking),
    )
}
FAMILY_NAMES = tuple(FAMILIES)


def draw_example(name: str, rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Draws family `name` inside a random sub-square (70 or 85 to 100% of the side, anywhere), so layouts do
    not line up from one image to the next; mirror compositions stay centred to keep the whole image symmetric."""
    # rows and grids of small objects need most of the canvas to stay legible
    smallest = 0.85 if name in ("progression", "counting", "odd_one_out") else 0.7
    extent = int(size * rng.uniform(smallest, 1.0))
    extent -= (size - extent) % 2
    left = (size - extent) // 2 if name == "mirror_symmetry" else int(rng.integers(0, size - extent + 1))
    top = int(rng.integers(0, size - extent + 1))
    inner, metadata = FAMILIES[name].draw(rng, style, extent, split)
    image = _canvas(style, size)
    image.paste(inner, (left, top))
    return image, {**metadata, "frame": [left, top, extent]}
