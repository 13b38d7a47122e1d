"""ObjectiveTrainer: the paper's `RelSimTrainer` plus the four objective options (queue, distillation, prototypes,
intra-image term) of `ObjectiveTrainingArguments`.

The base trainer keeps GradCache, DDP and the loss steps; this subclass adds the options' terms through its hooks
(`_training_loss_function`, `_loss_parameters`, `_evaluated_batch`) and extends four private `Trainer` steps, so that
the options' own trainable parameters (the prototypes, which live outside the model) are optimised, clipped
(`max_grad_norm`) and logged together with the model's, and their state (caption queue, EMA teacher, prototypes)
travels with each checkpoint and `resume_from_checkpoint` continues exactly. Those private steps are checked at build
(`training.trainer.trainer_hooks`): a transformers that changed them refuses the options, naming each broken step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import TrainerCallback

from training.caption_text import normalize_caption
from training.trainer.image_encoder import image_encoder_of
from training.trainer.losses import ContrastiveLoss, caption_id
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.momentum import DistillationTargets
from training.trainer.objectives.training_objectives import TrainingObjectives, captions_of
from training.trainer.trainer import RelSimTrainer, logged_split
from training.trainer.trainer_hooks import trainer_step_mismatches


class ObjectiveStepCallback(TrainerCallback):
    """Moves the distillation teacher's EMA after every optimizer step (after the temperature clamp) and clears the
    prototypes' gradient, as the Trainer does for the model's."""

    def __init__(self, objectives: TrainingObjectives) -> None:
        self.objectives = objectives

    def on_train_begin(self, args, state, control, **kwargs):
        self.objectives.zero_grad()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.objectives.after_optimizer_step(model)


class ObjectiveTrainer(RelSimTrainer):
    """[`RelSimTrainer`] with the objective options of [`ObjectiveTrainingArguments`]; with every option off it
    trains exactly as the base trainer.

    Args:
        model, caption_encoder, kwargs: as for [`RelSimTrainer`].
        args: [`ObjectiveTrainingArguments`].
    """

    trains_extra_objectives = True

    def __init__(self, model: torch.nn.Module, args: ObjectiveTrainingArguments, **kwargs: Any) -> None:
        """`kwargs`: `caption_encoder` and the usual `Trainer` arguments, as for [`RelSimTrainer`]."""
        if not isinstance(args, ObjectiveTrainingArguments):
            raise TypeError(
                f"ObjectiveTrainer needs ObjectiveTrainingArguments (the option fields), got {type(args).__name__}"
            )
        super().__init__(model, args, **kwargs)
        config = image_encoder_of(model).config
        self.objectives = TrainingObjectives(args, self.model, config.projection_dim, args.device)
        if not self.objectives.active:
            return
        if self.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            raise ValueError(
                "the objective options (queue, distillation, prototypes, intra-image) run under DDP only: their "
                "teacher swaps unsharded weights and their prototypes live outside the wrapped model"
            )
        self.add_callback(ObjectiveStepCallback(self.objectives))
        mismatches = trainer_step_mismatches()
        if mismatches:
            raise RuntimeError(
                "the objective options (queue, distillation, prototypes, intra-image) extend private Trainer "
                f"steps that this transformers changed: {'; '.join(mismatches)}. Train without them (the paper's "
                "method needs none) or use a transformers relsim is tested on (see the README's supported range)"
            )
        self._initialize_prototypes_from_captions(captions_of(self.train_dataset))

    def _initialize_prototypes_from_captions(self, captions: Sequence[str] | None) -> None:
        """k-means of the training captions' embeddings (else the first batch's, see `_training_loss_function`)."""
        if self.objectives.prototypes is None or captions is None:
            return
        unique = {caption_id(text): text for text in map(normalize_caption, captions)}
        embeds = self.caption_encoder(list(unique.values()), list(unique))
        self.objectives.initialize_prototypes(embeds, self.args.seed)

    # -- loss ------------------------------------------------------------------------------------------------------

    def _training_loss_function(
        self,
        model: torch.nn.Module,
        batches: list[dict[str, Any]],
        caption_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
    ) -> Callable[[torch.Tensor, torch.Tensor], ContrastiveLoss]:
        """The combined loss of `training.trainer.objectives.training_objectives` when an option is on; after it is
        computed, the batch's captions join the queue (a batch is never its own negative)."""
        if not self.objectives.active:
            return super()._training_loss_function(model, batches, caption_embeds, caption_ids)
        self.objectives.ensure_prototypes(caption_embeds, self.args.seed)
        # the teacher runs first and draws no random numbers, so the student's dropout is as without it
        distillation = self._distillation(model, batches)

        def loss_fn(image_embeds: torch.Tensor, logit_scale: torch.Tensor) -> ContrastiveLoss:
            result = self.objectives.loss(
                image_embeds.float(),
                caption_embeds,
                caption_ids,
                self._logit_scale(logit_scale).float(),
                self.args.symmetric_loss,
                distillation,
            )
            if result.prototype_assignments is not None:
                self.objectives.record_assignments("train", caption_ids, result.prototype_assignments)
            if self.objectives.queue is not None:  # the fill this batch's loss saw, before the batch joins
                result.terms["caption_queue_fill"] = torch.tensor(
                    self.objectives.queue.fill_fraction, dtype=torch.float64
                )
            self.objectives.after_training_loss(caption_embeds, caption_ids)
            return result

        return loss_fn

    def _loss_parameters(self) -> Sequence[torch.Tensor]:
        return self.objectives.parameters()

    def _distillation(self, model: torch.nn.Module, batches: list[dict[str, Any]]) -> DistillationTargets | None:
        """The EMA teacher's targets for this step's batch (None while distillation is off or not ramped up)."""
        if self.objectives.teacher is None:
            return None
        dataloader = self.callback_handler.train_dataloader
        steps_per_epoch = None
        if dataloader is not None and hasattr(dataloader, "__len__"):
            steps_per_epoch = math.ceil(len(dataloader) / self.args.gradient_accumulation_steps)
        alpha = self.objectives.distillation_alpha(self.state.global_step, steps_per_epoch)
        return self.objectives.teacher_targets(
            self.accelerator.unwrap_model(model), batches, alpha, self.args.fixed_logit_scale
        )

    def _evaluated_batch(self, caption_ids: torch.Tensor, image_embeds: torch.Tensor) -> None:
        prototypes = self.objectives.prototypes
        if prototypes is not None and bool(prototypes.initialized):
            self.objectives.record_assignments("eval", caption_ids, prototypes.assign(image_embeds))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = logged_split(logs)
        prototype_metrics = self.objectives.prototype_metrics(split)
        if prototype_metrics:
            self._log_rank_means(logs, split, prototype_metrics)
        super().log(logs, start_time)

    # -- private Trainer steps (checked by `trainer_step_mismatches` at build) -------------------------------------

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, plus a group (no weight decay) for the objectives' own parameters (prototypes)."""
        optimizer = super().create_optimizer(model)
        present = {id(parameter) for group in optimizer.param_groups for parameter in group["params"]}
        extra = [parameter for parameter in self.objectives.parameters() if id(parameter) not in present]
        if extra:
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        return optimizer

    def _clipped_parameters(self, model: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [*model.parameters(), *self.objectives.parameters()]

    def _clip_grad_norm(self, model: torch.nn.Module) -> torch.Tensor:
        """Clips the model's and the prototypes' gradients as one vector to `max_grad_norm`; returns its norm before
        clipping. The stock method clips `model.parameters()` only, and the prototypes live outside the model (DDP
        and FSDP must not wrap them); the objective options run under DDP only, where accelerate's clip takes any
        parameter list, and their gradients are already averaged over ranks when this runs."""
        if not self.objectives.parameters():
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(self._clipped_parameters(model), self.args.max_grad_norm)

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: torch.Tensor | float | None = None):
        """The logged `grad_norm`, over the prototypes too (see `_clip_grad_norm`)."""
        if grad_norm is None and self.objectives.parameters():
            grad_norm = self.accelerator.clip_grad_norm_(self._clipped_parameters(model), float("inf"))
        return super()._get_grad_norm(model, grad_norm)

    def _save_checkpoint(self, model, trial) -> None:
        # written before the Trainer's files: a checkpoint whose trainer_state.json exists holds the objectives too
        if self.objectives.active and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            self.objectives.save(folder)
        super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        # the objective state first: a checkpoint of other options is refused before the model's weights change
        self.objectives.load(resume_from_checkpoint)
        super()._load_from_checkpoint(resume_from_checkpoint, model)
