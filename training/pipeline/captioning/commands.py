"""The bodies of `python -m training.pipeline group-caption` and `caption train|evaluate`, over the captioning
package's functions.

- `group_caption_command`: seed groups (the official `seed_group.json` with its image folder, or a built
  `seed_groups` dataset with images) -> one caption per group by the recipe's frozen group captioner; writes
  `seed_group.json` (what `caption train` reads back with the same image folder), `group_captions.jsonl` and
  `group_caption_summary.json` (unreadable images, skipped groups); the cache makes a rerun ask only new groups.
- `train_captioner_command`: the captioner recipe on its seed groups (or those given), or on generated seed groups
  when the recipe asks for synthetic ones.
- `evaluate_captions_command`: a captioning run's `caption.jsonl` against reference captions, joined by image id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from training.image_ids import url_image_hash
from training.pipeline.captioning.group import (
    GroupCaptioner,
    seed_groups_from_dataset,
    seed_groups_from_json,
    write_group_jsonl,
    write_seed_group_json,
)
from training.pipeline.captioning.quality import evaluate_captioner, load_text_encoder
from training.pipeline.captioning.recipe import load_captioner_recipe, train_captioner_from_recipe
from training.pipeline.captioning.synthetic import train_synthetic_captioner
from training.pipeline.model_stages import load_chat
from training.pipeline.recipe import load_pipeline_recipe
from training.store import RecordLog, atomic_write
from training.vlm.decoding import Decoding


logger = logging.getLogger(__name__)

SEED_GROUP_JSON, GROUP_JSONL, GROUP_SUMMARY, GROUP_CACHE = (
    "seed_group.json",
    "group_captions.jsonl",
    "group_caption_summary.json",
    "group_cache.jsonl",
)
QUALITY_FILE = "caption_quality.json"


def _seed_groups(seed_groups: str | Path, images: str | Path | None) -> list:
    seed_groups = Path(seed_groups)
    if seed_groups.is_dir():
        import datasets

        folder = seed_groups / "seed_groups" if (seed_groups / "seed_groups").is_dir() else seed_groups
        loaded = datasets.load_from_disk(str(folder))
        return seed_groups_from_dataset(loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded)
    if images is None:
        raise ValueError(f"{seed_groups}: a seed_group.json needs --images, the folder of its <md5(url)>.<ext> images")
    return seed_groups_from_json(seed_groups, images)


def group_caption_command(
    seed_groups: str | Path, output_dir: str | Path, recipe: str | Path | None = None, images: str | Path | None = None
) -> dict[str, int]:
    """Captions every seed group with the recipe's `group_caption` model; returns the run's counts."""
    settings = load_pipeline_recipe(recipe)
    groups = _seed_groups(seed_groups, images)
    group = settings.group_caption
    chat = load_chat(group.model, group.adapter, settings.device, settings.dtype, group.max_pixels)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    captioner = GroupCaptioner(chat, output_dir / GROUP_CACHE, decoding=Decoding(**group.decoding))
    run = captioner(groups, batch_size=group.batch_size or 2, show_progress=True)
    write_seed_group_json(run, output_dir / SEED_GROUP_JSON)
    write_group_jsonl(run, output_dir / GROUP_JSONL)
    report = {
        **run.summary(),
        "unreadable": [image.as_dict() for image in run.unreadable],
        "skipped": run.skipped_groups,
    }
    atomic_write(output_dir / GROUP_SUMMARY, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    logger.info("group captions: %s; %s", run.summary(), output_dir / SEED_GROUP_JSON)
    return run.summary()


def train_captioner_command(
    recipe: str | Path, seed_groups: str | Path | None = None, images: str | Path | None = None
) -> dict[str, Any]:
    """Trains the single-image captioner of `recipe`; `seed_groups` (a seed_group.json with `images`, or a built
    seed_groups folder) overrides the recipe's. Returns the held-out quality summary ({} without held-out groups)."""
    overrides: dict[str, Any] = {}
    if seed_groups is not None:
        seed_groups = Path(seed_groups)
        if seed_groups.is_dir():
            overrides.update(seed_groups_dataset=str(seed_groups), seed_group_json=None, synthetic_num_per_family=0)
        else:
            if images is None:
                raise ValueError(f"{seed_groups}: a seed_group.json needs --images, the folder of its images")
            overrides.update(seed_group_json=str(seed_groups), image_dir=str(images), synthetic_num_per_family=0)
    loaded = load_captioner_recipe(recipe, overrides)
    if not (loaded.data.seed_group_json or loaded.data.seed_groups_dataset) and loaded.data.synthetic_num_per_family:
        _, quality = train_synthetic_captioner(loaded.sft.output_dir, loaded)  # its report beside the weights
        return quality.summary()
    _, _, quality = train_captioner_from_recipe(loaded)
    return {} if quality is None else quality.summary()


def _references(path: Path) -> dict[str, str]:
    """`image id -> reference caption` from official captions rows (`image_hash`, `caption`) or group rows
    (`image_hashes` and/or `image_names`, `caption`: `group_captions.jsonl`); a URL name also gives md5(url)."""
    references: dict[str, str] = {}
    for _, row in RecordLog(path, what="reference caption", required=("caption",)).records():
        ids = list(row.get("image_hashes") or []) + ([row["image_hash"]] if row.get("image_hash") else [])
        ids += [url_image_hash(name) for name in row.get("image_names") or [] if "://" in str(name)]
        for image_id in ids:
            references[str(image_id)] = row["caption"]
    return references


def evaluate_captions_command(captions: str | Path, references: str | Path, output_dir: str | Path):
    """MiniLM cosine of each generated caption to its reference, placeholder rate, and the leak rate when the rows
    carry `literal_descriptions`; writes `<output_dir>/caption_quality.json` (summary and per caption).

    Returns:
        the `CaptionerQuality`.
    """
    known = _references(Path(references))
    rows = [
        row
        for _, row in RecordLog(captions, what="caption row", required=("image_hash",)).records()
        if isinstance(row.get("caption"), str)
    ]
    matched = [row for row in rows if row["image_hash"] in known]
    if not matched:
        raise ValueError(f"no image_hash of {captions} has a reference caption in {references}")
    if len(matched) < len(rows):
        logger.warning("%d of %d captions have no reference and are left out", len(rows) - len(matched), len(rows))
    literal = [row.get("literal_descriptions") for row in matched]
    literal = [[value] if isinstance(value, str) else list(value or []) for value in literal]
    quality = evaluate_captioner(
        [row["caption"] for row in matched],
        load_text_encoder(),
        references=[known[row["image_hash"]] for row in matched],
        literal_descriptions=literal if all(literal) else None,
    )
    for row, per_caption in zip(matched, quality.per_caption, strict=True):
        per_caption["image_hash"] = row["image_hash"]
    output_dir = Path(output_dir)
    report = {**quality.summary(), "left_out": len(rows) - len(matched), "per_caption": quality.per_caption}
    atomic_write(output_dir / QUALITY_FILE, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    return quality
