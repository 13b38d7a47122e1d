"""The leak check on files: official captions jsonl in, literal descriptions from a jsonl or the literal
captioner, a per-caption jsonl and a markdown summary out. What `python -m training.pipeline check` runs.

Literal descriptions jsonl: one object per line, `{"image_hash": ..., "description": "..."}` or
`{"image_hash": ..., "descriptions": ["...", ...]}`; several lines for one image add up.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import UnreadableImageError, decode_image
from training.caption_text import normalize_caption
from training.evaluation.captioner import Captioner
from training.image_folder import image_file_extensions
from training.image_ids import require_image_hash
from training.json_lines import read_json_lines
from training.pipeline.leak_check import LeakReport, check_captions
from training.store import atomic_write
from training.vlm.chat import QwenVLChat


logger = logging.getLogger(__name__)

# What the evaluation's `Captioner` is called as: images and their hashes in, one literal caption per image out.
LiteralCaptioner = Callable[[Sequence[PIL.Image.Image], Sequence[str]], list[str]]
REPORT_ROWS = "leak_check.jsonl"
REPORT_SUMMARY = "leak_check_summary.json"
REPORT_MARKDOWN = "leak_check.md"


def _json_lines(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """`(file:line, object)` for every non-blank line; a line that is not a JSON object is an error naming it."""
    return [(f"{path}:{line_number}", record) for line_number, record in read_json_lines(path)]


def read_caption_records(captions_jsonl: str | Path) -> list[dict[str, Any]]:
    """Official caption rows (`image_hash`, `caption`, optional `url_link`), captions normalised (literal quotes
    removed). An empty caption is kept: the check reports it.

    Raises:
        ValueError: `file:line: ...` for malformed JSON, a missing or non-string field, or a bad image hash.
    """
    path = Path(captions_jsonl)
    records = []
    for where, record in _json_lines(path):
        for name in ("image_hash", "caption"):
            if not isinstance(record.get(name), str):
                raise ValueError(f"{where}: field {name!r} is missing or not a string")
        require_image_hash(record["image_hash"], f"{where}: field 'image_hash'")
        records.append({**record, "caption": normalize_caption(record["caption"])})
    return records


def read_literal_descriptions(descriptions_jsonl: str | Path) -> dict[str, list[str]]:
    """`image_hash -> [description, ...]` from a descriptions jsonl (see the module docstring).

    Raises:
        ValueError: `file:line: ...` for malformed JSON, a bad image hash, or neither a `description` string nor a
            `descriptions` list of strings.
    """
    path = Path(descriptions_jsonl)
    descriptions: dict[str, list[str]] = {}
    for where, record in _json_lines(path):
        image_hash = require_image_hash(record.get("image_hash"), f"{where}: field 'image_hash'")
        if isinstance(record.get("description"), str):
            texts = [record["description"]]
        elif isinstance(record.get("descriptions"), list) and all(isinstance(t, str) for t in record["descriptions"]):
            texts = record["descriptions"]
        else:
            raise ValueError(f"{where}: needs 'description' (a string) or 'descriptions' (a list of strings)")
        descriptions.setdefault(image_hash, []).extend(texts)
    return descriptions


def load_literal_captioner(
    model_name_or_path: str, cache_file: str | Path, device: str = "cpu", max_pixels: int = 448 * 448
) -> Captioner:
    """The evaluation's literal Qwen2.5-VL captioner (imported here, on use, so the checker itself stays light)."""
    return Captioner(QwenVLChat.from_pretrained(model_name_or_path, device=device, max_pixels=max_pixels), cache_file)


def describe_images(
    captioner: LiteralCaptioner, image_hashes: Sequence[str], image_dir: str | Path, batch_size: int = 8
) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    """Literal captions of the images `<image_dir>/<image_hash>.<ext>`, in batches.

    Returns:
        `image_hash -> [caption]`, and `(image_hash, "file: reason")` for each image that is missing or
        unreadable (reported, never replaced).
    """
    from transformers.utils.logging import tqdm

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise NotADirectoryError(f"image folder {image_dir} does not exist")
    extensions = image_file_extensions()
    files = {path.stem: path for path in image_dir.iterdir() if path.suffix.lower() in extensions}
    descriptions: dict[str, list[str]] = {}
    errors: list[tuple[str, str]] = []
    unique = list(dict.fromkeys(image_hashes))
    for start in tqdm(range(0, len(unique), batch_size), desc="describing images", unit="batch"):
        images, hashes = [], []
        for image_hash in unique[start : start + batch_size]:
            path = files.get(image_hash)
            if path is None:
                errors.append((image_hash, f"{image_dir / image_hash}.*: no such image"))
                continue
            try:
                images.append(decode_image(path))
            except UnreadableImageError as error:
                errors.append((image_hash, f"{error.source}: {error.reason}"))
                continue
            hashes.append(image_hash)
        if images:
            for image_hash, caption in zip(hashes, captioner(images, hashes), strict=True):
                descriptions[image_hash] = [caption]
    if errors:
        logger.warning("%d images could not be described (checked for format only), e.g. %s", len(errors), errors[0][1])
    return descriptions, errors


