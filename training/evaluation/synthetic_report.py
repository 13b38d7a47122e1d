"""The benchmark report folder: a markdown table, neighbour grids and the joint similarity-space plot."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib


matplotlib.use("Agg")

import matplotlib.pyplot as plt
import PIL.Image
import PIL.ImageOps
import torch

from training.evaluation.synthetic_retrieval import BenchmarkRun


THUMBNAIL = 72
BORDER = 4
SAME_FAMILY, OTHER_FAMILY, QUERY = (46, 160, 67), (214, 48, 49), (41, 98, 255)
METRIC_COLUMNS = ("recall@1", "recall@5", "mAP", "attribute trap")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def markdown_table(table: dict[str, dict[str, float]]) -> str:
    lines = ["| method | " + " | ".join(METRIC_COLUMNS) + " |", "| --- |" + " ---: |" * len(METRIC_COLUMNS)]
    for method, metrics in table.items():
        lines.append(f"| {method} | " + " | ".join(f"{metrics[column]:.3f}" for column in METRIC_COLUMNS) + " |")
    return "\n".join(lines)


def query_indices(run: BenchmarkRun) -> list[int]:
    """The first pool image of every family, so each grid shows one query per relation."""
    first: dict[int, int] = {}
    for index, family in enumerate(run.pool["family"]):
        first.setdefault(family, index)
    return [first[family] for family in sorted(first)]


def _framed(image: PIL.Image.Image, colour: tuple[int, int, int]) -> PIL.Image.Image:
    thumbnail = image.convert("RGB").resize((THUMBNAIL - 2 * BORDER,) * 2, PIL.Image.BILINEAR)
    return PIL.ImageOps.expand(thumbnail, border=BORDER, fill=colour)


def neighbour_grid(run: BenchmarkRun, method: str, queries: Sequence[int], k: int = 5) -> PIL.Image.Image:
    """One row per query: the query (blue frame), then its top-k neighbours (green: same relation, red: not)."""
    similarity = run.similarities[method].clone()
    families, images = run.pool["family"], run.pool["image"]
    grid = PIL.Image.new("RGB", ((k + 1) * THUMBNAIL + 8, len(queries) * THUMBNAIL), "white")
    for row, query in enumerate(queries):
        similarity[query, query] = float("-inf")
        neighbours = similarity[query].topk(k).indices.tolist()
        grid.paste(_framed(images[query], QUERY), (0, row * THUMBNAIL))
        for column, neighbour in enumerate(neighbours, start=1):
            colour = SAME_FAMILY if families[neighbour] == families[query] else OTHER_FAMILY
            grid.paste(_framed(images[neighbour], colour), (column * THUMBNAIL + 8, row * THUMBNAIL))
    return grid


def similarity_space_plot(run: BenchmarkRun, methods: Sequence[str], attribute_method: str, query: int, path: Path):
    """For one query: every pool image at x = attribute similarity, y = each method's similarity."""
    families = torch.tensor(run.pool["family"])
    same = families == families[query]
    others = torch.ones(len(families), dtype=torch.bool)
    others[query] = False
    attribute = run.similarities[attribute_method][query]
    figure, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.2), squeeze=False)
    for axis, method in zip(axes[0], methods, strict=True):
        relational = run.similarities[method][query]
        for mask, colour, label in (
            (others & ~same, "#d63031", "other relation"),
            (others & same, "#2ea043", "same relation"),
        ):
            axis.scatter(attribute[mask], relational[mask], s=10, c=colour, alpha=0.6, label=label)
        axis.set_xlabel(f"attribute similarity ({attribute_method} of the objects)")
        axis.set_ylabel(f"{method} similarity")
        axis.set_title(method)
        axis.legend(loc="lower right", fontsize=8)
    family_name = run.pool.features["family"].names[int(families[query])]
    figure.suptitle(f"one {family_name} query against the held-out pool")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(
    run: BenchmarkRun,
    output_dir: str | Path,
    grid_methods: Sequence[str],
    plot_methods: Sequence[str],
    attribute_method: str = "colour histogram",
    notes: str = "",
) -> Path:
    """Writes `report.md`, `neighbours_<method>.png` for `grid_methods` and `similarity_space.png`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    queries = query_indices(run)
    for method in grid_methods:
        neighbour_grid(run, method, queries).save(output_dir / f"neighbours_{slug(method)}.png")
    similarity_space_plot(run, plot_methods, attribute_method, queries[0], output_dir / "similarity_space.png")
    family_count = len(set(run.pool["family"]))
    text = [
        "# relsim synthetic relational benchmark",
        "",
        f"Pool: {len(run.pool)} held-out images ({family_count} relation families, shapes and colours never seen in "
        "training). Every image queries all the others; a neighbour is relevant when it shows the same relation.",
        "",
        markdown_table(run.table),
        "",
        "recall@k: a same-relation image among the top k; mAP: mean average precision of same-relation retrieval; "
        "attribute trap: the nearest neighbour shares the query's shape or colour but not its relation (lower is "
        "better).",
        "",
        *(f"![neighbours {method}](neighbours_{slug(method)}.png)" for method in grid_methods),
        "",
        "![similarity space](similarity_space.png)",
    ]
    if notes:
        text += ["", notes]
    path = output_dir / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path
