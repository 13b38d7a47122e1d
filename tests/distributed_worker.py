"""One training step of RelSimTrainer on a fixed global batch, run alone or under torchrun; writes the logged loss
and the gradients the optimizer would see (after DDP's reduction) to `<output>/rank<r>-<config>.safetensors`, with
the number of gradient all-reduces DDP ran.

The global batch holds 8 examples in order; example 6 is unreadable, so under two processes rank 0 trains on 4
images and rank 1 on 3, exercising uneven gathers.

The `*-options` configs train with ObjectiveTrainer, turn on every objective option and train two steps (plain SGD,
so tiny gradient differences stay tiny) on 16 examples: the second global batch meets a queue filled by the first and
an EMA teacher that has moved. Their files also hold the prototypes' gradient (`objective.prototypes`) and the
objectives' final state (`state.*`: queue, EMA weights, prototypes), which must match across runs too.
`gradcache-options-clipped` is the same under a tiny `max_grad_norm`: its gradients are recorded after clipping,
prototypes included.
"""

import io
import json
import os
import sys
from pathlib import Path

import datasets
from helpers import pattern_dataset
from safetensors.torch import save_file
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import SequentialSampler
from transformers import TrainerCallback

from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.trainer.arguments import RelSimTrainingArguments
from training.trainer.caption_encoder import CaptionEncoder
from training.trainer.collator import RelSimCollator
from training.trainer.distributed import world
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.trainer import RelSimTrainer


GLOBAL_BATCH = 8
EVERY_OPTION = {
    "intra_image_weight": 0.5,
    "distill_alpha": 0.4,
    "distill_ramp_steps": 1,
    "ema_momentum": 0.5,
    "caption_queue_size": 32,
    "num_prototypes": 3,
}
CONFIGS = {
    "plain-symmetric": {"symmetric_loss": True},
    "gradcache-symmetric": {"symmetric_loss": True, "micro": 2},
    "plain-options": {"symmetric_loss": True, "options": EVERY_OPTION},
    "gradcache-options": {"symmetric_loss": True, "micro": 2, "options": EVERY_OPTION},
    "gradcache-options-clipped": {"symmetric_loss": True, "micro": 2, "options": EVERY_OPTION, "max_grad_norm": 1e-3},
}


class InOrder:
    """Reads the batch in order, and counts DDP's gradient all-reduces (one per bucket of each synced backward)."""

    allreduce_calls = 0

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset or self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if isinstance(model, DistributedDataParallel) and not getattr(model, "counted", False):
            model.register_comm_hook(self, count_allreduce)
            model.counted = True
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class InOrderTrainer(InOrder, RelSimTrainer):
    pass


class InOrderObjectiveTrainer(InOrder, ObjectiveTrainer):
    pass


def count_allreduce(trainer, bucket):
    trainer.allreduce_calls += 1
    return default_hooks.allreduce_hook(None, bucket)


class RecordGradients(TrainerCallback):
    """The gradients of the last step as the optimizer gets them (after clipping), the prototypes' included."""

    def __init__(self):
        self.gradients = {}
        self.objectives = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.gradients = {
            name: parameter.grad.detach().clone()
            for name, parameter in model.named_parameters()
            if parameter.grad is not None
        }
        if self.objectives is not None and self.objectives.prototypes is not None:
            self.gradients["objective.prototypes"] = self.objectives.prototypes.prototypes.grad.detach().clone()


def global_batch() -> datasets.Dataset:
    rows = {"image": [], "caption": []}
    for index, example in enumerate(pattern_dataset(GLOBAL_BATCH, seed=5)):
        buffer = io.BytesIO()
        example["image"].save(buffer, "PNG")
        content = buffer.getvalue()[:40] if index == 6 else buffer.getvalue()
        rows["image"].append({"bytes": content, "path": f"example-{index}.png"})
        # two captions only, so every caption spans both ranks
        rows["caption"].append(example["caption"] if index % 2 else '"one caption shared by half the batch"')
    features = datasets.Features({"image": datasets.Image(decode=False), "caption": datasets.Value("string")})
    return datasets.Dataset.from_dict(rows, features=features)


def two_global_batches() -> datasets.Dataset:
    """`global_batch()` and a second one that shares only the half-batch caption with it (masked in the queue)."""
    first = global_batch()
    rows = {"image": list(first["image"]), "caption": list(first["caption"])}
    second_captions = ['"one caption shared by half the batch"', '"a {Object} left of a {Object}"', '"two {Object}s"']
    for index, example in enumerate(pattern_dataset(GLOBAL_BATCH, seed=6)):
        buffer = io.BytesIO()
        example["image"].save(buffer, "PNG")
        rows["image"].append({"bytes": buffer.getvalue(), "path": f"second-{index}.png"})
        rows["caption"].append(second_captions[index % 3])
    return datasets.Dataset.from_dict(rows, features=first.features)


def main(output_dir: str) -> None:
    output = Path(output_dir)
    # the process group starts inside the Trainer; torchrun announces the layout through the environment
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    encoder = CaptionEncoder("sentence-transformers/all-MiniLM-L6-v2")
    for name, config in CONFIGS.items():
        recorder = RecordGradients()
        options = config.get("options", {})
        arguments_class = ObjectiveTrainingArguments if options else RelSimTrainingArguments
        arguments = arguments_class(
            output_dir=str(output / name),
            per_device_train_batch_size=GLOBAL_BATCH // world_size,
            max_steps=2 if options else 1,
            optim="sgd" if options else "adamw_torch",
            learning_rate=1e-3,
            max_grad_norm=config.get("max_grad_norm", 0.0),
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
            symmetric_loss=config.get("symmetric_loss", False),
            contrastive_micro_batch_size=config.get("micro"),
            max_unreadable_fraction=0.5,
            **options,
        )
        trainer = (InOrderObjectiveTrainer if options else InOrderTrainer)(
            model=build_tiny_model(processor, seed=0),
            args=arguments,
            train_dataset=two_global_batches() if options else global_batch(),
            data_collator=RelSimCollator(processor),
            processing_class=processor,
            caption_encoder=encoder,
            callbacks=[recorder],
        )
        recorder.objectives = getattr(trainer, "objectives", None)
        trainer.train()
        assert world() == (rank, world_size)
        loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry][-1]
        state = {f"state.{key}": value for key, value in (recorder.objectives.state() if options else {}).items()}
        save_file(
            {key: value.detach().contiguous() for key, value in {**recorder.gradients, **state}.items()},
            output / f"rank{rank}-of{world_size}-{name}.safetensors",
            metadata={
                "loss": json.dumps(loss),
                "trained_images": json.dumps(GLOBAL_BATCH // world_size),
                "allreduce_calls": json.dumps(trainer.allreduce_calls),
            },
        )


if __name__ == "__main__":
    main(sys.argv[1])
