"""The relational benchmark's report folder: `report.md` leading with the relations training never saw (their table
with the chance row, which factors transfer, neighbour grids, a relation-text query), then the seen relations; and
the issue's three targets checked against a table, with mean ± std over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.evaluation.relation_benchmark import (
    FACTOR_METRICS,
    SEEN_METRICS,
    UNSEEN_METRICS,
    UNSEEN_POOL_TEXT_MAP,
    RelationBenchmarkRun,
)
from training.evaluation.reporting.neighbour_grids import (
    GridRow,
    describe_grid,
    draw_neighbour_grid,
    neighbour_rows,
    text_tile,
)
from training.evaluation.reporting.tables import markdown_table, rows_from_table
from training.evaluation.synthetic_report import RELSIM_IN_BRIEF, slug
from training.evaluation.synthetic_retrieval import COLOUR_HISTOGRAM, PIXEL_COSINE
from training.synthetic.factors import FACTORS


NEIGHBOURS = 5
GRID_QUERIES = 8
CHANCE_ROW = "chance (random ranking)"
LOOK_BASELINES = (PIXEL_COSINE, COLOUR_HISTOGRAM)
# the targets: unseen image->image mAP against the best look baseline, unseen text mAP, seen mAP
UNSEEN_OVER_LOOKS = 2.0
UNSEEN_TEXT_BAR = 0.5
SEEN_BAR = 0.8

METRICS_EXPLAINED = [
    "- **mAP** (mean average precision, image→image): every image queries the whole pool (itself left out); how high "
    "*all* images of its relation rank, averaged over queries; 1.0 puts every one ahead of every other image.",
    "- **recall@1**: share of queries whose nearest neighbour shows the same relation.",
    "- **text mAP**: each relation's anonymous caption, embedded by the caption encoder relsim trained against, ranks "
    "the whole pool; mAP of that relation's images. Only for methods trained into the caption space (– otherwise).",
    f"- **{UNSEEN_POOL_TEXT_MAP}**: the same with unseen captions ranking only the unseen-relation images, the usual "
    "zero-shot setting (no seen relation can get in the way).",
    "- **unseen layout / change / exception / structure mAP**: unseen-relation queries again, a neighbour counted "
    "right when it shares that one factor with the query: which factors carry over to new combinations.",
    "- **attribute trap**: share of queries whose nearest neighbour has the query's shape or colour but another "
    "relation, i.e. retrieval fooled by looks (lower is better).",
    f"- **{CHANCE_ROW}**: the expected value of each metric when the pool is ranked at random (mAP: the expected "
    "average precision; recall@1: relevant images over ranked images).",
]


@dataclass(frozen=True)
class TargetCheck:
    """One of the issue's targets: what it asks, the measured value, the bar it must reach and whether it does."""

    target: str
    value: float
    bar: float
    met: bool
    chance: float | None = None

    def line(self) -> str:
        chance = f", chance {self.chance:.3f}" if self.chance is not None else ""
        measured = "not measured" if math.isnan(self.value) else f"{self.value:.3f}"
        return f"- **{'met' if self.met else 'missed'}**: {self.target}: {measured} (bar {self.bar:.3f}{chance})"


def relation_verdict(
    table: Mapping[str, Mapping[str, float]], chance: Mapping[str, float], method: str
) -> list[TargetCheck]:
    """The issue's three targets for `method`: unseen mAP at least twice the best look baseline's (pixel cosine,
    colour histogram), unseen text mAP >= 0.5, seen mAP >= 0.8. Pass a table of means (`mean_table`) for seeds."""
    metrics = table[method]
    looks = {name: table[name]["unseen mAP"] for name in LOOK_BASELINES if name in table}
    best_look = max(looks.values(), default=math.nan)
    looks_bar = UNSEEN_OVER_LOOKS * best_look
    checks = [
        TargetCheck(
            f"unseen relations image→image mAP ≥ {UNSEEN_OVER_LOOKS:g}× the best look baseline's "
            f"({max(looks, key=looks.get) if looks else 'none in the run'})",
            metrics["unseen mAP"],
            looks_bar,
            not math.isnan(looks_bar) and metrics["unseen mAP"] >= looks_bar,
            chance.get("unseen mAP"),
        ),
        TargetCheck(
            f"unseen relations text→image mAP ≥ {UNSEEN_TEXT_BAR}",
            metrics["unseen text mAP"],
            UNSEEN_TEXT_BAR,
            metrics["unseen text mAP"] >= UNSEEN_TEXT_BAR,
            chance.get("unseen text mAP"),
        ),
        TargetCheck(
            f"seen relations image→image mAP ≥ {SEEN_BAR}",
            metrics["seen mAP"],
            SEEN_BAR,
            metrics["seen mAP"] >= SEEN_BAR,
            chance.get("seen mAP"),
        ),
    ]
    return checks


