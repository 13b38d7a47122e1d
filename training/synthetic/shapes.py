"""Drawing one object (shape, colour, texture) with PIL; every texture leaves the object one connected piece."""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import PIL.ImageDraw
from scipy import ndimage


TEXTURE_NAMES = ("solid", "outline", "striped")


def shape_polygon(shape: str, centre: tuple[float, float], radius: float) -> list[tuple[float, float]]:
    """Vertices of a shape inscribed in a circle of `radius` (a circle is drawn as an ellipse instead)."""
    x, y = centre
    if shape == "square":
        half = radius / math.sqrt(2)
        return [(x - half, y - half), (x + half, y - half), (x + half, y + half), (x - half, y + half)]
    if shape == "triangle":
        return _regular(centre, radius, 3, start_degrees=-90)
    if shape == "diamond":
        return [(x, y - radius), (x + radius * 0.75, y), (x, y + radius), (x - radius * 0.75, y)]
    if shape == "pentagon":
        return _regular(centre, radius, 5, start_degrees=-90)
    if shape == "hexagon":
        return _regular(centre, radius, 6, start_degrees=0)
    if shape == "star":
        points = []
        for index in range(10):
            reach = radius if index % 2 == 0 else radius * 0.45
            angle = math.radians(-90 + 36 * index)
            points.append((x + reach * math.cos(angle), y + reach * math.sin(angle)))
        return points
    if shape == "cross":
        arm, reach = radius * 0.35, radius
        corners = [(-arm, -reach), (arm, -reach), (arm, -arm), (reach, -arm), (reach, arm), (arm, arm)]
        corners += [(arm, reach), (-arm, reach), (-arm, arm), (-reach, arm), (-reach, -arm), (-arm, -arm)]
        return [(x + dx, y + dy) for dx, dy in corners]
    if shape == "heart":
        points = []
        for step in range(24):
            angle = 2 * math.pi * step / 24
            heart_x = 16 * math.sin(angle) ** 3
            heart_y = 13 * math.cos(angle) - 5 * math.cos(2 * angle) - 2 * math.cos(3 * angle) - math.cos(4 * angle)
            points.append((x + radius * heart_x / 17, y - radius * (heart_y + 2) / 17))
        return points
    if shape == "arrow":
        shaft, head = radius * 0.3, radius * 0.75
        corners = [(-radius, -shaft), (radius - head, -shaft), (radius - head, -head), (radius, 0)]
        corners += [(radius - head, head), (radius - head, shaft), (-radius, shaft)]
        return [(x + dx, y + dy) for dx, dy in corners]
    raise ValueError(f"unknown shape {shape!r}")


def _regular(centre: tuple[float, float], radius: float, sides: int, start_degrees: float) -> list[tuple[float, float]]:
    x, y = centre
    angles = [math.radians(start_degrees + 360 * side / sides) for side in range(sides)]
    return [(x + radius * math.cos(angle), y + radius * math.sin(angle)) for angle in angles]


def rotated(
    points: list[tuple[float, float]], centre: tuple[float, float], degrees: float
) -> list[tuple[float, float]]:
    """`points` turned clockwise on screen by `degrees` about `centre` (y grows downwards)."""
    if degrees == 0:
        return points
    cosine, sine = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y = centre
    return [(x + (px - x) * cosine - (py - y) * sine, y + (px - x) * sine + (py - y) * cosine) for px, py in points]


def _filled(
    size: tuple[int, int], shape: str, centre: tuple[float, float], radius: float, angle: float = 0.0
) -> np.ndarray:
    mask = PIL.Image.new("1", size, 0)
    draw = PIL.ImageDraw.Draw(mask)
    if shape == "circle":
        x, y = centre
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=1)
    else:
        draw.polygon(rotated(shape_polygon(shape, centre, radius), centre, angle), fill=1)
    return np.asarray(mask, dtype=bool)


def object_mask(
    size: tuple[int, int], shape: str, centre: tuple[float, float], radius: float, texture: str, angle: float = 0.0
) -> np.ndarray:
    """Boolean `(height, width)` mask of one object, turned by `angle` degrees. `outline` is a thick contour;
    `striped` is horizontal bands held together by the contour, so the object stays one connected piece whatever
    its texture."""
    if texture not in TEXTURE_NAMES:
        raise ValueError(f"texture must be one of {TEXTURE_NAMES}, got {texture!r}")
    filled = _filled(size, shape, centre, radius, angle)
    if texture == "solid":
        return filled
    # erosion gives the same thickness on every shape, so thin corners stay joined
    contour_width = max(2, round(radius / 4))
    contour = filled & ~ndimage.binary_erosion(filled, iterations=contour_width)
    if texture == "outline":
        return contour
    band = max(2, round(radius / 3))
    rows = np.arange(size[1])[:, None]
    stripes = ((rows - int(centre[1] - radius)) // band) % 2 == 0
    return contour | (filled & stripes)


def draw_object(
    image: PIL.Image.Image,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    colour: tuple[int, int, int],
    texture: str,
    angle: float = 0.0,
) -> np.ndarray:
    """Paints one object onto `image` in place and returns its mask."""
    mask = object_mask(image.size, shape, centre, radius, texture, angle)
    image.paste(PIL.Image.new("RGB", image.size, colour), mask=PIL.Image.fromarray(mask.astype(np.uint8) * 255))
    return mask
