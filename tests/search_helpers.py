"""A briefly trained tiny relsim shared by the search tests (relation text, "why" labels, Sentence Transformers, the
web app): trained once per test session by `training.trainer.train.main` on the tiny-cpu recipe, shortened.

Cost: TRAINING_STEPS steps of batch 32 at 112 pixels, about 25 s on 2 idle cores (longer in proportion on a busy
machine), plus ~3 s for the text encoder. Its untrained twin (same recipe, same initial weights) is the baseline the
trained model must beat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


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
