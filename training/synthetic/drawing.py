"""Drawing one relation of the compositional world, with metadata listing every object so tests can check pixels.

The layout gives slots (centres and the largest radius that keeps neighbours apart); the change and the exception
set each slot's size, turn, colour and shape; the structure turns a slot into a pair or nested copies, or mirrors
the whole drawing. Looks come from `attributes.sample_style`, objects from `shapes.draw_object`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image

from training.synthetic.attributes import COLOURS, ObjectStyle, colours_for, shapes_for
from training.synthetic.factors import Relation, check_valid
from training.synthetic.families import OUTLINE_SHAPES, SEPARATOR_RGB, _outline_points, _scatter
from training.synthetic.shapes import draw_object


Drawing = tuple[PIL.Image.Image, dict[str, Any]]
# Shapes that look different after a quarter turn or less, so a turn of 20 or 45 degrees is visible.
TURNING_SHAPES = ("triangle", "square", "diamond", "heart", "cross", "arrow")
TURN_STEP = 20.0
ODD_TURN = 45.0
# radius of each nested level over the outer one: a small core keeps clear of a heart's notch or a star's points
NESTING_RATIOS = (1.0, 0.55, 0.25)
# a third nested level needs an outer radius this large (pixels) to keep its core and rings apart
THREE_LEVELS_RADIUS = 14
STEPPED_CHANGES = ("growing", "shrinking", "turning")
# an arrow's shaft is too thin to keep its ring whole around a nested copy; a third level's core touches the ring
# in a star's, a heart's or a cross's hollows
UNNESTABLE_SHAPES = ("arrow",)
THREE_LEVEL_SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon")


def _slots(relation: Relation, rng: np.random.Generator, width: int, height: int, count: int):
    """(centres, largest radius, extras) of the layout's slots inside a `width` x `height` region."""
    layout, short = relation.layout, min(width, height)
    if layout in ("row", "column"):
        along, across = (width, height) if layout == "row" else (height, width)
        slot = along * 0.92 / count
        radius = min(slot / 2 - 2, across * 0.22)
        line = across / 2 + rng.uniform(-1, 1) * (across / 2 - radius - 2) * 0.6
        points = [(along * 0.04 + slot * (k + 0.5), line) for k in range(count)]
        return [p if layout == "row" else p[::-1] for p in points], radius, {}
    if layout == "diagonal":
        step = short * 0.9 / count
        falling = bool(rng.random() < 0.5)
        x0, y0 = (width - short) / 2 + short * 0.05, (height - short) / 2 + short * 0.05
        points = [(x0 + step * (k + 0.5), y0 + step * ((k if falling else count - 1 - k) + 0.5)) for k in range(count)]
        # half a step keeps the end objects clear of the edge, where a mirror puts their copies
        return points, step * 0.5, {"falling": falling}
    if layout == "ring":
        ring = short * 0.33
        offset = rng.uniform(0, 2 * math.pi)
        points = [
            (width / 2 + ring * math.cos(offset + 2 * math.pi * k / count),
             height / 2 + ring * math.sin(offset + 2 * math.pi * k / count))
            for k in range(count)
        ]  # fmt: skip
        # growing needs the room between neighbours; plain rings keep the radial family's small objects
        spacing = ring * math.sin(math.pi / count) * 0.8
        return points, spacing if relation.change in STEPPED_CHANGES else min(short * 0.075, spacing), {}
    if layout == "grid":
        cell = short // 3
        left, top = (width - 3 * cell) // 2, (height - 3 * cell) // 2
        points = [(left + cell * (k % 3 + 0.5), top + cell * (k // 3 + 0.5)) for k in range(9)]
        return points, cell * 0.32, {}
    if layout == "outline":
        outline = str(rng.choice(OUTLINE_SHAPES))
        # whole, even numbers per side: a corner then crowds no one, and two kinds alternate all the way round
        count = 12 if outline == "triangle" else int(rng.choice([12, 16]))
        big = short * 0.4
        centre = (width / 2, height / 2 + (big * 0.15 if outline == "triangle" else 0))
        return _outline_points(outline, centre, big, count), short * 0.045, {"outline": outline}
    if layout == "panels":
        panel = width / 3
        points = [(panel * (k + 0.5), height / 2) for k in range(3)]
        # three objects stacked in one panel when counting, otherwise one object (or one pair) as large as fits
        radius = min(panel * 0.3, height / 8 - 2) if relation.change == "one_more" else panel * 0.4
        return points, radius, {"separators": [round(panel), round(2 * panel)]}
    if layout == "tower":
        # a turned cross reaches a little beyond its radius: turned objects keep a wider sliver of ground between
        gap = 4 if relation.change == "turning" or relation.exception == "orientation" else 2
        radius = min((height * 0.88 - gap * count) / (2 * count), width * 0.16)
        return [(width / 2 + rng.uniform(-1, 1) * (width / 2 - radius * 1.5), 0.0)] * count, radius, {"gap": gap}
    # scattered: pairs and nested copies need room, plain objects less
    large = relation.structure in ("pairs", "nested")
    bounds = (2, 2, width - 2, height - 2)
    span = (short * 0.15, short * 0.22) if large else (short * 0.06, short * 0.11)
    # placed with a tenth more room (a turned cross reaches a little beyond its radius), and smaller until all fit
    for attempt in range(6):
        shrink = 1.1 * 0.9**attempt
        placed = _scatter(rng, count, (span[0] * shrink, span[1] * shrink), bounds)
        if len(placed) == count:
            break
    return [(x, y) for x, y, _ in placed], [r / 1.1 for _, _, r in placed], {}


def _count(relation: Relation, rng: np.random.Generator) -> int:
    """How many slots: few where each object must show a step, a pair or nested copies at 112 pixels."""
    layout, detailed = relation.layout, relation.change in STEPPED_CHANGES or relation.structure == "nested"
    if layout in ("row", "column", "tower", "diagonal"):
        if relation.structure in ("pairs", "nested"):
            return 3
        return int(rng.integers(3, 5 if detailed or layout == "diagonal" else 6))
    if layout == "ring":
        # even, so two alternating kinds meet evenly all the way round; six leave room to grow
        return 6 if relation.change in STEPPED_CHANGES else int(rng.choice([6, 8]))
    if layout == "scattered":
        # one odd object needs at least two ordinary ones to stand out from
        fewest = 3 if relation.exception != "none" else 1 if relation.structure == "nested" else 2
        return int(rng.integers(fewest, 5))
    return 9 if layout == "grid" else 3


@dataclass
class SlotLooks:
    """What the change and the exception make of each slot: its shape, turn, colour, radius and presence."""

    shape: str  # the picture's own kind, before alternation or an odd one out
    shapes: list[str]
    angles: list[float]
    colours: list[tuple[int, int, int]]
    radii: list[float]
    present: list[bool]
    odd_slot: int | None


def draw_relation(relation: Relation, rng: np.random.Generator, style: ObjectStyle, size: int, split: str) -> Drawing:
    """Draws `relation` inside a random sub-square of a `size` canvas (mirrors stay centred on their axis).

    Metadata: `objects` (shape, centre, radius, angle, rgb, slot, level; in draw order, in region coordinates,
    before mirroring), `region` [width, height] (the frame, or its half that a mirror copies), `frame` [left, top,
    extent], `slots` and their `centres`, `odd_slot`, `shape` (the style's, or a turnable or nestable one where the
    relation needs it), `texture`, nested `levels` and the layout's extras (panel `separators`, the tower's `ground`
    row, the `outline` shape, a diagonal's direction).
    """
    check_valid(relation)
    # rows of small objects need most of the canvas to stay legible
    extent = int(size * rng.uniform(0.85, 1.0))
    extent -= (size - extent) % 2
    mirror = relation.structure if relation.structure.startswith("mirror") else None
    left = (size - extent) // 2 if mirror == "mirror_left_right" else int(rng.integers(0, size - extent + 1))
    top = (size - extent) // 2 if mirror == "mirror_top_bottom" else int(rng.integers(0, size - extent + 1))
    width = extent // 2 if mirror == "mirror_left_right" else extent
    height = extent // 2 if mirror == "mirror_top_bottom" else extent
    centres, largest, extras = _slots(relation, rng, width, height, _count(relation, rng))
    looks = _slot_looks(relation, rng, style, split, len(centres), largest)
    texture = "solid" if relation.structure == "nested" else style.texture
    levels = 1
    if relation.structure == "nested":
        roomy = min(looks.radii) >= THREE_LEVELS_RADIUS and set(looks.shapes) <= set(THREE_LEVEL_SHAPES)
        levels = int(rng.integers(2, 4)) if roomy else 2
    if relation.layout == "tower":
        ground, gap = height - 3, extras.pop("gap")
        heights = np.cumsum([0.0] + [2 * r + gap for r in looks.radii[:-1]])
        centres = [(centres[0][0] + rng.uniform(-0.15, 0.15) * looks.radii[0], ground - gap - h - r)
                   for h, r in zip(heights, looks.radii, strict=True)]  # fmt: skip
        extras["ground"] = ground + top
    objects = _objects(relation, looks, centres, height, levels, style.background_rgb)
    pixels = np.asarray(_region(relation, style, width, height, extras, texture, objects))
    if mirror == "mirror_left_right":
        pixels = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    elif mirror == "mirror_top_bottom":
        pixels = np.concatenate([pixels, pixels[::-1]], axis=0)
    canvas = np.full((size, size, 3), style.background_rgb, dtype=np.uint8)
    canvas[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels
    if relation.layout == "tower":
        canvas[extras["ground"] :, :] = SEPARATOR_RGB
    metadata = {"objects": objects, "region": [width, height], "frame": [left, top, extent], "slots": len(centres)}
    metadata |= {"centres": [[float(x), float(y)] for x, y in centres], "odd_slot": looks.odd_slot}
    metadata |= {"shape": looks.shape, "texture": texture}
    return PIL.Image.fromarray(canvas), {**metadata, "levels": levels, **extras}


def _slot_looks(relation, rng, style: ObjectStyle, split: str, count: int, largest) -> SlotLooks:
    """Applies the change along the slots, then the exception to one of them."""
    radii = list(largest) if isinstance(largest, list) else [largest * min(style.scale, 1.0)] * count
    if relation.exception == "size":
        radii = [min(radii)] * count  # a scatter's sizes vary: one size for all lets the odd one stand out
    shape, kinds = style.shape, shapes_for(split)
    if relation.structure == "nested":
        kinds = tuple(s for s in kinds if s not in UNNESTABLE_SHAPES)
        shape = shape if shape in kinds else str(rng.choice(kinds))
    if relation.change == "turning" or relation.exception == "orientation":
        # every shape in the picture must show its turn, the odd or alternating one too
        kinds = tuple(s for s in kinds if s in TURNING_SHAPES)
        shape = str(rng.choice(kinds))
    looks = SlotLooks(shape, [shape] * count, [0.0] * count, [style.rgb] * count, radii, [True] * count, None)
    change = relation.change
    if change in ("growing", "shrinking"):
        looks.radii = [largest * factor for factor in np.linspace(0.4, 1.0, count)]
        if change == "shrinking":
            looks.radii.reverse()
    elif change == "turning":
        looks.angles = [TURN_STEP * k for k in range(count)]
    elif change == "darker":
        looks.colours = [_lighter(style.rgb, t) for t in np.linspace(0.55, 0.0, count)]
    elif change == "alternating":
        other = str(rng.choice([s for s in kinds if s != shape]))
        looks.shapes = [shape if k % 2 == 0 else other for k in range(count)]
    if relation.exception == "none":
        return looks
    odd = looks.odd_slot = int(rng.integers(count))
    if relation.exception == "colour":
        looks.colours[odd] = COLOURS[str(rng.choice([c for c in colours_for(split) if c != style.colour]))]
    elif relation.exception == "shape":
        looks.shapes[odd] = str(rng.choice([s for s in kinds if s != looks.shapes[odd]]))
    elif relation.exception == "size":
        looks.radii[odd] *= 1.7 if relation.layout == "outline" else 0.55
    elif relation.exception == "orientation":
        looks.angles[odd] = ODD_TURN
    else:
        looks.present[odd] = False
    return looks


def _objects(relation, looks: SlotLooks, centres, height: int, levels: int, background) -> list[dict[str, Any]]:
    """Every object to draw: per present slot its copies (one more per panel when counting), pairs, nested levels
    (alternating with the background colour, so each level shows as a ring)."""
    objects = []
    pairs = relation.structure == "pairs"
    for slot, (x, y) in enumerate(centres):
        if not looks.present[slot]:
            continue
        copies = slot + 1 if relation.change == "one_more" else 1
        for copy in range(copies):
            stacked_y = height * (copy + 1) / (copies + 1) if copies > 1 else y
            for offset in (-0.55, 0.55) if pairs else (0.0,):
                radius = looks.radii[slot] * (0.42 if pairs else 1.0)
                for level in range(levels):
                    colour = looks.colours[slot] if level % 2 == 0 else background
                    objects.append({
                        "shape": looks.shapes[slot], "centre": [x + offset * looks.radii[slot], stacked_y],
                        "radius": float(radius * NESTING_RATIOS[level]), "angle": looks.angles[slot],
                        "rgb": [int(c) for c in colour], "slot": slot, "level": level,
                    })  # fmt: skip
    return objects


def _region(relation, style, width, height, extras, texture, objects) -> PIL.Image.Image:
    image = PIL.Image.new("RGB", (width, height), style.background_rgb)
    if relation.layout == "panels":
        pixels = np.asarray(image).copy()
        for column in extras["separators"]:
            pixels[:, column - 1 : column + 1] = SEPARATOR_RGB
        image = PIL.Image.fromarray(pixels)
    for item in objects:
        draw_object(image, item["shape"], tuple(item["centre"]), item["radius"], tuple(item["rgb"]), texture,
                    item["angle"])  # fmt: skip
    return image


def _lighter(rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """`rgb` moved `amount` of the way to white: "getting darker" runs from light to the style's own colour."""
    return tuple(round(c + (255 - c) * amount) for c in rgb)