def verdict_markdown(checks: Sequence[TargetCheck], method: str) -> str:
    met = sum(check.met for check in checks)
    return "\n".join([f"**Targets for {method}** ({met} of {len(checks)} met):", *(c.line() for c in checks)])


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """The mean and the sample standard deviation (0 for a single value; both NaN when a value is NaN, a metric the
    method does not have)."""
    if any(math.isnan(value) for value in values):
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def seeds_summary(results: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """`{method: {metric: {"mean", "std"}}}` over the tables of several seeds (sample std; NaN stays NaN). A method
    or metric missing from any table is left out."""
    if not results:
        raise ValueError("seeds_summary needs at least one table")
    methods = [name for name in results[0] if all(name in table for table in results)]
    summary = {}
    for method in methods:
        metrics = [metric for metric in results[0][method] if all(metric in table[method] for table in results)]
        summary[method] = {}
        for metric in metrics:
            mean, std = mean_and_std([table[method][metric] for table in results])
            summary[method][metric] = {"mean": mean, "std": std}
    return summary


def mean_table(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, float]]:
    """The means of a `seeds_summary`, as a table `relation_verdict` and `markdown_table` read."""
    return {method: {metric: entry["mean"] for metric, entry in metrics.items()} for method, metrics in summary.items()}


def format_mean_std(entry: Mapping[str, float], digits: int = 3) -> str:
    """`0.512 ± 0.031`; a dash where the value is NaN (a method without that metric)."""
    if math.isnan(entry["mean"]):
        return "–"
    return f"{entry['mean']:.{digits}f} ± {entry['std']:.{digits}f}"


def relation_label(name: str) -> str:
    """`row/growing/none/none` as `row, growing, none, none` (breaks between factors when wrapped)."""
    return name.replace("/", ", ")


def differing_factors(query: str, neighbour: str) -> str:
    """A neighbour's label in a grid: `same` for the query's relation, else the factors its relation differs in, one
    a line (plain words: the grids' font has no symbols)."""
    if query == neighbour:
        return "same"
    pairs = zip(FACTORS, query.split("/"), neighbour.split("/"), strict=True)
    return "\n".join(factor for factor, mine, theirs in pairs if mine != theirs)


def grid_queries(run: RelationBenchmarkRun, unseen: bool, count: int = GRID_QUERIES) -> list[int]:
    """The first image of up to `count` relations of one split, one layout each while layouts last: a varied set."""
    firsts: dict[str, int] = {}
    for index, (name, flag) in enumerate(zip(run.pool["relation"], run.pool["unseen"], strict=True)):
        if flag == unseen:
            firsts.setdefault(name, index)
    chosen, layouts = [], set()
    for name, index in firsts.items():
        if name.split("/")[0] not in layouts and len(chosen) < count:
            chosen.append(index)
            layouts.add(name.split("/")[0])
    chosen += [index for index in firsts.values() if index not in chosen][: count - len(chosen)]
    return chosen


def grid_rows(run: RelationBenchmarkRun, method: str, queries: Sequence[int], k: int = NEIGHBOURS) -> list[GridRow]:
    """Each query's `k` nearest neighbours under `method`, marked by relation and labelled by the factors they
    differ in."""
    relations, images = list(run.pool["relation"]), list(run.pool["image"])
    similarity = run.similarities[method]
    return neighbour_rows(similarity, images, relations, queries, k, relation_label, differing_factors)


def text_query_row(run: RelationBenchmarkRun, method: str, relation: str, k: int = NEIGHBOURS) -> GridRow:
    """One relation's caption as a query: the caption in the query cell, then its `k` best pool images."""
    relations, images = list(run.pool["relation"]), list(run.pool["image"])
    caption = run.pool["caption"][relations.index(relation)]
    scores = run.text_similarities[method][run.text_relations.index(relation)]
    best = scores.topk(min(k, scores.numel())).indices.tolist()
    return GridRow(
        label=f"text: {relation_label(relation)}",
        query=text_tile(caption),
        neighbours=[images[index] for index in best],
        relevant=[relations[index] == relation for index in best],
        neighbour_labels=[differing_factors(relation, relations[index]) for index in best],
    )


def metric_table(run: RelationBenchmarkRun, columns: Sequence[str]) -> str:
    """The methods' rows and the chance row for `columns`."""
    rows = rows_from_table({name: {c: metrics[c] for c in columns} for name, metrics in run.table.items()})
    rows.append({"method": CHANCE_ROW, **{column: run.chance.get(column) for column in columns}})
    return markdown_table(rows, columns=columns).rstrip("\n")


