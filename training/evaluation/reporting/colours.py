"""The colours every report uses for the same meaning: grids, the HTML page and the similarity-space plot."""

from __future__ import annotations


QUERY = (41, 98, 255)  # blue: the query image
RELEVANT = (46, 160, 67)  # green: shares the query's relation (synthetic family, paper seed group)
IRRELEVANT = (214, 48, 49)  # red: known not to share it
UNKNOWN = (150, 150, 150)  # grey: nothing is known (a random distractor)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """`#rrggbb` for HTML and matplotlib."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)
