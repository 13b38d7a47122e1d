"""Neighbour grids: one row per query, the query then its nearest neighbours by rank, each framed by whether it
shares the query's relation. The picture carries its own labels (row names, column headers, a legend), so it reads
on its own; `describe_grid` says in words what it shows."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import PIL.ImageOps
import torch

from training.evaluation.reporting.colours import IRRELEVANT, QUERY, RELEVANT


THUMBNAIL = 72
BORDER = 4
GAP = 8  # between the query column and the neighbours
LABEL_WIDTH = 132
TITLE_HEIGHT = 22
HEADER_HEIGHT = 18
LEGEND_HEIGHT = 26
MARGIN = 6
NEIGHBOUR_LABEL_LINE = 11  # one line of a neighbour's own label, under its thumbnail
TEXT = (40, 40, 40)
MUTED = (110, 110, 110)


@dataclass
class GridRow:
    """One query of a grid: its label (the relation it shows), its image, and its neighbours best first with
    whether each shares the query's relation; optionally a short label of each neighbour (lines split by newlines),
    drawn under it."""

    label: str
    query: PIL.Image.Image
    neighbours: list[PIL.Image.Image]
    relevant: list[bool]
    neighbour_labels: list[str] | None = None

    @property
    def correct(self) -> int:
        return sum(self.relevant)


def nearest_neighbours(similarity: torch.Tensor, query: int, k: int) -> list[int]:
    """The `k` pool indices most similar to `query` in a square `(pool, pool)` matrix, the query itself left out."""
    scores = similarity[query].clone().float()
    scores[query] = float("-inf")
    return scores.topk(min(k, scores.numel() - 1)).indices.tolist()


def neighbour_rows(
    similarity: torch.Tensor,
    images: Sequence[PIL.Image.Image],
    relations: Sequence[Any],
    queries: Sequence[int],
    k: int,
    row_label: Callable[[Any], str],
    neighbour_label: Callable[[Any, Any], str] | None = None,
) -> list[GridRow]:
    """A grid row per query: its `k` nearest neighbours in `similarity`, marked right when their relation is the
    query's; `row_label(relation)` names the row, `neighbour_label(query relation, neighbour relation)` each
    neighbour when given."""
    rows = []
    for query in queries:
        neighbours = nearest_neighbours(similarity, query, k)
        labels = None
        if neighbour_label is not None:
            labels = [neighbour_label(relations[query], relations[index]) for index in neighbours]
        rows.append(
            GridRow(
                label=row_label(relations[query]),
                query=images[query],
                neighbours=[images[index] for index in neighbours],
                relevant=[relations[index] == relations[query] for index in neighbours],
                neighbour_labels=labels,
            )
        )
    return rows


def _font(size: int) -> PIL.ImageFont.ImageFont:
    try:
        return PIL.ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its fixed-size bitmap font
        return PIL.ImageFont.load_default()


def text_tile(text: str, side: int = THUMBNAIL) -> PIL.Image.Image:
    """A square white tile with `text` wrapped on it: the query cell of a text query's row."""
    tile = PIL.Image.new("RGB", (side, side), "white")
    draw = PIL.ImageDraw.Draw(tile)
    lines = textwrap.wrap(text, width=max(side // 6, 4))[: (side - 2 * BORDER) // 11]
    for number, line in enumerate(lines):
        draw.text((BORDER + 2, BORDER + 1 + 11 * number), line, fill=TEXT, font=_font(9))
    return tile


def _framed(image: PIL.Image.Image, colour: tuple[int, int, int]) -> PIL.Image.Image:
    thumbnail = image.convert("RGB").resize((THUMBNAIL - 2 * BORDER,) * 2, PIL.Image.BILINEAR)
    return PIL.ImageOps.expand(thumbnail, border=BORDER, fill=colour)


def draw_neighbour_grid(
    rows: Sequence[GridRow],
    title: str,
    relevant_meaning: str = "same relation",
    irrelevant_meaning: str = "other relation",
) -> PIL.Image.Image:
    """The grid as one RGB image: a title, column headers ("query", "1" ... "k"), each row's label at the left with
    how many of its neighbours are right, and a legend of the frame colours at the bottom."""
    if not rows:
        raise ValueError("a neighbour grid needs at least one row")
    k = max(len(row.neighbours) for row in rows)
    first_neighbour_x = LABEL_WIDTH + THUMBNAIL + GAP
    width = first_neighbour_x + k * THUMBNAIL + MARGIN
    top = TITLE_HEIGHT + HEADER_HEIGHT
    label_lines = max((label.count("\n") + 1 for row in rows for label in row.neighbour_labels or []), default=0)
    row_height = THUMBNAIL + (label_lines * NEIGHBOUR_LABEL_LINE + 4 if label_lines else 0)
    grid = PIL.Image.new("RGB", (width, top + len(rows) * row_height + LEGEND_HEIGHT), "white")
    draw = PIL.ImageDraw.Draw(grid)
    font, small = _font(13), _font(11)
    draw.text((MARGIN, 4), title, fill=TEXT, font=font)
    column_centres = [LABEL_WIDTH + THUMBNAIL / 2] + [first_neighbour_x + (c + 0.5) * THUMBNAIL for c in range(k)]
    for centre, header in zip(column_centres, ["query", *map(str, range(1, k + 1))], strict=True):
        draw.text((centre, TITLE_HEIGHT + HEADER_HEIGHT / 2), header, fill=TEXT, font=small, anchor="mm")
    for index, row in enumerate(rows):
        y = top + index * row_height
        lines = [*textwrap.wrap(row.label, width=17)[:2], f"{row.correct} of {len(row.neighbours)} right"]
        for line_number, line in enumerate(lines):
            colour = TEXT if line_number < len(lines) - 1 else MUTED
            draw.text((MARGIN, y + 14 + 15 * line_number), line, fill=colour, font=small)
        grid.paste(_framed(row.query, QUERY), (LABEL_WIDTH, y))
        for column, (image, relevant) in enumerate(zip(row.neighbours, row.relevant, strict=True)):
            grid.paste(
                _framed(image, RELEVANT if relevant else IRRELEVANT), (first_neighbour_x + column * THUMBNAIL, y)
            )
        for column, label in enumerate(row.neighbour_labels or []):
            centre = first_neighbour_x + (column + 0.5) * THUMBNAIL
            for line_number, line in enumerate(label.split("\n")):
                line_y = y + THUMBNAIL + 2 + NEIGHBOUR_LABEL_LINE * (line_number + 0.5)
                draw.text((centre, line_y), line, fill=MUTED, font=_font(10), anchor="mm")
    x, y = MARGIN, grid.height - LEGEND_HEIGHT + 7
    for colour, meaning in ((QUERY, "query"), (RELEVANT, relevant_meaning), (IRRELEVANT, irrelevant_meaning)):
        draw.rectangle((x, y, x + 12, y + 12), outline=colour, width=3)
        draw.text((x + 17, y + 6), meaning, fill=TEXT, font=small, anchor="lm")
        x += 17 + int(draw.textlength(meaning, font=small)) + 16
    return grid


def describe_grid(rows: Sequence[GridRow], shared: str = "share the relation") -> str:
    """What a grid shows, in words: the rows where every neighbour is wrong named first, then each row's count."""
    failed = [row for row in rows if row.neighbours and row.correct == 0]
    counts = "; ".join(f"{row.label}: {row.correct} of {len(row.neighbours)}" for row in rows)
    if failed:
        named = "; ".join(f"{row.label}: 0 of {len(row.neighbours)} neighbours {shared}" for row in failed)
        opening = f"Every neighbour is wrong in {len(failed)} row{'s' if len(failed) > 1 else ''} ({named})."
    elif all(row.correct == len(row.neighbours) for row in rows):
        opening = "Every neighbour in every row is right."
    else:
        opening = "No row is entirely wrong."
    return f"{opening} Neighbours that {shared}, row by row: {counts}."
