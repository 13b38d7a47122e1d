"""The group anonymous captioner: a frozen Qwen2.5-VL sees all the images of a seed group in one user turn and
writes one anonymous caption, with `{Placeholder}`s, that fits every image (the paper's finding: captions written
for a group name the shared logic, where single-image captions name what one image happens to show).

Decoding is greedy by default (`Decoding()`): a group is captioned once and its caption becomes training data, so
the most likely caption is wanted, and a rerun must give the same one. Captions are cached in a `RecordLog`, keyed
by the weights fingerprint, the prompt version, the decoding settings and the group's image ids
(`cache_keys.caption_key`), so a rerun asks the model only about new or changed groups. Output: the official
`seed_group.json` format (`anonymous_caption`, `image_urls`) and a jsonl with one row per group.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers.utils.logging import tqdm

from modeling_relsim.image_decoding import UnreadableImageError
from training.caption_text import normalize_caption
from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.validation import RejectionLog
from training.image_ids import url_image_hash
from training.pipeline.captioning.cache_keys import caption_key, chat_fingerprint, decoding_settings
from training.pipeline.captioning.image_inputs import ReadImage, UnreadableImage, image_name, read_image
from training.pipeline.captioning.prompts import GROUP_PROMPT, CaptionPrompt
from training.store import RecordLog, atomic_write
from training.vlm.chat import QwenVLChat
from training.vlm.decoding import Decoding


logger = logging.getLogger(__name__)

MINIMUM_READABLE_IMAGES = 2  # one image shows a thing; a shared logic needs at least two


@dataclass
class SeedGroup:
    """A set of images that share one logic.

    Args:
        group_id: stable id (the group's position in `seed_group.json`, or the caller's own).
        images: image inputs (paths, encoded bytes, PIL images, `datasets` cells; None for a missing download).
        names: how outputs name each image (its URL, or its path); defaults to the path or the position.
        reference_caption: the caption people wrote for the group, when there is one (quality checks).
    """

    group_id: str
    images: list[Any]
    names: list[str] = field(default_factory=list)
    reference_caption: str | None = None

    def __post_init__(self) -> None:
        self.group_id = str(self.group_id)
        if not self.names:
            self.names = [
                image_name(value, f"group {self.group_id} image {index}") for index, value in enumerate(self.images)
            ]
        if len(self.names) != len(self.images):
            raise ValueError(f"group {self.group_id}: {len(self.images)} images but {len(self.names)} names")


@dataclass(frozen=True)
class GroupCaption:
    """One group's caption and what it was computed from."""

    group_id: str
    caption: str
    raw_caption: str
    image_names: list[str]
    image_hashes: list[str]
    prompt_version: str
    model: str
    decoding: dict[str, Any]
    reused: bool


@dataclass
class GroupCaptionRun:
    """What a run produced: captions in input order, every unreadable image, the groups left uncaptioned."""

    captions: list[GroupCaption] = field(default_factory=list)
    unreadable: list[UnreadableImage] = field(default_factory=list)
    skipped_groups: list[dict[str, str]] = field(default_factory=list)
    generated: int = 0
    reused: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "captioned": len(self.captions),
            "generated": self.generated,
            "reused": self.reused,
            "unreadable_images": len(self.unreadable),
            "skipped_groups": len(self.skipped_groups),
        }


def seed_groups_from_dataset(dataset) -> list[SeedGroup]:
    """The built `seed_groups` configuration with its images attached (`python -m training.hub_data download`):
    columns `group_id`, `anonymous_caption`, `image_urls`, `images`. Images are decoded here, one by one, so a
    corrupt one is reported instead of failing the whole row; a failed download (None) is reported too."""
    import datasets

    if "images" not in dataset.column_names:
        raise ValueError(
            f"the seed-groups dataset has no 'images' column (columns: {dataset.column_names}); attach the images "
            "with `python -m training.hub_data download` first"
        )
    dataset = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    return [
        SeedGroup(row["group_id"], list(row["images"]), list(row["image_urls"]), row.get("anonymous_caption"))
        for row in dataset
    ]


def seed_groups_from_json(path: str | Path, image_dir: str | Path) -> list[SeedGroup]:
    """The official `seed_group.json` (read and validated by the Hub dataset builder) with its images in `image_dir`,
    one file per image named `<md5(url)>.<ext>` (how `python -m training.hub_data download` and the pipeline's
    hand-off name them). Rows the builder rejects are logged as warnings; a URL without a file is reported as
    unreadable when the group is captioned."""
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise NotADirectoryError(f"{image_dir} is not a folder of seed-group images (<md5(url)>.<ext>)")
    files = {file.stem: file for file in sorted(image_dir.iterdir()) if file.is_file()}
    log = RejectionLog()
    built = build_seed_groups(path, log)["seed_groups"]["train"]
    for finding in log.findings:
        logger.warning("%s", finding)
    return [
        SeedGroup(
            row["group_id"],
            [files.get(url_image_hash(url)) for url in row["image_urls"]],
            list(row["image_urls"]),
            row["anonymous_caption"],
        )
        for row in built
    ]


