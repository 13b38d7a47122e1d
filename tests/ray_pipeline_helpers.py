"""Stages and fixtures for the Ray executor's tests: tiny models saved to folders (Ray actors load them in their own
processes), a worker that crashes once, and a driver script the tests run in a subprocess and kill."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

from training.pipeline.embed_stage import EmbedStage
from training.pipeline.stages import Row


class CrashOnceEmbedStage(EmbedStage):
    """Kills its own worker process (os._exit) on its second batch if `marker` does not exist yet, creating it: the
    first attempt dies mid-run, Ray restarts the actor and retries the task."""

    def __init__(self, *args, marker: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.calls = marker, 0

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        self.calls += 1
        if self.calls == 2 and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().process_images(rows, images)


class SlowEmbedStage(EmbedStage):
    """Sleeps before each batch, so a test can kill the driver between two shards."""

    def __init__(self, *args, delay: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.delay = delay

    def process_images(self, rows: list[Row], images: list[PIL.Image.Image]) -> list[Row]:
        time.sleep(self.delay)
        return super().process_images(rows, images)


def write_image_folder(folder: Path, count: int, corrupt: int, size: int = 24) -> None:
    """`count` distinct small PNGs plus `corrupt` files that are not images."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        pixels = np.random.default_rng(index).integers(0, 256, (size, size + index % 5, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"image_{index:04d}.png")
    for index in range(corrupt):
        (folder / f"corrupt_{index}.png").write_bytes(b"\x89PNG but not really " + bytes([index]))


def driver_main(argv: list[str]) -> None:
    """`python tests/ray_pipeline_helpers.py IMAGES OUTPUT RELSIM_DIR RAY_ADDRESS`: the embed stage alone, slowly,
    on an existing Ray cluster, in shards of 20 (the driver-kill test)."""
    from training.pipeline.inputs import rows_from_folder
    from training.pipeline.run.recipe import ActorSettings, RaySettings
    from training.pipeline.run.sharded import run

    images, output, relsim_dir, address = argv
    settings = RaySettings(address=address, shard_size=20, actors={"embed": ActorSettings(num_cpus=0.5, batch_size=10)})
    stage = SlowEmbedStage(relsim_dir, device="cpu", delay=0.4)
    run(rows_from_folder(images), [stage], output, executor="ray", settings=settings, show_progress=False)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    driver_main(sys.argv[1:])
