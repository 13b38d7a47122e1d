"""The one markdown table writer of the reports: one row per method, numbers to three decimals."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


MISSING = "–"


def format_cell(value: Any) -> str:
    """Floats to three decimals, a missing or NaN value as a dash, anything else as text with `|` escaped (a pipe
    would otherwise end the cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, label: str = "method"
) -> str:
    """A markdown table: the `label` column first (left-aligned), then `columns` (default: every other key, sorted),
    right-aligned. A row that lacks a column shows a dash."""
    if columns is None:
        columns = sorted({key for row in rows for key in row if key != label})
    header = [label, *columns]
    lines = ["| " + " | ".join(format_cell(name) for name in header) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(column)) for column in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rows_from_table(table: Mapping[str, Mapping[str, Any]], label: str = "method") -> list[dict[str, Any]]:
    """`{name: {metric: value}}` (the synthetic benchmark's table) as rows for `markdown_table`."""
    return [{label: name, **metrics} for name, metrics in table.items()]
