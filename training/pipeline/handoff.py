"""The hand-off to relsim training: the official captions jsonl (`image_hash`, `caption`, `url_link`) beside a folder
of `<image_hash>.<ext>` images, which both readers of that format take as they are:

    python -m training.trainer train --captions-jsonl OUT/handoff/captions.jsonl --image-dir OUT/handoff/images ...
    python -m training.hub_data build anonymous-captions --train OUT/handoff/captions.jsonl --output built

A row is handed off when it has a caption and, if the check stage ran, passed it (`check.ok`; configurable). Images
are copied byte for byte when their extension is one the trainer reads, else re-encoded as PNG; file names come
only from validated image hashes and a fixed list of extensions, and every written path is checked to lie inside
the hand-off folder, so hostile ids or file names cannot write elsewhere.

`url_link` is the row's URL, and the hub_data builder checks image_hash = md5(url_link) for those rows. A local image
without a URL keeps md5(file bytes) as its id and an empty `url_link`: the trainer takes it as it is, and the builder
accepts it as a local image and attaches its file from the hand-off's images (`--image-dir OUT/handoff/images`).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

import PIL.Image

from training.image_ids import require_image_hash
from training.pipeline.stages import ImageStage, Row
from training.store import atomic_write


logger = logging.getLogger(__name__)

CAPTIONS_FILE = "captions.jsonl"
IMAGES_FOLDER = "images"
# the extensions the trainer's reader (`training.trainer.data.read_official_captions`) takes; anything else is
# re-encoded as PNG
COPIED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def handoff_image_path(images_dir: Path, image_hash: str, source: str) -> tuple[Path, bool]:
    """`(<images_dir>/<image_hash>.<ext>, copy)`: the source's extension when the trainer reads it (copy the bytes),
    else `.png` (re-encode). Refuses an invalid hash and any path that would leave `images_dir`."""
    require_image_hash(image_hash, f"hand-off of {source!r}: image_hash")
    suffix = Path(source).suffix.lower()
    copy = suffix in COPIED_EXTENSIONS
    target = images_dir / f"{image_hash}{suffix if copy else '.png'}"
    # the parent, not the file: a link planted at the file's place is replaced (atomic_write), never followed
    if target.parent.resolve() != images_dir.resolve():
        raise ValueError(f"hand-off image {target} would be written outside {images_dir}")
    return target, copy


class HandoffStage(ImageStage):
    """Writes the hand-off folder: images as rows arrive (resumable), the captions jsonl once all rows are done.

    Args:
        folder: the hand-off folder (`captions.jsonl` and `images/` are written inside it, nothing outside).
        require_check_ok: hand off only captions that passed the check stage (rows the check never saw pass).
    """

    name = "handoff"
    output_fields = ("handed_off", "handoff_image", "handoff_reason")

    def __init__(self, folder: str | Path, require_check_ok: bool = True) -> None:
        self.folder = Path(folder)
        self.require_check_ok = require_check_ok

    def refusal(self, row: Row) -> str | None:
        """Why `row` is not handed off, or None."""
        if not isinstance(row.get("caption"), str) or not row["caption"].strip():
            return "no caption"
        check = row.get("check")
        if self.require_check_ok and isinstance(check, dict) and not check.get("ok", True):
            problems = "; ".join(map(str, check.get("problems", [])))
            return f"failed the check: {problems}" if problems else "failed the check"
        return None

    def process(self, rows: list[Row]) -> list[Row]:
        refused = {row["image_hash"]: reason for row in rows if (reason := self.refusal(row)) is not None}
        todo = [row for row in rows if row["image_hash"] not in refused]
        written = {row["image_hash"]: row for row in super().process(todo)} if todo else {}
        return [
            {**row, "handed_off": False, "handoff_reason": refused[row["image_hash"]]}
            if row["image_hash"] in refused
            else written[row["image_hash"]]
            for row in rows
        ]

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        images_dir = self.folder / IMAGES_FOLDER
        images_dir.mkdir(parents=True, exist_ok=True)
        if not images_dir.resolve().is_relative_to(self.folder.resolve()):
            raise ValueError(f"{images_dir} links outside the hand-off folder {self.folder}; remove the link")
        output = []
        for row, image in zip(rows, images, strict=True):
            target, copy = handoff_image_path(images_dir, row["image_hash"], str(row["image"]))
            if copy:
                atomic_write(target, lambda temporary, source=row["image"]: shutil.copyfile(source, temporary))
            else:
                atomic_write(target, lambda temporary, image=image: image.save(temporary, format="PNG"))
            output.append({**row, "handed_off": True, "handoff_image": str(target)})
        return output

    def keeps(self, row: Row) -> bool:
        return bool(row.get("handed_off"))

    def output_settings(self) -> dict[str, bool]:
        return {"require_check_ok": self.require_check_ok}

    def finish(self, rows: Iterable[Row], output_dir: str) -> None:
        path = write_captions_jsonl((row for row in rows if row.get("handed_off")), self.folder / CAPTIONS_FILE)
        logger.info(
            "hand-off: %s; train relsim with --captions-jsonl %s --image-dir %s",
            path,
            path,
            self.folder / IMAGES_FOLDER,
        )


def write_captions_jsonl(rows: Iterable[Row], path: str | Path) -> Path:
    """The official captions format, one `{"image_hash", "caption", "url_link"}` per row, written atomically;
    `rows` is read once, as it comes (a sharded run streams it)."""

    def write(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8") as out:
            for row in rows:
                where = f"hand-off row {row.get('image')!r}: image_hash"
                record = {"image_hash": require_image_hash(row.get("image_hash"), where), "caption": row["caption"],
                          "url_link": row.get("url") or ""}  # fmt: skip
                out.write(json.dumps(record) + "\n")

    return atomic_write(Path(path), write)
