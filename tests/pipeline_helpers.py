"""Trivial pipeline stages for testing the run without models: they count their calls and can fail on demand."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import PIL.Image

from training.pipeline.run.sharded import run
from training.pipeline.run.summary import RunSummary
from training.pipeline.stages import ImageStage, Row, Stage


class ImageSizeStage(ImageStage):
    """Adds `width` and `height`; `fail_after` raises after that many processed rows (an interruption)."""

    name = "size"
    output_fields = ("width", "height")

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.processed_hashes: list[str] = []
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        if self.fail_after is not None and len(self.processed_hashes) >= self.fail_after:
            raise KeyboardInterrupt("interrupted on purpose")
        self.processed_hashes += [row["image_hash"] for row in rows]
        return [{**row, "width": image.width, "height": image.height} for row, image in zip(rows, images, strict=True)]


class WideFilterStage(Stage):
    """Keeps rows whose image is wider than tall (reads the size stage's fields)."""

    name = "wide"
    output_fields = ("kept",)

    def __init__(self) -> None:
        self.seen: list[str] = []

    def process(self, rows: list[Row]) -> list[Row]:
        self.seen += [row["image_hash"] for row in rows]
        return [{**row, "kept": row["width"] > row["height"]} for row in rows]

    def keeps(self, row: Row) -> bool:
        return row["kept"]


def write_images(folder, sizes: list[tuple[int, int]]) -> list:
    """PNG files of the given (width, height), distinct pixels each; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (width, height) in enumerate(sizes):
        pixels = np.random.default_rng(index).integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = folder / f"image_{index:02d}.png"
        PIL.Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def peak_traced_bytes(function: Callable[[], object]) -> int:
    """The peak Python heap (tracemalloc) while `function` runs: what the bounded-memory tests compare."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_locally(rows, stages: list[Stage], output, **options) -> RunSummary:
    """The run with the local executor, quiet, writing every stage's `<stage>.jsonl`."""
    options.setdefault("show_progress", False)
    return run(rows, stages, output, stage_logs=[stage.name for stage in stages], **options)
