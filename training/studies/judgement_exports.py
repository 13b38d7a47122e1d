"""The judgements as the dataset builders read them (`training.hub_data`): filter labels as jsonl source rows, and
verified seed groups as the official `seed_group.json`.

Filter labels: one row per image, `{"url", "label", "annotator"}` with `label` `relational` / `not_relational`, the
majority of the annotators' current labels (an image with a tie is left out and counted: only a person can break
it), `annotator` the names that agreed with it, comma-joined, and `url` the labelled file as a `file://` URI (the
builder derives `image_hash` = md5(url)).

Seed groups: each group's latest verdict across annotators; accepted and edited groups are written, rejected ones
are not. Captions are wrapped in literal double quotes, as in the official file (the builder strips them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from training.json_lines import write_json_lines
from training.store import atomic_write
from training.studies.judgement_store import GroupJudgement, LabelJudgement
from training.studies.label_agreement import current_labels


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    written: int
    left_out: int


def image_url(image: str) -> str:
    """The url a label row gives an image: URLs as they are, files as `file://` URIs of their absolute path."""
    if "://" in image:
        return image
    return Path(image).resolve().as_uri()


def export_filter_labels(judgements: Sequence[LabelJudgement], path: str | Path) -> ExportReport:
    """Writes the majority label of every labelled image to `path` (jsonl), in first-labelled order."""
    votes: dict[str, dict[str, bool]] = {}
    for annotator, labels in current_labels(judgements).items():
        for image, label in labels.items():
            votes.setdefault(image, {})[annotator] = label
    order = list(dict.fromkeys(judgement.image for judgement in sorted(judgements, key=lambda row: row.id)))
    lines, ties = [], 0
    for image in order:
        yes = sorted(name for name, label in votes[image].items() if label)
        no = sorted(name for name, label in votes[image].items() if not label)
        if len(yes) == len(no):
            ties += 1
            logger.warning("%s: %d annotators say relational, %d not: left out of the export", image, len(yes), len(no))
            continue
        label, agreed = ("relational", yes) if len(yes) > len(no) else ("not_relational", no)
        lines.append({"url": image_url(image), "label": label, "annotator": ",".join(agreed)})
    path = write_json_lines(path, lines)
    return ExportReport(path, len(lines), ties)


def export_seed_groups(judgements: Sequence[GroupJudgement], path: str | Path) -> ExportReport:
    """Writes the accepted and edited groups (their latest verdict wins) to `path` as `seed_group.json`."""
    latest: dict[int, GroupJudgement] = {}
    for judgement in sorted(judgements, key=lambda row: row.id):
        latest[judgement.group_id] = judgement
    kept = [latest[group] for group in sorted(latest) if latest[group].verdict != "reject"]
    document = [{"anonymous_caption": f'"{group.caption}"', "image_urls": group.image_urls} for group in kept]
    path = Path(path)
    atomic_write(path, (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    return ExportReport(path, len(kept), len(latest) - len(kept))
