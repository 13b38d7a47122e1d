"""The paper evaluation's report: one table row per method (`table.md`, `table.json`), an HTML page of queries with
each method's neighbours (`index.html`), and the similarity-space plot of one query."""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import PIL.Image
import torch

from training.evaluation.embed import read_image
from training.evaluation.embedding_cache import EmbeddingCache
from training.evaluation.judges.cache import read_judgements
from training.evaluation.layout import EvalLayout
from training.evaluation.pool import PoolItem
from training.evaluation.reporting import html_page
from training.evaluation.reporting.colours import IRRELEVANT, QUERY, RELEVANT, UNKNOWN, hex_colour
from training.evaluation.reporting.similarity_space import SimilaritySpace
from training.evaluation.reporting.tables import markdown_table
from training.evaluation.retrieval import Retrieval, closeness, read_retrievals
from training.image_ids import require_image_hash


PAGE_STYLE = (
    "body{font-family:sans-serif}td{vertical-align:top;text-align:center;font-size:11px;padding:3px}"
    "img{display:block;max-width:%(side)dpx;margin:auto}.caption{max-width:%(side)dpx}"
    ".badge{color:white;font-weight:bold;border-radius:3px;margin:2px auto;max-width:%(side)dpx}"
    ".swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px}"
)
logger = logging.getLogger(__name__)

SAME_GROUP, OTHER_GROUP, NO_GROUP = "same seed group", "other seed group", "no seed group (distractor)"


def summary_rows(layout: EvalLayout) -> list[dict[str, float | str | None]]:
    """Per method: mean judge score of each judge (unparsed answers left out), judge-free metrics."""
    rows: dict[str, dict] = defaultdict(dict)
    for path in layout.retrieval_files():
        rows[path.stem]["method"] = path.stem
    for path in layout.judgement_files():
        judge_name, method = path.parent.name, path.stem
        scores = [judgement.score for judgement in read_judgements(path) if judgement.score is not None]
        rows[method]["method"] = method
        rows[method][f"judge:{judge_name}"] = sum(scores) / len(scores) if scores else None
        rows[method][f"judged:{judge_name}"] = len(scores)
    for path in layout.metric_files():
        rows[path.stem]["method"] = path.stem
        rows[path.stem].update(json.loads(path.read_text()))
    if not rows:
        raise FileNotFoundError(f"{layout.root} holds no retrievals, judgements or metrics yet")
    return sorted(rows.values(), key=lambda row: row["method"])


def check_thumbnail_names(items: Iterable[PoolItem]) -> None:
    """Every image hash that will name a thumbnail file is a real image hash, checked before anything is written:
    a hash such as `../../x` from a hand-edited pool would otherwise write outside the report folder."""
    for item in items:
        require_image_hash(item.image_hash, where=f"pool row of image {item.image} (field image_hash)")


def _thumbnail(item: PoolItem, folder: Path, side: int) -> str:
    target = folder / f"{require_image_hash(item.image_hash, where=f'pool row of image {item.image}')}.jpg"
    if not target.exists():
        image, _ = read_image(item.image)
        image.thumbnail((side, side), PIL.Image.LANCZOS)
        image.save(target, format="JPEG", quality=85)
    return f"thumbs/{target.name}"


def seed_group_relation(query: PoolItem, neighbour: PoolItem) -> tuple[tuple[int, int, int], str]:
    """The frame colour and badge of a neighbour: from the query's seed group (right), from another one (wrong),
    or a distractor (nothing known)."""
    if query.group_id is None or neighbour.group_id is None:
        return UNKNOWN, ""
    if neighbour.group_id == query.group_id:
        return RELEVANT, SAME_GROUP
    return IRRELEVANT, OTHER_GROUP


def _pool_item(items: dict[str, PoolItem], image_hash: str, source: Path) -> PoolItem:
    if image_hash not in items:
        raise KeyError(
            f"{source} names image {image_hash!r}, which the pool does not list; use the pool it was made with"
        )
    return items[image_hash]