def check_caption_file(
    captions_jsonl: str | Path,
    output_dir: str | Path,
    descriptions_jsonl: str | Path | None = None,
    image_dir: str | Path | None = None,
    captioner: LiteralCaptioner | None = None,
    extra_relational_words: Sequence[str] = (),
    batch_size: int = 8,
) -> LeakReport:
    """Checks every caption of an official captions jsonl and writes the report into `output_dir`.

    Args:
        descriptions_jsonl: literal descriptions by image hash (see the module docstring).
        image_dir: the images `<image_hash>.<ext>` the captioner describes; needed with `captioner`.
        captioner: a literal captioner (`load_literal_captioner`, or any callable of the same shape); its captions
            are added to the jsonl's descriptions.

    Raises:
        ValueError: `file:line` for a bad line of either jsonl; for a file without captions; for `captioner`
            without `image_dir`.
    """
    if captioner is not None and image_dir is None:
        raise ValueError("a literal captioner needs image_dir, the folder of <image_hash>.<ext> images")
    records = read_caption_records(captions_jsonl)
    if not records:
        raise ValueError(f"{captions_jsonl} holds no captions")
    descriptions = read_literal_descriptions(descriptions_jsonl) if descriptions_jsonl is not None else {}
    errors: list[tuple[str, str]] = []
    if captioner is not None:
        generated, errors = describe_images(captioner, [r["image_hash"] for r in records], image_dir, batch_size)
        for image_hash, texts in generated.items():
            descriptions[image_hash] = [*descriptions.get(image_hash, []), *texts]
    rows = [{**record, "literal_descriptions": descriptions.get(record["image_hash"], [])} for record in records]
    report = check_captions(rows, extra_relational_words)
    report = LeakReport(report.checks, report.image_hashes, tuple(errors))
    write_leak_report(report, output_dir)
    return report


def write_leak_report(report: LeakReport, output_dir: str | Path) -> dict[str, Path]:
    """Writes `leak_check.jsonl` (one row per caption), `leak_check_summary.json` and `leak_check.md` atomically.

    Returns:
        the three paths by kind: `rows`, `summary`, `markdown`.
    """
    output_dir = Path(output_dir)
    content = report.to_dict()
    rows = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in content["captions"])
    paths = {
        "rows": atomic_write(output_dir / REPORT_ROWS, rows.encode("utf-8")),
        "summary": atomic_write(
            output_dir / REPORT_SUMMARY,
            (json.dumps({"summary": content["summary"], "errors": content["errors"]}, indent=2) + "\n").encode(),
        ),
        "markdown": atomic_write(output_dir / REPORT_MARKDOWN, leak_report_markdown(report).encode("utf-8")),
    }
    logger.info(
        "checked %d captions: leak rate %.3f, format-problem rate %.3f; report in %s",
        report.num_captions,
        report.leak_rate,
        report.format_problem_rate,
        output_dir,
    )
    return paths


def leak_report_markdown(report: LeakReport, examples: int = 10) -> str:
    """A short human summary: counts and rates, problems, most leaked words, the first failing captions."""
    summary = report.summary()
    lines = [
        "# Leak and format check",
        "",
        "| captions | described | ok | leak rate | format-problem rate |",
        "|---:|---:|---:|---:|---:|",
        f"| {summary['captions']} | {summary['described']} | {summary['ok']} | {summary['leak_rate']:.3f} "
        f"| {summary['format_problem_rate']:.3f} |",
        "",
        "The leak rate counts the described captions (those with a literal description); the format-problem rate "
        "counts all captions.",
    ]
    if summary["problems"]:
        lines += ["", "| problem | captions |", "|---|---:|"]
        lines += [f"| {problem} | {count} |" for problem, count in summary["problems"].items()]
    if summary["most_leaked_words"]:
        words = ", ".join(f"{word} ({count})" for word, count in summary["most_leaked_words"].items())
        lines += ["", f"Most leaked words: {words}."]
    failing = [(h, check) for h, check in zip(report.image_hashes, report.checks, strict=True) if not check.ok]
    if failing:
        lines += ["", f"## First {min(examples, len(failing))} of {len(failing)} failing captions", ""]
        lines += [
            f"- `{h}` {json.dumps(check.caption)}: {'; '.join(check.problems)}" for h, check in failing[:examples]
        ]
    if report.errors:
        first = report.errors[0][1]
        lines += ["", f"{len(report.errors)} images could not be described (format checked only), e.g. `{first}`."]
    return "\n".join(lines) + "\n"