def _grids(run: RelationBenchmarkRun, output_dir: Path, methods: Sequence[str], unseen: bool) -> list[str]:
    split = "unseen" if unseen else "seen"
    queries = grid_queries(run, unseen)
    if not queries:
        return ["", f"No {split}-relation image in the pool."]
    text = []
    for method in methods:
        rows = grid_rows(run, method, queries)
        file = f"neighbours_{split}_{slug(method)}.png"
        title = f"{method}: nearest neighbours of {split}-relation queries"
        draw_neighbour_grid(rows, title).save(output_dir / file)
        lines = [
            f"{row.label} → "
            + "; ".join(f"{rank}: {label.replace(chr(10), ', ')}" for rank, label in enumerate(row.neighbour_labels, 1))
            for row in rows
        ]
        text += ["", f"![{split} neighbours {method}]({file})", "", f"**{method}**: {describe_grid(rows)}", ""]
        text += [f"- {line}" for line in lines]
    return text


def write_relation_report(
    run: RelationBenchmarkRun,
    output: str | Path,
    grid_methods: Sequence[str],
    summary: str = "",
    notes: str = "",
) -> Path:
    """Writes `report.md` and its pictures (`neighbours_unseen_<method>.png`, `neighbours_seen_<method>.png`,
    `text_query.png`) into the folder `output`.

    Args:
        grid_methods: the methods whose neighbour grids are drawn; the first of them in the caption space also
            answers the relation-text query.
        summary: the verdict, placed under the unseen table.
        notes: anything else (e.g. how training went), at the end.
    """
    output_dir = Path(output)
    output_dir.mkdir(parents=True, exist_ok=True)
    unseen_flags = list(run.pool["unseen"])
    relations = list(run.pool["relation"])
    unseen_relations = list(dict.fromkeys(name for name, flag in zip(relations, unseen_flags, strict=True) if flag))
    seen_count = len(set(relations)) - len(unseen_relations)
    text = [
        "# relsim relational benchmark: relations training never saw",
        "",
        RELSIM_IN_BRIEF,
        "",
        f"**The test.** {len(run.pool)} images of {len(set(relations))} relations, all drawn with shapes and colours "
        f"that training never showed. {len(unseen_relations)} of the relations ({sum(unseen_flags)} images) never "
        f"appear in training at all: each combines layout, change, exception and structure values that training "
        f"shows only in other combinations. The other {seen_count} were trained on (with other looks). Every image "
        "queries the whole pool; a neighbour is right when it shows the same relation, whatever it looks like.",
        "",
        "## Unseen relations",
        "",
        metric_table(run, UNSEEN_METRICS),
        "",
        *METRICS_EXPLAINED,
    ]
    if summary:
        text += ["", summary]
    text += [
        "",
        "### Which factors transfer",
        "",
        "Unseen-relation queries, a neighbour counted right when it shares one factor with the query.",
        "",
        metric_table(run, FACTOR_METRICS),
        "",
        "### Nearest neighbours of unseen-relation queries",
        "",
        f"One row per unseen relation (named at the left as layout, change, exception, structure): the query, then "
        f"its {NEIGHBOURS} nearest neighbours in the whole pool, best first. Frames: blue is the query, green a "
        "neighbour of the same relation, red another; under each neighbour, `same` or the factors its relation "
        "differs in. The lists under each grid say the same in words.",
        *_grids(run, output_dir, grid_methods, unseen=True),
    ]
    text_methods = [method for method in grid_methods if method in run.text_similarities]
    if text_methods and unseen_relations:
        method, relation = text_methods[0], unseen_relations[0]
        row = text_query_row(run, method, relation)
        draw_neighbour_grid([row], f"{method}: top {NEIGHBOURS} images for an unseen relation's caption").save(
            output_dir / "text_query.png"
        )
        caption = run.pool["caption"][relations.index(relation)]
        text += [
            "",
            "### A relation-text query for an unseen relation",
            "",
            f'{method} ranks the pool by the caption of the unseen relation `{relation}`: "{caption}". Its top '
            f"{NEIGHBOURS} images ({row.correct} of {NEIGHBOURS} show that relation; under each, `same` or the factors "
            "it differs in):",
            "",
            "![text query](text_query.png)",
        ]
    text += [
        "",
        "## Seen relations",
        "",
        "Relations training showed, drawn here with held-out looks.",
        "",
        metric_table(run, SEEN_METRICS),
        *_grids(run, output_dir, grid_methods, unseen=False),
    ]
    if notes:
        text += ["", notes]
    path = output_dir / "report.md"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def summary_rows(summary: Mapping[str, Mapping[str, Mapping[str, float]]], columns: Sequence[str]) -> list[dict]:
    """`seeds_summary` as `markdown_table` rows of `mean ± std` cells."""
    rows: list[dict[str, Any]] = []
    for method, metrics in summary.items():
        rows.append({"method": method, **{c: format_mean_std(metrics[c]) for c in columns if c in metrics}})
    return rows
