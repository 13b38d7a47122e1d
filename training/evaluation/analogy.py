"""Analogical-generation scoring: does an edited image keep the *relation* of its source while changing its objects?

    python -m training.evaluation analogy --triplets triplets.csv --model relsim-final --output analogy-report

Each triplet row names a source image, the generated (edited) image, optionally a reference (the intended answer),
and the model that generated it. Every image is embedded once per metric; per row the report gives

- relsim: cosine of source and generated (and reference and generated) — relational similarity, to keep high;
- CLIP-I: the same cosine with CLIP image embeddings — attribute similarity, which an analogy should lower;
- LPIPS: the perceptual *distance* (lower = more alike in pixels).

A metric whose weights are stand-ins (random weights offline) carries a note that every table repeats.

Triplet files: csv with a header (`source,generated,reference,model`; reference and model optional) or jsonl with
those keys. Paths are relative to the triplet file's folder. A row with a missing field, a missing file or an
unreadable image is reported with its file and line and left out; the others are scored.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modeling_relsim.image_decoding import UnreadableImageError
from training.evaluation.embed import read_image
from training.evaluation.methods.base import EmbeddingMethod, embed_image_list
from training.hub_data.validation import Rejection
from training.json_lines import json_lines
from training.store import atomic_write


logger = logging.getLogger(__name__)

FIELDS = ("source", "generated", "reference", "model")
REQUIRED = ("source", "generated")
DEFAULT_MODEL = "generated"
RELATIONAL_METRIC = "relsim"


@dataclass(frozen=True)
class Triplet:
    """One scored row: absolute image paths, the generating model, and where the row was (`file:line`)."""

    source: str
    generated: str
    reference: str | None
    model: str
    where: str


def _rows(path: Path) -> list[tuple[int, dict[str, Any] | str]]:
    """`(line, row)` of a csv or jsonl; a row that cannot be parsed comes back as its error message."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise ValueError(f"{path}:1: the header {','.join(header) or '(empty)'} lacks {', '.join(missing)}; "
                             f"expected the columns {','.join(FIELDS)} (reference and model optional)")  # fmt: skip
        reader.fieldnames = header
        rows: list[tuple[int, dict[str, Any] | str]] = []
        for row in reader:
            if row.pop(None, None):
                rows.append((reader.line_num, "more fields than the header"))
            else:
                rows.append((reader.line_num, {key: value for key, value in row.items() if value not in (None, "")}))
        return rows
    if path.suffix.lower() not in (".jsonl", ".json"):
        raise ValueError(f"{path}: triplets are read from .csv (with a header) or .jsonl files")
    return list(json_lines(path, text.encode("utf-8")))


def read_triplets(path: str | Path) -> tuple[list[Triplet], list[Rejection]]:
    """The triplets of `path` whose images exist and decode, and the rows left out (file, line, field, reason: the
    datasets tool's `Rejection`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unknown file type, or a csv header without `source` and `generated`.
    """
    path = Path(path)
    triplets, bad = [], []
    for line, row in _rows(path):
        where = f"{path}:{line}"
        if isinstance(row, str):
            bad.append(Rejection(str(path), line, "<line>", row))
            continue
        problem = next(((name, "missing") for name in REQUIRED if not isinstance(row.get(name), str)), None)
        if problem is None and "reference" in row and not isinstance(row["reference"], str):
            problem = ("reference", "not a string")
        paths = {}
        for name in ("source", "generated", "reference"):
            if problem is not None or not row.get(name):
                continue
            candidate = Path(row[name]) if Path(row[name]).is_absolute() else path.parent / row[name]
            try:
                read_image(str(candidate))
            except UnreadableImageError as error:
                problem = (name, f"{row[name]}: {error.reason}")
            paths[name] = str(candidate.resolve())
        if problem is not None:
            bad.append(Rejection(str(path), line, *problem))
            continue
        model = str(row.get("model") or DEFAULT_MODEL)
        triplets.append(Triplet(paths["source"], paths["generated"], paths.get("reference"), model, where))
    for row in bad:
        logger.warning("left out: %s", row)
    return triplets, bad


def _similarities(method: EmbeddingMethod, vectors: torch.Tensor, first: list[int], second: list[int]) -> list[float]:
    left, right = vectors[first], vectors[second]
    if method.metric == "l2":
        return ((left - right) ** 2).sum(-1).tolist()  # LPIPS: the distance itself
    return (left * right).sum(-1).tolist()


def score_triplets(
    triplets: Sequence[Triplet], methods: Mapping[str, EmbeddingMethod], batch_size: int = 16
) -> list[dict[str, Any]]:
    """One row per triplet: `model`, `source`, `generated`, `reference`, and for every metric
    `<metric>/source-generated` and, with a reference, `<metric>/reference-generated` (cosines; LPIPS distances)."""
    if not triplets:
        raise ValueError("no triplets to score (every row was left out, or the file is empty)")
    images = list(dict.fromkeys(path for t in triplets for path in (t.source, t.generated, t.reference) if path))
    position = {path: index for index, path in enumerate(images)}
    decoded = [read_image(path)[0] for path in images]
    rows = [{"model": t.model, "source": t.source, "generated": t.generated, "reference": t.reference,
             "where": t.where} for t in triplets]  # fmt: skip
    for name, method in methods.items():
        vectors = embed_image_list(method, decoded, batch_size=batch_size)
        generated = [position[t.generated] for t in triplets]
        source_scores = _similarities(method, vectors, [position[t.source] for t in triplets], generated)
        for row, score in zip(rows, source_scores, strict=True):
            row[f"{name}/source-generated"] = score
        with_reference = [index for index, t in enumerate(triplets) if t.reference]
        if with_reference:
            scores = _similarities(method, vectors, [position[triplets[i].reference] for i in with_reference],
                                   [generated[i] for i in with_reference])  # fmt: skip
            for index, score in zip(with_reference, scores, strict=True):
                rows[index][f"{name}/reference-generated"] = score
    return rows


