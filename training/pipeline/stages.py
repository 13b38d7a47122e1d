"""A pipeline stage: a plain callable class that loads its model once and then adds fields to batches of rows.

A row is a dict keyed by `image_hash` (32 lowercase hex, `training.image_ids`) with `image` (a local file), optional
`url`, and the fields each stage adds (`filter_score`, `kept`, `caption`, `check`, ...). A row whose image cannot be
read gets `error` ("file: reason") and `error_kind` (the reason's category, what the run summary counts) and is
passed on unchanged otherwise: it is reported, never replaced by another image and never silently dropped.

The same object runs under both executors of the sharded run (`training.pipeline.run.sharded`): `setup()` once per
process (the local executor) or per Ray actor, then `process(rows)` per batch. Constructors therefore only store
settings; everything heavy happens in `setup()`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import PIL.Image

from modeling_relsim.image_decoding import UnreadableImageError, decode_image


logger = logging.getLogger(__name__)

Row = dict[str, Any]


def passes_on(row: Mapping[str, Any]) -> bool:
    """Whether a stage's output row goes on to the next stage: readable and not dropped by a filter."""
    return "error" not in row and row.get("kept", True) is not False


def failed_row(row: Row, source: str, reason: str) -> Row:
    """`row` marked as unreadable: `error` = "source: reason", `error_kind` = the reason up to its first colon
    (e.g. "file not found", "UnidentifiedImageError"), so the summary counts kinds rather than single files."""
    return {**row, "error": f"{source}: {reason}", "error_kind": reason.split(":", 1)[0].strip() or "error"}


def load_row_image(row: Mapping[str, Any]) -> PIL.Image.Image:
    """The row's image as upright RGB pixels, decoded the one way every relsim path decodes images.

    Raises:
        UnreadableImageError: naming the file (or the URL when the row has no local file: URLs are not fetched here;
            download them first, e.g. `python -m training.hub_data download` or the Ray executor's download stage).
    """
    image = row.get("image")
    if not image:
        source = row.get("url") or row.get("image_hash", "row")
        raise UnreadableImageError(str(source), "no local image file (download the URL first)")
    return decode_image(str(image))


class Stage:
    """One step of the pipeline. Subclasses set `name` (the output file is `<output>/<name>.jsonl`) and
    `output_fields` (the fields they add) and implement `process`; `setup` loads what `process` needs.

    Attributes:
        batch_size: rows per call of `process` (None: the run's default).
    """

    name: str = "stage"
    output_fields: tuple[str, ...] = ()
    batch_size: int | None = None
    _is_set_up: bool = False

    def setup(self) -> None:
        """Loads the stage's model or resources; called once per process (per Ray actor) before the first batch."""

    def process(self, rows: list[Row]) -> list[Row]:
        """The same rows, in the same order, with this stage's fields added (or `error` for an unreadable image)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(rows)")

    def keeps(self, row: Row) -> bool:
        """Whether this stage passes a readable output row on to the next stage (a filter drops some)."""
        return True

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what this stage writes (model, adapter, threshold, decoding...; not the device or
        batch size): the sharded run records them and refuses to resume a folder written with others."""
        return {}

    def finish(self, rows: Iterable[Row], output_dir: str) -> None:
        """Called once after every input row is done, with this stage's output rows in input order (e.g. to write a
        file that needs all of them), to be read once: the sharded run streams them from its shards. Does nothing by
        default."""

    def ensure_setup(self) -> None:
        if not self._is_set_up:
            self.setup()
            self._is_set_up = True


class ImageStage(Stage):
    """A stage that reads each row's image: unreadable images become error rows here, once, so subclasses only
    implement `process_images` over readable rows."""

    def process(self, rows: list[Row]) -> list[Row]:
        readable: list[int] = []
        images: list[PIL.Image.Image] = []
        output: list[Row] = list(rows)
        for position, row in enumerate(rows):
            try:
                images.append(load_row_image(row))
            except UnreadableImageError as error:
                logger.warning("%s: %s", self.name, error)
                output[position] = failed_row(row, error.source, error.reason)
                continue
            readable.append(position)
        if readable:
            results = self.process_images([rows[position] for position in readable], images)
            if len(results) != len(readable):
                raise RuntimeError(f"stage {self.name} returned {len(results)} rows for {len(readable)}")
            for position, result in zip(readable, results, strict=True):
                output[position] = result
        return output

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        """The readable rows with this stage's fields added; `images[i]` is the decoded image of `rows[i]`."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_images(rows, images)")
