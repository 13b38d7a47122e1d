"""The optional objectives of one training run: their state (queue, EMA weights, prototypes), the combined loss, and
that state's place in checkpoints.

The training loss is

    loss = InfoNCE(queued negatives, distillation targets)
           + intra_image_weight * intra_image_contrastive
           + prototype_weight * prototype_alignment

(each part as documented in its module; a part whose field is 0 is absent). Evaluation keeps the plain InfoNCE, so
`eval_loss` compares runs with different options; the prototypes' perplexity and NMI are reported in both.

Every rank holds the same state: the queue is filled with the gathered global batch, the EMA follows weights DDP
keeps equal, the prototypes start from rank 0's k-means and their gradient is averaged over ranks (they live outside
the DDP-wrapped model). The state is written to `objective_state.safetensors` in each checkpoint folder before the
Trainer's own files, so a checkpoint the Trainer finished always holds it; resuming checks it against the run's
options first (`state_file.objective_state_problem`) and reads it with safetensors only.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from training.store import atomic_write
from training.trainer.distributed import gather_counts, gather_rows, world
from training.trainer.losses import ContrastiveLoss
from training.trainer.objectives.caption_queue import CaptionQueue
from training.trainer.objectives.contrastive import queued_distilled_info_nce
from training.trainer.objectives.intra_image import intra_image_contrastive
from training.trainer.objectives.momentum import DistillationTargets, MomentumTeacher, ramped_alpha
from training.trainer.objectives.prototypes import PrototypeAlignment, assignment_nmi, usage_perplexity
from training.trainer.objectives.state_file import OBJECTIVE_STATE_FILE, objective_state_problem


logger = logging.getLogger(__name__)

__all__ = ["OBJECTIVE_STATE_FILE", "ObjectiveLoss", "TrainingObjectives", "captions_of"]


@dataclass
class ObjectiveLoss(ContrastiveLoss):
    """The training loss with the options' terms; `prototype_assignments` `(n,)` feed the prototype metrics."""

    prototype_assignments: torch.Tensor | None = None


def _average_over_ranks(gradient: torch.Tensor) -> torch.Tensor:
    """DDP's gradient averaging, for a parameter DDP does not hold."""
    _, world_size = world()
    if world_size == 1:
        return gradient
    gradient = gradient.clone()
    dist.all_reduce(gradient)
    return gradient / world_size


