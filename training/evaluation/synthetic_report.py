"""The synthetic benchmark's report folder: `report.md` (what is compared, the table with each metric explained,
labelled neighbour grids and what they show, the similarity-space plot), drawn with the shared `reporting` parts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch

from training.evaluation.reporting.neighbour_grids import (
    GridRow,
    describe_grid,
    draw_neighbour_grid,
    neighbour_rows,
)
from training.evaluation.reporting.similarity_space import SimilaritySpace, plot_similarity_space
from training.evaluation.reporting.tables import markdown_table, rows_from_table
from training.evaluation.synthetic_retrieval import LOOK_ATTRIBUTES, BenchmarkRun, shared_look_attributes


METRIC_COLUMNS = ("recall@1", "recall@5", "mAP", "attribute trap")
NEIGHBOURS = 5

RELSIM_IN_BRIEF = (
    "**What relsim is.** relsim turns an image into a 384-number vector that describes the *relation* the image "
    "shows rather than its objects: the image, followed by a learned query token, goes through a vision-language "
    "model (Qwen2.5-VL), and the model's hidden state at that query token is projected to 384 dimensions. Training "
    "pulls each image's vector towards the sentence embedding (all-MiniLM-L6-v2) of its *anonymous caption*, a "
    'description of the relation with the objects left as placeholders (e.g. "{Object}s mirrored exactly across a '
    'vertical axis"), so images showing the same relation land close together whatever they depict. The '
    "baselines match looks only: *pixel cosine* compares the raw pixels at 32x32, *colour histogram (objects)* "
    "compares the colours present, ignoring the background."
)

METRICS_EXPLAINED = [
    "- **recall@1**: share of queries whose nearest neighbour shows the same relation (higher is better).",
    "- **recall@5**: share of queries with at least one same-relation image among their five nearest (higher is "
    "better).",
    "- **mAP** (mean average precision): how high *all* same-relation images rank, averaged over queries; 1.0 puts "
    "every one of them ahead of every other image (higher is better).",
    "- **attribute trap**: share of queries whose nearest neighbour has the query's shape or colour but a different "
    "relation, i.e. retrieval fooled by looks (lower is better).",
]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def family_label(family: str) -> str:
    return family.replace("_", " ")


def query_indices(run: BenchmarkRun) -> list[int]:
    """The first pool image of every family, so each grid shows one query per relation."""
    first: dict[int, int] = {}
    for index, family in enumerate(run.pool["family"]):
        first.setdefault(family, index)
    return [first[family] for family in sorted(first)]


def grid_rows(run: BenchmarkRun, method: str, queries: Sequence[int], k: int = NEIGHBOURS) -> list[GridRow]:
    """Each query's `k` nearest neighbours under `method`, and which of them show the query's relation."""
    similarity, images = run.similarities[method], list(run.pool["image"])
    return neighbour_rows(similarity, images, run.family_names(), queries, k, family_label)


def similarity_space(run: BenchmarkRun, methods: Sequence[str], query: int) -> SimilaritySpace:
    """One query against the rest of the pool: x counts the look attributes each image shares with it."""
    others = [index for index in range(len(run.pool)) if index != query]
    families = run.pool["family"]
    family = family_label(run.family_names()[query])
    shared = shared_look_attributes(run.pool, query)
    return SimilaritySpace(
        attribute=shared[others],
        relational={method: run.similarities[method][query, others] for method in methods},
        relevant=torch.tensor([families[index] == families[query] for index in others], dtype=torch.bool),
        attribute_label=f"look attributes shared with the query\n({', '.join(LOOK_ATTRIBUTES)})",
        title=f"one {family} query against the other {len(others)} held-out images",
        query_image=run.pool["image"][query],
        ticks={float(count): f"{count} of {len(LOOK_ATTRIBUTES)}" for count in range(len(LOOK_ATTRIBUTES) + 1)},
    )


def write_report(
    run: BenchmarkRun,
    output_dir: str | Path,
    grid_methods: Sequence[str],
    plot_methods: Sequence[str],
    summary: str = "",
    notes: str = "",
) -> Path:
    """Writes `report.md`, `neighbours_<method>.png` for `grid_methods` and `similarity_space.png`.

    Args:
        summary: the verdict, placed right under the table.
        notes: anything else (e.g. how training went), at the end.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    queries = query_indices(run)
    family_count = len(queries)
    text = [
        "# relsim synthetic relational benchmark",
        "",
        RELSIM_IN_BRIEF,
        "",
        f"**The test.** {len(run.pool)} held-out images: {family_count} relation families drawn with shapes and "
        "colours that training never showed. Every image queries all the others; a neighbour is right when it shows "
        "the same relation, whatever its shape, colour, texture or background.",
        "",
        markdown_table(rows_from_table(run.table), columns=METRIC_COLUMNS).rstrip("\n"),
        "",
        *METRICS_EXPLAINED,
    ]
    if summary:
        text += ["", summary]
    text += [
        "",
        "## Nearest neighbours",
        "",
        f"Each grid has one row per relation family (named at the left): the query in the first column, then its "
        f"{NEIGHBOURS} nearest neighbours in the held-out pool, best first (columns 1 to {NEIGHBOURS}). Frames: "
        "blue is the query, green a neighbour that shows the query's relation, red one that does not; under each "
        "row's name, how many of its neighbours are right.",
    ]
    for method in grid_methods:
        rows = grid_rows(run, method, queries)
        draw_neighbour_grid(rows, f"{method}: nearest neighbours of one query per relation").save(
            output_dir / f"neighbours_{slug(method)}.png"
        )
        text += [
            "",
            f"![neighbours {method}](neighbours_{slug(method)}.png)",
            "",
            f"**{method}**: {describe_grid(rows)}",
        ]
    space = similarity_space(run, plot_methods, queries[0])
    plot_similarity_space(space, output_dir / "similarity_space.png")
    text += [
        "",
        "## Similarity space",
        "",
        f"{space.title[0].upper()}{space.title[1:]} (the query is at the left). Across: how many of the four look "
        f"attributes the generator drew ({', '.join(LOOK_ATTRIBUTES)}) each image shares with the query, spread "
        "sideways a little so equal counts do not hide each other. Up: each method's similarity to the query. Green "
        "points show the query's relation, grey ones another. A relational embedding lifts the green points above "
        "the grey ones at every count; a method that matches looks rises from left to right instead.",
        "",
        "![similarity space](similarity_space.png)",
    ]
    if notes:
        text += ["", notes]
    path = output_dir / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path