def score_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row if "/" in key))


def per_model_table(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """`model -> {"triplets": n, column: mean over the rows that have it}` (models in first-seen order)."""
    columns = score_columns(rows)
    table: dict[str, dict[str, Any]] = {}
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model]
        entry: dict[str, Any] = {"triplets": len(mine)}
        for column in columns:
            values = [row[column] for row in mine if column in row]
            entry[column] = sum(values) / len(values) if values else None
        table[model] = entry
    return table


def metric_title(column: str, notes: Mapping[str, str]) -> str:
    metric, pair = column.split("/")
    direction = "distance, lower = closer" if metric == "lpips" else "cosine"
    note = f" [{notes[metric]}]" if metric in notes else ""
    return f"{metric} {pair} ({direction}){note}"


def table_markdown(table: Mapping[str, Mapping[str, Any]], notes: Mapping[str, str]) -> str:
    columns = [column for column in next(iter(table.values())) if column != "triplets"]
    lines = [
        "| model | triplets | " + " | ".join(metric_title(column, notes) for column in columns) + " |",
        "| --- | ---: |" + " ---: |" * len(columns),
    ]
    for model, entry in table.items():
        values = ["–" if entry[column] is None else f"{entry[column]:.4f}" for column in columns]
        lines.append(f"| {model} | {entry['triplets']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def attribute_metric(rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The metric on the plot's x axis: CLIP-I when scored, else LPIPS, else None."""
    columns = score_columns(rows)
    return next((metric for metric in ("clip-i", "lpips") if f"{metric}/source-generated" in columns), None)


def write_plot(rows: Sequence[Mapping[str, Any]], path: str | Path, notes: Mapping[str, str]) -> Path | None:
    """Relational (relsim) against attribute similarity (CLIP-I, else LPIPS distance) of source and generated:
    each triplet faint, each model's mean bold. None when relsim or an attribute metric is missing."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    attribute = attribute_metric(rows)
    relational = f"{RELATIONAL_METRIC}/source-generated"
    if attribute is None or relational not in score_columns(rows):
        logger.warning("no plot: it needs relsim and CLIP-I or LPIPS scores")
        return None
    x_column = f"{attribute}/source-generated"
    figure = Figure(figsize=(6.0, 4.6), layout="constrained")
    axes = figure.subplots()
    colours = matplotlib.colormaps["tab10"]
    for index, model in enumerate(dict.fromkeys(row["model"] for row in rows)):
        mine = [row for row in rows if row["model"] == model]
        xs, ys = [row[x_column] for row in mine], [row[relational] for row in mine]
        axes.scatter(xs, ys, color=colours(index % 10), alpha=0.25, s=14)
        axes.scatter([sum(xs) / len(xs)], [sum(ys) / len(ys)], color=colours(index % 10), s=90, edgecolor="black",
                     label=f"{model} (n={len(mine)})")  # fmt: skip
    axes.set_xlabel(metric_title(x_column, notes))
    axes.set_ylabel(metric_title(relational, notes))
    axes.set_title("source vs generated: keep the relation (up), change the look (left)", fontsize=10)
    axes.legend(fontsize=8)
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def write_analogy_report(
    rows: Sequence[Mapping[str, Any]], bad: Sequence[Rejection], output: str | Path, notes: Mapping[str, str]
) -> dict[str, Path]:
    """`scores.jsonl` (one row per triplet), `report.json` and `report.md` (per-model tables, the rows left out,
    the notes) and `relational_vs_attribute.png`."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    table = per_model_table(rows)
    written = {"scores": output / "scores.jsonl", "json": output / "report.json", "markdown": output / "report.md"}
    atomic_write(written["scores"], "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))
    document = {"models": table, "notes": dict(notes), "left_out": [vars(row) for row in bad]}
    atomic_write(written["json"], json.dumps(document, indent=2).encode("utf-8"))
    plot = write_plot(rows, output / "relational_vs_attribute.png", notes)
    lines = ["# Analogical generation: relation kept, objects changed?", "", table_markdown(table, notes), ""]
    lines += [f"- **{metric}**: {note}" for metric, note in notes.items()]
    if bad:
        lines += ["", f"## {len(bad)} rows left out", ""] + [f"- `{row}`" for row in bad]
    if plot is not None:
        lines += ["", "![relational vs attribute similarity](relational_vs_attribute.png)"]
        written["plot"] = plot
    atomic_write(written["markdown"], ("\n".join(lines) + "\n").encode("utf-8"))
    return written