class TrainingObjectives:
    """The options of [`ObjectiveTrainingArguments`] that add to or change the contrastive loss.

    Args:
        arguments: the run's `ObjectiveTrainingArguments` (fields `intra_image_weight`, `distill_alpha`,
            `distill_ramp_steps`, `ema_momentum`, `caption_queue_size`, `num_prototypes`, `prototype_weight`,
            `prototype_temperature`, `sinkhorn_iterations`, `sinkhorn_epsilon`).
        model: the trained model, unwrapped (its trainable parameters are the EMA's).
        dimension: the embedding size.
        device: where the queue and prototypes live.
    """

    def __init__(self, arguments: Any, model: torch.nn.Module, dimension: int, device: torch.device) -> None:
        self.arguments = arguments
        self.intra_image_weight = arguments.intra_image_weight
        self.prototype_weight = arguments.prototype_weight
        self.distill_alpha = arguments.distill_alpha
        self.distill_ramp_steps = arguments.distill_ramp_steps
        self.queue = (
            CaptionQueue(arguments.caption_queue_size, dimension, device) if arguments.caption_queue_size else None
        )
        self.teacher = MomentumTeacher(model, arguments.ema_momentum) if arguments.distill_alpha > 0 else None
        self.prototypes = None
        if arguments.num_prototypes:
            self.prototypes = PrototypeAlignment(
                arguments.num_prototypes,
                dimension,
                arguments.prototype_temperature,
                arguments.sinkhorn_iterations,
                arguments.sinkhorn_epsilon,
            ).to(device)
            self.prototypes.prototypes.register_hook(_average_over_ranks)
        self._assignments: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = defaultdict(list)

    @property
    def active(self) -> bool:
        """Whether any option is on."""
        return bool(self.intra_image_weight or self.teacher or self.queue or self.prototypes)

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors of the objectives themselves (the prototypes): the trainer adds them to the optimizer
        and to `max_grad_norm` clipping beside the model's (the EMA weights and the queue are not trained)."""
        return [self.prototypes.prototypes] if self.prototypes is not None else []

    # -- prototypes' initialisation ---------------------------------------------------------------------------------

    def initialize_prototypes(self, caption_embeds: torch.Tensor, seed: int) -> None:
        """k-means of `caption_embeds` on rank 0, broadcast to every rank (identical prototypes everywhere)."""
        if world()[0] == 0:
            self.prototypes.initialize(caption_embeds, seed)
        if world()[1] > 1:
            dist.broadcast(self.prototypes.prototypes.data, src=0)
            self.prototypes.initialized.fill_(True)
        logger.info("initialised %d prototypes by k-means of caption embeddings", self.prototypes.prototypes.shape[0])

    def ensure_prototypes(self, caption_embeds: torch.Tensor, seed: int) -> None:
        """Initialises the prototypes from the first training batch (all ranks' captions) when nothing did before."""
        if self.prototypes is None or bool(self.prototypes.initialized):
            return
        counts = gather_counts(caption_embeds.shape[0], caption_embeds.device)
        self.initialize_prototypes(gather_rows(caption_embeds, counts, with_grad=False), seed)

    # -- loss ------------------------------------------------------------------------------------------------------

    def distillation_alpha(self, step: int, steps_per_epoch: int | None) -> float:
        """alpha at optimizer step `step`, ramped over `distill_ramp_steps` (or one epoch)."""
        ramp_steps = self.distill_ramp_steps or steps_per_epoch
        if ramp_steps is None:
            raise ValueError(
                "distill_alpha ramps up over one epoch, but the training data has no length; set distill_ramp_steps"
            )
        return ramped_alpha(self.distill_alpha, step, max(1, ramp_steps))

    def teacher_targets(
        self,
        model: torch.nn.Module,
        batches: Iterable[Mapping[str, Any]],
        alpha: float,
        fixed_logit_scale: float | None,
    ) -> DistillationTargets | None:
        """The teacher's embeddings of this rank's batch (None when distillation is off or alpha is still 0)."""
        if self.teacher is None or alpha == 0:
            return None
        image_embeds, logit_scale = self.teacher.embed(model, batches)
        if fixed_logit_scale is not None:
            logit_scale = torch.tensor(fixed_logit_scale, device=image_embeds.device)
        return DistillationTargets(image_embeds, logit_scale, alpha)

    def loss(
        self,
        image_embeds: torch.Tensor,
        caption_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
        logit_scale: torch.Tensor,
        symmetric: bool,
        distillation: DistillationTargets | None,
    ) -> ObjectiveLoss:
        """The training loss of the module docstring; `terms` holds each part's detached value for the logs."""
        queued = self.queue.contents() if self.queue is not None and self.queue.filled else None
        contrastive = queued_distilled_info_nce(
            image_embeds,
            caption_embeds,
            caption_ids,
            logit_scale,
            symmetric=symmetric,
            queued_captions=queued,
            distillation=distillation,
        )
        result = ObjectiveLoss(**{spec.name: getattr(contrastive, spec.name) for spec in fields(contrastive)})
        total = result.loss
        terms = {"loss_contrastive": result.loss.detach()}
        if self.intra_image_weight:
            intra = intra_image_contrastive(image_embeds, caption_ids, logit_scale)
            total = total + self.intra_image_weight * intra
            terms["loss_intra_image"] = intra.detach()
        if self.prototypes is not None:
            aligned = self.prototypes(image_embeds, caption_embeds)
            total = total + self.prototype_weight * aligned.loss
            terms["loss_prototype"] = aligned.loss.detach()
            result.prototype_assignments = aligned.assignments
        if self.teacher is not None:
            terms["distill_alpha"] = torch.tensor(distillation.alpha if distillation is not None else 0.0)
        result.loss = total
        result.terms = terms
        return result

    def after_training_loss(self, caption_embeds: torch.Tensor, caption_ids: torch.Tensor) -> None:
        """Queues the batch's captions (after its loss: a batch is never its own negative)."""
        if self.queue is not None:
            self.queue.enqueue(caption_embeds, caption_ids)

    def after_optimizer_step(self, model: torch.nn.Module) -> None:
        """Moves the EMA teacher; clears the prototypes' gradient (the Trainer's `model.zero_grad()` does not
        reach parameters outside the model)."""
        if self.teacher is not None:
            self.teacher.update(model)
        self.zero_grad()

    def zero_grad(self) -> None:
        for parameter in self.parameters():
            parameter.grad = None

    # -- prototype metrics -----------------------------------------------------------------------------------------

    def record_assignments(self, split: str, caption_ids: torch.Tensor, assignments: torch.Tensor) -> None:
        self._assignments[split].append((caption_ids.detach().cpu(), assignments.detach().cpu()))

    def prototype_metrics(self, split: str) -> dict[str, float]:
        """Perplexity of prototype usage and NMI with caption identity over the images seen since the last call
        (this rank's; the trainer averages over ranks)."""
        records = self._assignments.pop(split, [])
        if not records:
            return {}
        caption_ids = torch.cat([ids for ids, _ in records])
        assignments = torch.cat([assigned for _, assigned in records])
        return {
            "prototype_perplexity": usage_perplexity(assignments),
            "prototype_nmi": assignment_nmi(caption_ids, assignments),
        }

    # -- checkpoints -----------------------------------------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        """Every tensor that affects later training, under flat names."""
        state: dict[str, torch.Tensor] = {}
        if self.prototypes is not None:
            state.update({f"prototypes.{name}": value for name, value in self.prototypes.state_dict().items()})
        if self.queue is not None:
            state.update({f"queue.{name}": value for name, value in self.queue.state().items()})
        if self.teacher is not None:
            state.update({f"ema.{name}": value for name, value in self.teacher.state().items()})
        return state

    def load_state(self, state: Mapping[str, torch.Tensor], source: str = "the checkpoint") -> None:
        """Copies `state` (names and shapes exactly as `state()`'s) into the queue, EMA weights and prototypes.

        Raises:
            ValueError: a tensor is missing, unexpected or of another shape, named with `source`.
        """
        expected = self.state()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"{source} does not match this run's objective options: missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}; resume with the options (and model, LoRA settings) it was trained with"
            )
        for name, value in expected.items():
            if tuple(state[name].shape) != tuple(value.shape):
                raise ValueError(
                    f"{source}: {name} has shape {tuple(state[name].shape)}, but this run's is {tuple(value.shape)}; "
                    "resume with the options it was trained with"
                )

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}

        if self.prototypes is not None:
            self.prototypes.load_state_dict(part("prototypes."))
        if self.queue is not None:
            self.queue.load_state(part("queue."))
        if self.teacher is not None:
            self.teacher.load_state(part("ema."))

    def save(self, folder: str | Path) -> Path | None:
        """Writes the state to `folder/objective_state.safetensors` atomically (nothing when every option is off)."""
        state = self.state()
        if not state:
            return None
        tensors = {name: value.detach().contiguous().cpu() for name, value in state.items()}
        return atomic_write(Path(folder) / OBJECTIVE_STATE_FILE, lambda path: save_file(tensors, str(path)))

    def load(self, folder: str | Path) -> None:
        """Restores the state a checkpoint folder holds, after checking it fits this run's options.

        Raises:
            FileNotFoundError: an option keeps state but the checkpoint has no `objective_state.safetensors`.
            ValueError: the file is damaged, or belongs to other options or sizes (the message names the field).
        """
        path = Path(folder) / OBJECTIVE_STATE_FILE
        problem = objective_state_problem(folder, self.arguments)
        if problem is not None:
            error = FileNotFoundError if not path.is_file() else ValueError
            raise error(f"cannot resume the objective options from {folder}: {problem}")
        if path.is_file():
            self.load_state(load_file(str(path)), source=str(path))


def captions_of(dataset: Any) -> Sequence[str] | None:
    """The training captions when the dataset exposes a `caption` column (a `datasets.Dataset`), else None."""
    column_names = getattr(dataset, "column_names", None)
    if not column_names or "caption" not in column_names or not hasattr(dataset, "__len__"):
        return None
    return dataset["caption"]
