"""What the search tests share: a model that counts the images it embeds, test photos, and a briefly trained tiny
relsim.

The trained tiny relsim is shared by the search tests (relation text, "why" labels, Sentence Transformers, the
web app): trained once per test session by `training.trainer.train.main` on the tiny-cpu recipe, shortened.

Cost: TRAINING_STEPS steps of batch 32 at the recipe's 112 pixels; at the demo's idle rate (0.15 s a step on 2 cores)
about 25 s of training plus ~10 s of set-up (images, text encoder, model build), in proportion longer on a busy
machine (28 min with a load average of ~17 on 2 cores). What it learns (held-out pool of 10 per family): relation-text
mAP 0.417 (untrained 0.166), why accuracy 0.438 (0.125), image mAP 0.390 (0.229); its in-batch caption accuracy
rose to 0.33 by step 160. Its untrained twin (same recipe, same initial weights) is the baseline it must beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from conftest import random_image

from training.search.model import SearchModel


RECIPE = Path(__file__).resolve().parents[1] / "training" / "configs" / "tiny-cpu.yaml"
TRAINING_STEPS = 160
IMAGE_SIZE = 112  # the recipe's
TRAINING_OVERRIDES = [
    "--max-steps", str(TRAINING_STEPS),
    "--lr-scheduler-type", "constant_with_warmup",  # the recipe's 3e-4, held: a short run has no time to decay
    "--warmup-steps", "20",
    "--synthetic-num-per-family", "40",
    "--synthetic-eval-num-per-family", "2",
    "--logging-steps", "40",
]  # fmt: skip


class CountingModel(SearchModel):
    """Counts the images sent to the model; `fail_after` calls, raises as an interrupted run would."""

    def __init__(self, *args, fail_after=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.embedded = 0
        self.calls = 0
        self.fail_after = fail_after

    def embed_images(self, images, show_progress=False):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("interrupted")
        self.calls += 1
        self.embedded += len(images)
        return super().embed_images(images, show_progress)


def write_images(folder, seeds, size=(40, 56), suffix=".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        random_image(*size, seed).save(folder / f"img{seed:02d}{suffix}")


@dataclass(frozen=True)
class TrainedTinyRelsim:
    """Where the trained model is (`path`, a standalone relsim folder: weights, config, processor) and its run
    folder (`run_dir`, from which `untrained()` rebuilds the model before training)."""

    path: Path
    run_dir: Path
    seconds: float

    def load(self):
        """`(model, processor)` of the trained model."""
        from modeling_relsim import RelSimModel, RelSimProcessor

        return RelSimModel.from_pretrained(self.path), RelSimProcessor.from_pretrained(self.path)

    def untrained(self):
        """`(model, processor)`: the same architecture and initial weights, before training."""
        from training.trainer.model_factory import build_base, load_model_arguments

        processor, model = build_base(load_model_arguments(self.run_dir))
        return model, processor


def train_tiny_relsim(folder: Path) -> TrainedTinyRelsim:
    from training.trainer.train import main as train

    started = time.perf_counter()
    final = train(["--config", str(RECIPE), "--output-dir", str(folder / "run"), *TRAINING_OVERRIDES])
    return TrainedTinyRelsim(Path(final), folder / "run", time.perf_counter() - started)