def write_html(
    layout: EvalLayout, items: dict[str, PoolItem], output: Path, queries: int = 20, top_k: int = 5, side: int = 160
) -> Path:
    """Queries (the first `queries` of the shared query list) as rows, methods as column groups of `top_k`
    neighbours, each framed by whether it comes from the query's seed group and labelled with its score, the
    judge's score where judged, and its anonymous caption where known. Every text is escaped."""
    retrievals: dict[str, dict[str, Retrieval]] = {}
    shown_items: dict[str, PoolItem] = {}
    for path in layout.retrieval_files():
        retrievals[path.stem] = {retrieval.query: retrieval for retrieval in read_retrievals(path)}
    methods = sorted(retrievals)
    shown = list(next(iter(retrievals.values())))[:queries] if retrievals else []
    for method in methods:
        source = layout.retrievals(method)
        for query in shown:
            shown_items[query] = _pool_item(items, query, source)
            retrieval = retrievals[method].get(query)
            for neighbour in retrieval.neighbours[:top_k] if retrieval else []:
                shown_items[neighbour] = _pool_item(items, neighbour, source)
    check_thumbnail_names(shown_items.values())
    thumbs = output / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    judged = {(j.method, j.query, j.candidate): j.score for p in layout.judgement_files() for j in read_judgements(p)}
    body = [
        html_page.legend(
            [
                (hex_colour(QUERY), "query"),
                (hex_colour(RELEVANT), SAME_GROUP),
                (hex_colour(IRRELEVANT), OTHER_GROUP),
                (hex_colour(UNKNOWN), NO_GROUP),
            ]
        ),
        "<table><tr><th>query</th>",
        *(f"<th colspan='{top_k}'>{html_page.escape(method)}</th>" for method in methods),
        "</tr>",
    ]
    for query in shown:
        item = items[query]
        figure = html_page.image_figure(_thumbnail(item, thumbs, side), query, hex_colour(QUERY), [item.caption or ""])
        body.append(f"<tr><td>{figure}</td>")
        for method in methods:
            retrieval = retrievals[method].get(query)
            found = list(zip(retrieval.neighbours, retrieval.scores, strict=True))[:top_k] if retrieval else []
            for neighbour, score in found:
                judge_score = judged.get((method, query, neighbour))
                label = f"{score:.3f}" + (f" · judge {judge_score:g}" if judge_score is not None else "")
                colour, badge = seed_group_relation(item, items[neighbour])
                figure = html_page.image_figure(
                    _thumbnail(items[neighbour], thumbs, side), neighbour, hex_colour(colour),
                    [label, items[neighbour].caption or ""], badge=badge,
                )  # fmt: skip
                body.append(f"<td>{figure}</td>")
            body += ["<td></td>"] * (top_k - len(found))
        body.append("</tr>")
    body.append("</table>")
    path = output / "index.html"
    text = html_page.page("Relational retrieval: queries and neighbours", body, PAGE_STYLE % {"side": side})
    path.write_text(text, encoding="utf-8")
    return path


def write_report(layout: EvalLayout, items: dict[str, PoolItem], queries: int = 20, top_k: int = 5) -> dict[str, Path]:
    output = layout.report()
    output.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(layout)
    (output / "table.md").write_text(markdown_table(rows), encoding="utf-8")
    (output / "table.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    written = {"table.md": output / "table.md", "table.json": output / "table.json"}
    if layout.retrieval_files():
        written["index.html"] = write_html(layout, items, output, queries=queries, top_k=top_k)
    return written


def similarity_space(
    relational: EmbeddingCache,
    attribute: EmbeddingCache,
    items: dict[str, PoolItem],
    query: str,
    points: int = 3000,
    seed: int = 0,
) -> SimilaritySpace:
    """One query against up to `points` other images embedded by both methods (a seeded sample): relational
    similarity (relsim) against attribute similarity (an image encoder such as CLIP-I or DINO). Images high on
    one axis and low on the other are where the two notions of similarity part ways."""
    if query not in relational or query not in attribute:
        raise KeyError(f"query {query} is not embedded by both methods")
    shared = sorted(h for h in items if h in relational and h in attribute and h != query)
    sample = random.Random(seed).sample(shared, min(points, len(shared)))
    axes = {}
    for name, cache in (("relational", relational), ("attribute", attribute)):
        _, query_vector = cache.load([query])
        _, vectors = cache.load(sample)
        axes[name] = closeness(query_vector, vectors, cache.metric)[0]
    same_group = torch.tensor(
        [items[h].group_id is not None and items[h].group_id == items[query].group_id for h in sample], dtype=torch.bool
    )
    try:
        query_image = read_image(items[query].image)[0]
    except (OSError, ValueError) as error:
        logger.warning("the similarity-space plot shows no query image: cannot read %s (%s)", items[query].image, error)
        query_image = None
    relational_name, attribute_name = relational.identity["method"], attribute.identity["method"]
    return SimilaritySpace(
        attribute=axes["attribute"],
        relational={relational_name: axes["relational"]},
        relevant=same_group,
        attribute_label=f"attribute similarity ({attribute_name})",
        relevant_label=SAME_GROUP,
        other_label="rest of the pool",
        title=f"one query against {len(sample)} images",
        query_image=query_image,
        image_ids=sample,
    )