class GroupCaptioner:
    """Args:
    chat: the frozen VLM.
    cache_file: the `RecordLog` of captions (created on first use; reused across runs).
    prompt: the group prompt (versioned; see `prompts`).
    decoding: greedy with at most 128 new tokens unless told otherwise.
    fingerprint: the weights fingerprint to key the cache by; computed from `chat` when None (pass one for weights
        changed in memory).
    """

    def __init__(
        self,
        chat: QwenVLChat,
        cache_file: str | Path,
        prompt: CaptionPrompt = GROUP_PROMPT,
        decoding: Decoding | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.chat = chat
        self.prompt = prompt
        self.decoding = decoding or Decoding()
        self.fingerprint = fingerprint or chat_fingerprint(chat)
        self.log = RecordLog(cache_file, what="group caption", required=("key", "caption", "raw_caption"))
        self.cached = {record["key"]: record for _, record in self.log.records()}

    def _readable(self, group: SeedGroup, run: GroupCaptionRun) -> list[tuple[str, ReadImage]] | None:
        """The group's readable images with their names; None (and the group reported) when fewer than two."""
        readable = []
        for value, name in zip(group.images, group.names, strict=True):
            try:
                readable.append((name, read_image(value, image_name(value, name))))
            except UnreadableImageError as error:
                run.unreadable.append(UnreadableImage(error.source, error.reason, group.group_id))
                logger.warning("group %s: cannot read %s: %s", group.group_id, error.source, error.reason)
        if len(readable) >= MINIMUM_READABLE_IMAGES:
            return readable
        reason = f"{len(readable)} of {len(group.images)} images readable; a group needs {MINIMUM_READABLE_IMAGES}"
        run.skipped_groups.append({"group_id": group.group_id, "reason": reason})
        logger.warning("group %s not captioned: %s", group.group_id, reason)
        return None

    def __call__(
        self, groups: Sequence[SeedGroup], batch_size: int = 2, show_progress: bool = False
    ) -> GroupCaptionRun:
        """Captions every group with at least two readable images, asking the model only about groups not cached.

        Args:
            batch_size: groups per `generate` call (a group's prompt holds all its images, so keep this small).
        """
        run = GroupCaptionRun()
        results: dict[int, GroupCaption] = {}
        settings = decoding_settings(self.decoding)
        for start in tqdm(range(0, len(groups), batch_size), desc="group captions", disable=not show_progress):
            pending = []
            for position in range(start, min(start + batch_size, len(groups))):
                group = groups[position]
                readable = self._readable(group, run)
                if readable is None:
                    continue
                hashes = [image.image_hash for _, image in readable]
                key = caption_key(self.fingerprint, self.prompt.version, settings, hashes)
                names = [name for name, _ in readable]
                if key in self.cached:
                    record = self.cached[key]
                    results[position] = self._caption(group, record["raw_caption"], names, hashes, reused=True)
                    run.reused += 1
                else:
                    pending.append((position, key, names, hashes, [image.image for _, image in readable]))
            if not pending:
                continue
            conversations = [(images, self.prompt.render(len(images))) for *_, images in pending]
            answers = self.chat.generate(conversations, decoding=self.decoding, batch_size=len(conversations))
            for (position, key, names, hashes, _), answer in zip(pending, answers, strict=True):
                caption = self._caption(groups[position], answer, names, hashes, reused=False)
                record = {"key": key, **asdict(caption)}
                del record["reused"]
                self.log.append(record)
                self.cached[key] = record
                results[position] = caption
                run.generated += 1
        run.captions = [results[position] for position in sorted(results)]
        logger.info("group captions: %s", run.summary())
        return run

    def _caption(self, group: SeedGroup, raw: str, names: list[str], hashes: list[str], reused: bool) -> GroupCaption:
        return GroupCaption(
            group_id=group.group_id,
            caption=" ".join(normalize_caption(raw).split()),
            raw_caption=raw,
            image_names=names,
            image_hashes=hashes,
            prompt_version=self.prompt.version,
            model=self.fingerprint,
            decoding=decoding_settings(self.decoding),
            reused=reused,
        )


def write_seed_group_json(run: GroupCaptionRun, path: str | Path) -> Path:
    """The official `seed_group.json` layout: `[{"anonymous_caption", "image_urls"}]`, the caption unquoted (the
    Hub dataset builder reads it either way), `image_urls` the readable images' URLs or paths."""
    rows = [{"anonymous_caption": caption.caption, "image_urls": caption.image_names} for caption in run.captions]
    path = Path(path)
    atomic_write(path, (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    return path


def write_group_jsonl(run: GroupCaptionRun, path: str | Path) -> Path:
    """One row per captioned group with its image ids, prompt version, model fingerprint and decoding settings."""
    lines = "".join(json.dumps(asdict(caption), ensure_ascii=False) + "\n" for caption in run.captions)
    path = Path(path)
    atomic_write(path, lines.encode("utf-8"))
    return path
