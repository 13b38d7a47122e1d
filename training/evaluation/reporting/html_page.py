"""The HTML of the reports: every value that reaches the page goes through `escape`, so captions, hashes and method
names from files can never inject markup."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence


def escape(value: object) -> str:
    """Text or attribute value for HTML (quotes included, so it is safe inside `'...'` and `"..."`)."""
    return html.escape(str(value), quote=True)


def page(title: str, body: Iterable[str], style: str = "") -> str:
    """A whole document; `body` parts are trusted markup built with this module's helpers."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{style}</style>"
        f"</head><body><h1>{escape(title)}</h1>{''.join(body)}</body></html>"
    )


def image_figure(source: str, alt: str, border: str, lines: Sequence[str] = (), badge: str = "") -> str:
    """One image with a coloured border (`border` as `#rrggbb`), an optional badge and caption lines under it."""
    parts = [f"<img src='{escape(source)}' alt='{escape(alt)}' style='border:4px solid {escape(border)}'>"]
    if badge:
        parts.append(f"<div class='badge' style='background:{escape(border)}'>{escape(badge)}</div>")
    parts += [f"<div class='caption'>{escape(line)}</div>" for line in lines if line]
    return "".join(parts)


def legend(entries: Sequence[tuple[str, str]]) -> str:
    """Coloured swatches and what they mean: `(colour, meaning)` pairs."""
    swatches = "".join(
        f"<span class='swatch' style='border:4px solid {escape(colour)}'></span>{escape(meaning)} "
        for colour, meaning in entries
    )
    return f"<p class='legend'>{swatches}</p>"
