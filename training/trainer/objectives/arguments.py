"""`ObjectiveTrainingArguments`: the paper's training arguments plus the four objective options' fields.

Every option is off at its default; a recipe that sets any of these fields trains with `ObjectiveTrainer` (the train
CLI and `ablate` pick it), a recipe without them with the paper's `RelSimTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from training.trainer.arguments import RelSimTrainingArguments


@dataclass
class ObjectiveTrainingArguments(RelSimTrainingArguments):
    """[`RelSimTrainingArguments`] plus the optional objectives of `training.trainer.objectives`."""

    intra_image_weight: float = field(
        default=0.0,
        metadata={
            "help": "weight of the image-image contrastive term (images sharing a caption are positives); 0: off"
        },
    )
    distill_alpha: float = field(
        default=0.0,
        metadata={"help": "momentum distillation: weight of the EMA teacher's soft targets (TCL: 0.4); 0: off"},
    )
    distill_ramp_steps: int | None = field(
        default=None, metadata={"help": "steps over which distill_alpha ramps up from 0 (default: one epoch)"}
    )
    ema_momentum: float = field(default=0.995, metadata={"help": "momentum of the distillation teacher's EMA"})
    caption_queue_size: int = field(
        default=0, metadata={"help": "FIFO queue of past caption embeddings as extra negatives (e.g. 65536); 0: off"}
    )
    num_prototypes: int = field(
        default=0, metadata={"help": "K learnable prototypes aligned by swapped Sinkhorn prediction; 0: off"}
    )
    prototype_weight: float = field(default=1.0, metadata={"help": "weight of the prototype alignment term"})
    prototype_temperature: float = field(default=0.1, metadata={"help": "softmax temperature of image->prototype"})
    sinkhorn_iterations: int = field(default=3, metadata={"help": "Sinkhorn rounds of the prototype targets"})
    sinkhorn_epsilon: float = field(default=0.05, metadata={"help": "entropic regularisation of the Sinkhorn targets"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {self.distill_alpha}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {self.ema_momentum}")
        if self.distill_ramp_steps is not None and self.distill_ramp_steps < 1:
            raise ValueError(f"distill_ramp_steps must be a positive number of steps, got {self.distill_ramp_steps}")
        for name in ("intra_image_weight", "prototype_weight", "caption_queue_size", "num_prototypes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.num_prototypes == 1:
            raise ValueError("num_prototypes must be 0 (off) or at least 2")
        if self.sinkhorn_iterations < 1 or self.prototype_temperature <= 0 or self.sinkhorn_epsilon <= 0:
            raise ValueError(
                "sinkhorn_iterations, prototype_temperature and sinkhorn_epsilon must be positive, got "
                f"{self.sinkhorn_iterations}, {self.prototype_temperature} and {self.sinkhorn_epsilon}"
            )

    def extra_objectives(self) -> list[str]:
        """The option fields that turn a term on (their weights and sizes; the tuning fields change nothing alone)."""
        switches = ("intra_image_weight", "distill_alpha", "caption_queue_size", "num_prototypes")
        return [name for name in switches if getattr(self, name)]


# every field this class adds: a recipe naming any of them trains with ObjectiveTrainer
OBJECTIVE_FIELDS = tuple(
    name
    for name in ObjectiveTrainingArguments.__dataclass_fields__
    if name not in RelSimTrainingArguments.__dataclass_fields__
)
