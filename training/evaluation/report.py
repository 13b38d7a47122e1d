"""The evaluation report: one table row per method, and an HTML page of queries with each method's neighbours."""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from pathlib import Path

import PIL.Image

from training.evaluation.embed import read_image
from training.evaluation.judges.cache import read_judgements
from training.evaluation.layout import EvalLayout
from training.evaluation.pool import PoolItem
from training.evaluation.retrieval import read_retrievals


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


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown_table(rows: list[dict]) -> str:
    columns = ["method", *sorted({key for row in rows for key in row if key != "method"})]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(["---", *["---:"] * (len(columns) - 1)]) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _thumbnail(item: PoolItem, folder: Path, side: int) -> str:
    target = folder / f"{item.image_hash}.jpg"
    if not target.exists():
        image, _ = read_image(item.image)
        image.thumbnail((side, side), PIL.Image.LANCZOS)
        image.save(target, format="JPEG", quality=85)
    return f"thumbs/{target.name}"


def write_html(
    layout: EvalLayout, items: dict[str, PoolItem], output: Path, queries: int = 20, top_k: int = 5, side: int = 160
) -> Path:
    """Queries (the first `queries` of the shared query list) as rows, methods as column groups of `top_k`
    neighbours, each labelled with its score and, where judged, the judge's score."""
    thumbs = output / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    retrievals = {path.stem: {r.query: r for r in read_retrievals(path)} for path in layout.retrieval_files()}
    judged = {(j.method, j.query, j.candidate): j.score for p in layout.judgement_files() for j in read_judgements(p)}
    methods = sorted(retrievals)
    shown = list(next(iter(retrievals.values())))[:queries] if retrievals else []
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>relsim retrieval</title><style>"
        "body{font-family:sans-serif}td{vertical-align:top;text-align:center;font-size:11px;padding:3px}"
        f"img{{display:block;max-width:{side}px}}.caption{{max-width:{side}px}}</style></head><body>",
        "<h1>Relational retrieval: queries and neighbours</h1><table><tr><th>query</th>",
    ]
    parts += [f"<th colspan='{top_k}'>{html.escape(method)}</th>" for method in methods]
    parts.append("</tr>")
    for query in shown:
        item = items[query]
        caption = f"<div class='caption'>{html.escape(item.caption)}</div>" if item.caption else ""
        parts.append(f"<tr><td><img src='{_thumbnail(item, thumbs, side)}' alt='{query}'>{caption}</td>")
        for method in methods:
            retrieval = retrievals[method].get(query)
            found = list(zip(retrieval.neighbours, retrieval.scores, strict=True))[:top_k] if retrieval else []
            for neighbour, score in found:
                judge_score = judged.get((method, query, neighbour))
                label = f"{score:.3f}" + (f" · judge {judge_score:g}" if judge_score is not None else "")
                parts.append(
                    f"<td><img src='{_thumbnail(items[neighbour], thumbs, side)}' alt='{neighbour}'>{label}</td>"
                )
            parts += ["<td></td>"] * (top_k - len(found))
        parts.append("</tr>")
    parts.append("</table></body></html>")
    path = output / "index.html"
    path.write_text("".join(parts), encoding="utf-8")
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
