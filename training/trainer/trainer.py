"""RelSimTrainer: a `transformers.Trainer` for relsim's contrastive image -> caption training.

The text side is a frozen sentence-transformers model (each distinct caption encoded once); the loss is the
unique-caption InfoNCE of `training.trainer.losses` with the model's learnable temperature; a per-device batch can
be split into GradCache micro-batches, run inside `compute_loss` and its backward, so the Trainer's `training_step`
(loss scaling, accelerator backward, DDP/FSDP contexts, cache emptying) stays transformers' own. Checkpoints are the
Trainer's (adapter or model, optimizer, scheduler, RNG) plus the state of the optional objectives
(`training.trainer.objectives`: caption queue, EMA teacher, prototypes), so `resume_from_checkpoint` continues
exactly; `export_model` writes the merged standalone model. The objectives' own trainable parameters (the
prototypes) live outside the model but are optimised and clipped (`max_grad_norm`) together with its parameters.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainerCallback

from modeling_relsim import RelSimModel
from training.caption_text import normalize_caption
from training.metrics import retrieval_compute_metrics
from training.trainer.arguments import RelSimTrainingArguments
from training.trainer.caption_encoder import CaptionEncoder
from training.trainer.distributed import world
from training.trainer.grad_cache import grad_cache_loss, split_batch
from training.trainer.image_encoder import image_encoder_of, reuse_frozen_features
from training.trainer.losses import ContrastiveLoss, caption_id, relational_info_nce
from training.trainer.objectives.momentum import DistillationTargets
from training.trainer.objectives.training_objectives import TrainingObjectives, captions_of
from training.trainer.sentence_transformers_files import write_sentence_transformers_files
from training.trainer.trainer_hooks import trainer_step_mismatches


logger = logging.getLogger(__name__)

BATCH_EXTRAS = ("captions", "caption_ids", "unreadable_images", "num_examples")
NO_DECAY_NAMES = ("logit_scale", "query_embedding")


class LogitScaleClampCallback(TrainerCallback):
    """Keeps the log inverse temperature in [0, maximum] after every optimizer step, as CLIP does."""

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("logit_scale"):
                    parameter.clamp_(0.0, self.maximum)


class ObjectiveStepCallback(TrainerCallback):
    """Moves the distillation teacher's EMA after every optimizer step (after the temperature clamp) and clears the
    prototypes' gradient, as the Trainer does for the model's."""

    def __init__(self, objectives: TrainingObjectives) -> None:
        self.objectives = objectives

    def on_train_begin(self, args, state, control, **kwargs):
        self.objectives.zero_grad()

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.objectives.after_optimizer_step(model)


class RelSimTrainer(Trainer):
    """Trains an image encoder (plain or under PEFT) on batches from `RelSimCollator` or `ImageEncoderCollator`:
    relsim's `RelSimModel`, or a tuned CLIP/DINOv2 baseline (`TunedImageEncoder`); see
    `training.trainer.image_encoder` for what a model must provide.

    Args:
        model: a `RelSimModel`, a `TunedImageEncoder`, or a `PeftModel` around one.
        args: [`RelSimTrainingArguments`].
        caption_encoder: the frozen text tower; built from `args.text_encoder` (default: the model config's
            `text_encoder`) when not given.
        kwargs: the usual `Trainer` arguments (`train_dataset`, `eval_dataset`, `data_collator`,
            `processing_class`, `callbacks`, ...).
    """

    # The loss is a per-batch mean, so the stock training_step divides it by the accumulation steps (transformers
    # 5.23 reads this flag; 5.17 decides the same from the batch having no `labels`).
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: torch.nn.Module,
        args: RelSimTrainingArguments,
        caption_encoder: CaptionEncoder | None = None,
        **kwargs: Any,
    ) -> None:
        config = image_encoder_of(model).config
        if args.fixed_logit_scale is not None:
            for name, parameter in model.named_parameters():
                if name.endswith("logit_scale"):
                    parameter.requires_grad_(False)
        kwargs.setdefault("compute_metrics", retrieval_compute_metrics)
        super().__init__(model=model, args=args, **kwargs)
        if self.args.n_gpu > 1:
            raise ValueError("relsim trains with DDP, not DataParallel: launch with torchrun or accelerate launch")
        if args.contrastive_micro_batch_size and self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise ValueError(
                "GradCache (contrastive_micro_batch_size) needs several backward passes per step; use DDP or FSDP"
            )
        self.caption_encoder = caption_encoder or CaptionEncoder(args.text_encoder or config.text_encoder, args.device)
        if self.caption_encoder.dimension != config.projection_dim:
            raise ValueError(
                f"the text encoder gives {self.caption_encoder.dimension}-d embeddings but the model projects to "
                f"{config.projection_dim}; set projection_dim to match"
            )
        self.add_callback(LogitScaleClampCallback(config.logit_scale_max))
        self.objectives = TrainingObjectives(args, self.model, config.projection_dim, args.device)
        if self.objectives.active:
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
        self._batch_metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.unreadable_images: dict[str, dict[str, dict[str, Any]]] = {"train": {}, "eval": {}}

    def _initialize_prototypes_from_captions(self, captions: list[str] | None) -> None:
        """k-means of the training captions' embeddings (else the first batch's, see `compute_loss`)."""
        if self.objectives.prototypes is None or captions is None:
            return
        unique = {caption_id(text): text for text in map(normalize_caption, captions)}
        embeds = self.caption_encoder(list(unique.values()), list(unique))
        self.objectives.initialize_prototypes(embeds, self.args.seed)

    # -- batches ---------------------------------------------------------------------------------------------------

    def _take_batch_extras(
        self, inputs: dict[str, Any], split: str
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Splits the collator's extras off the model inputs; counts unreadable images; encodes the captions."""
        model_inputs = {key: value for key, value in inputs.items() if key not in BATCH_EXTRAS}
        self._count_unreadable(split, inputs.get("unreadable_images", []))
        caption_ids = inputs["caption_ids"]
        caption_embeds = self.caption_encoder(inputs["captions"], caption_ids.tolist())
        return model_inputs, caption_embeds, caption_ids

    def _count_unreadable(self, split: str, failures: list[dict[str, str]]) -> None:
        record = self.unreadable_images[split]
        for failure in failures:
            entry = record.setdefault(failure["source"], {"reason": failure["reason"], "occurrences": 0})
            entry["occurrences"] += 1
        if split != "train" or not failures or not hasattr(self.train_dataset, "__len__"):
            return
        share = len(self.train_dataset) / world()[1]
        if len(record) > self.args.max_unreadable_fraction * share:
            report = self.write_unreadable_report()
            raise RuntimeError(
                f"training stopped: {len(record)} distinct training images are unreadable, more than "
                f"max_unreadable_fraction={self.args.max_unreadable_fraction:g} of the {share:.0f} examples this "
                f"process trains on; they are listed in {report}"
            )

    def write_unreadable_report(self) -> Path | None:
        """Writes every unreadable image (split, source, reason, occurrences) as jsonl; returns its path."""
        rows = [
            {"split": split, "source": source, **entry}
            for split, record in self.unreadable_images.items()
            for source, entry in sorted(record.items())
        ]
        if not rows:
            return None
        rank, world_size = world()
        name = "unreadable_images.jsonl" if world_size == 1 else f"unreadable_images.rank{rank}.jsonl"
        path = Path(self.args.output_dir) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        logger.warning("%d unreadable images were skipped; see %s", len(rows), path)
        return path

    # -- loss ------------------------------------------------------------------------------------------------------

    def _contrastive(
        self,
        image_embeds: torch.Tensor,
        caption_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
        logit_scale: torch.Tensor,
        training: bool = False,
        distillation: DistillationTargets | None = None,
    ) -> ContrastiveLoss:
        """The plain InfoNCE, or in training with objective options on, the combined loss of
        `training.trainer.objectives.training_objectives`."""
        if self.args.fixed_logit_scale is not None:
            logit_scale = torch.tensor(self.args.fixed_logit_scale, device=image_embeds.device)
        if training and self.objectives.active:
            return self.objectives.loss(
                image_embeds.float(),
                caption_embeds,
                caption_ids,
                logit_scale.float(),
                self.args.symmetric_loss,
                distillation,
            )
        return relational_info_nce(
            image_embeds.float(), caption_embeds, caption_ids, logit_scale.float(), symmetric=self.args.symmetric_loss
        )

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

    def _record(self, split: str, result: ContrastiveLoss, logit_scale: torch.Tensor) -> None:
        metrics = self._batch_metrics[split]
        metrics["accuracy"].append(float(result.accuracy))
        fixed = self.args.fixed_logit_scale
        scale = float(fixed if fixed is not None else logit_scale.detach())
        metrics["logit_scale"].append(scale)
        metrics["temperature"].append(float(torch.tensor(-scale).exp()))
        if result.text_to_image is not None:
            metrics["loss_image_to_text"].append(float(result.image_to_text))
            metrics["loss_text_to_image"].append(float(result.text_to_image))
        for name, value in result.terms.items():
            metrics[name].append(float(value))
        if self.objectives.queue is not None and split == "train":
            metrics["caption_queue_fill"].append(self.objectives.queue.fill_fraction)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The contrastive loss of a batch; with `contrastive_micro_batch_size` during training, a GradCache loss.

        The Trainer's stock `training_step` scales and back-propagates the returned loss; a GradCache loss replays
        its micro-batches in that backward (see `training.trainer.grad_cache`), so the step itself is not forked.
        """
        split = "train" if model.training else "eval"
        model_inputs, caption_embeds, caption_ids = self._take_batch_extras(inputs, split)
        training = split == "train" and torch.is_grad_enabled() and self.objectives.active
        if training:
            self.objectives.ensure_prototypes(caption_embeds, self.args.seed)
        micro_batch_size = self.args.contrastive_micro_batch_size
        if (
            return_outputs
            or not torch.is_grad_enabled()
            or micro_batch_size is None
            or micro_batch_size >= caption_ids.shape[0]
        ):
            # the teacher runs first and draws no random numbers, so the student's dropout is as without it
            distillation = self._distillation(model, [model_inputs]) if training else None
            output = model(**model_inputs)
            result = self._contrastive(
                output.image_embeds, caption_embeds, caption_ids, output.logit_scale, training, distillation
            )
        else:
            output = None
            micro_batches = split_batch(model_inputs, micro_batch_size)
            if self.accelerator.distributed_type != DistributedType.FSDP:  # FSDP shards must run in the wrapper
                reuse_frozen_features(image_encoder_of(self.accelerator.unwrap_model(model)), micro_batches)
            distillation = self._distillation(model, micro_batches) if training else None
            result = grad_cache_loss(
                model,
                micro_batches,
                loss_fn=lambda image_embeds, logit_scale: self._contrastive(
                    image_embeds, caption_embeds, caption_ids, logit_scale, training, distillation
                ),
                no_sync=lambda: self.accelerator.no_sync(model),
                forward_context=self.compute_loss_context_manager,
                loss_parameters=self.objectives.parameters() if training else (),
            )
        if result.prototype_assignments is not None:
            self.objectives.record_assignments(split, caption_ids, result.prototype_assignments)
        self._record(split, result, image_encoder_of(self.model).logit_scale)
        if training:
            self.objectives.after_training_loss(caption_embeds, caption_ids)
        return (result.loss, output) if return_outputs else result.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        model_inputs, caption_embeds, caption_ids = self._take_batch_extras(inputs, "eval")
        with torch.no_grad(), self.compute_loss_context_manager():
            output = model(**model_inputs)
            result = self._contrastive(output.image_embeds, caption_embeds, caption_ids, output.logit_scale)
        if self.objectives.prototypes is not None and bool(self.objectives.prototypes.initialized):
            self.objectives.record_assignments(
                "eval", caption_ids, self.objectives.prototypes.assign(output.image_embeds)
            )
        self._record("eval", result, output.logit_scale)
        if prediction_loss_only:
            return result.loss.detach(), None, None
        return result.loss.detach(), output.image_embeds.float(), (caption_ids, caption_embeds)

    # -- optimisation, logging, export -----------------------------------------------------------------------------

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

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """No weight decay on the temperature and the query vector (nor, as usual, on biases and norms)."""
        names = super().get_decay_parameter_names(model)
        return [name for name in names if not any(part in name for part in NO_DECAY_NAMES)]

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        """The Trainer's schedule, with a warning when the warm-up lasts as long as training: the learning rate
        would never reach its peak (e.g. a recipe's `warmup_steps: 100` under `--max_steps 60`)."""
        if self.lr_scheduler is None and self.args.lr_scheduler_type != "constant":
            warmup_steps = self.args.get_warmup_steps(num_training_steps)
            if warmup_steps >= num_training_steps:
                logger.warning(
                    "warm-up lasts %d steps but training only %d: the learning rate never reaches its peak %g; "
                    "lower warmup_steps or give it as a fraction of training (e.g. --warmup_steps 0.1)",
                    warmup_steps,
                    num_training_steps,
                    self.args.learning_rate,
                )
        return super().create_scheduler(num_training_steps, optimizer)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        collected = self._batch_metrics[split]
        if collected:
            names = sorted(collected)
            means = torch.tensor(
                [sum(collected[name]) / len(collected[name]) for name in names], device=self.args.device
            )
            means = self.accelerator.reduce(means, reduction="mean")
            prefix = "eval_" if split == "eval" else ""
            logs.update({prefix + name: round(value, 6) for name, value in zip(names, means.tolist(), strict=True)})
            collected.clear()
        prototype_metrics = self.objectives.prototype_metrics(split)
        if prototype_metrics:
            names = sorted(prototype_metrics)
            values = torch.tensor([prototype_metrics[name] for name in names], device=self.args.device)
            values = self.accelerator.reduce(values, reduction="mean")
            prefix = "eval_" if split == "eval" else ""
            logs.update({prefix + name: round(value, 6) for name, value in zip(names, values.tolist(), strict=True)})
        super().log(logs, start_time)

    def train(self, *args: Any, **kwargs: Any):
        try:
            return super().train(*args, **kwargs)
        finally:
            self.write_unreadable_report()

    def export_model(self, output_dir: str | Path | None = None) -> Path:
        """Writes the merged, standalone model + processor; returns the folder. A RelSimModel folder also carries its
        remote code and the Sentence Transformers files; a tuned encoder's is config, weights and image processor.

        LoRA is merged into the weights in place, so call this once training is over.
        """
        output_dir = Path(output_dir or self.args.export_dir or Path(self.args.output_dir) / "final")
        model = self.model
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
            self.model = model
        if self.is_world_process_zero():
            model.save_pretrained(output_dir)
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
                if isinstance(model, RelSimModel):
                    write_sentence_transformers_files(output_dir)
        self.accelerator.wait_for_everyone()
        return output_dir
