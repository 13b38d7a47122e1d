"""RelSimTrainer: a `transformers.Trainer` for relsim's contrastive image -> caption training.

The text side is a frozen sentence-transformers model (each distinct caption encoded once); the loss is the
unique-caption InfoNCE of `training.trainer.losses` with the model's learnable temperature; a per-device batch can
be split into GradCache micro-batches, run inside `compute_loss` and its backward, so the Trainer's `training_step`
(loss scaling, accelerator backward, DDP/FSDP contexts, cache emptying) stays transformers' own. Checkpoints are the
Trainer's (adapter or model, optimizer, scheduler, RNG), so `resume_from_checkpoint` continues exactly;
`export_model` writes the merged standalone model.

This is the paper's method alone. The objective options (`training.trainer.objectives`) extend it in a subclass,
`ObjectiveTrainer`, through three small hooks: `_training_loss_function` (the loss of a training batch, from its
embeddings), `_loss_parameters` (trainable tensors of that loss outside the model) and `_evaluated_batch`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainerCallback

from modeling_relsim import RelSimModel
from training.json_lines import write_json_lines
from training.metrics import retrieval_compute_metrics
from training.trainer.arguments import RelSimTrainingArguments
from training.trainer.caption_encoder import CaptionEncoder
from training.trainer.distributed import world
from training.trainer.grad_cache import grad_cache_loss, split_batch
from training.trainer.image_encoder import image_encoder_of, reuse_frozen_features
from training.trainer.losses import ContrastiveLoss, relational_info_nce
from training.trainer.sentence_transformers_files import write_sentence_transformers_files


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


def logged_split(logs: dict[str, float]) -> str:
    """Which split a `log` call reports: evaluation logs carry `eval_` keys."""
    return "eval" if any(key.startswith("eval_") for key in logs) else "train"


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
    # whether this trainer computes the terms `args.extra_objectives()` names (the paper's method has none)
    trains_extra_objectives = False

    def __init__(
        self,
        model: torch.nn.Module,
        args: RelSimTrainingArguments,
        caption_encoder: CaptionEncoder | None = None,
        **kwargs: Any,
    ) -> None:
        config = image_encoder_of(model).config
        extra = args.extra_objectives()
        if extra and not self.trains_extra_objectives:
            raise ValueError(
                f"{type(self).__name__} trains the paper's method, which has no {', '.join(extra)}: train these "
                "options with ObjectiveTrainer (training.trainer.objectives.trainer)"
            )
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
        self._batch_metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.unreadable_images: dict[str, dict[str, dict[str, Any]]] = {"train": {}, "eval": {}}

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
        write_json_lines(path, rows)
        logger.warning("%d unreadable images were skipped; see %s", len(rows), path)
        return path

    # -- loss ------------------------------------------------------------------------------------------------------

    def _loss(
        self,
        image_embeds: torch.Tensor,
        logit_scale: torch.Tensor,
        caption_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
    ) -> ContrastiveLoss:
        """The unique-caption InfoNCE of a batch's embeddings (in float32, at the fixed temperature when set)."""
        return relational_info_nce(
            image_embeds.float(),
            caption_embeds,
            caption_ids,
            self._logit_scale(logit_scale).float(),
            symmetric=self.args.symmetric_loss,
        )

    def _logit_scale(self, logit_scale: torch.Tensor) -> torch.Tensor:
        """The model's log inverse temperature, or `fixed_logit_scale` when the run fixes it."""
        if self.args.fixed_logit_scale is None:
            return logit_scale
        return torch.tensor(self.args.fixed_logit_scale, device=logit_scale.device)

    def _training_loss_function(
        self,
        model: torch.nn.Module,
        batches: list[dict[str, Any]],
        caption_embeds: torch.Tensor,
        caption_ids: torch.Tensor,
    ) -> Callable[[torch.Tensor, torch.Tensor], ContrastiveLoss]:
        """`(image_embeds, logit_scale) -> loss` of a training batch, called once per step on the whole per-device
        batch (GradCache or not), before any forward pass of the step's `batches` (one per micro-batch).

        A subclass adds terms here: the function may keep per-step state, and tensors it trains besides the model
        are named by `_loss_parameters`.
        """
        return partial(self._loss, caption_embeds=caption_embeds, caption_ids=caption_ids)

    def _loss_parameters(self) -> Sequence[torch.Tensor]:
        """Trainable tensors the training loss uses outside the model (none here): GradCache hands them their
        gradient."""
        return ()

    def _evaluated_batch(self, caption_ids: torch.Tensor, image_embeds: torch.Tensor) -> None:
        """Called with each evaluation batch's embeddings; a subclass records what its metrics need."""

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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The contrastive loss of a batch; with `contrastive_micro_batch_size` during training, a GradCache loss.

        The Trainer's stock `training_step` scales and back-propagates the returned loss; a GradCache loss replays
        its micro-batches in that backward (see `training.trainer.grad_cache`), so the step itself is not forked.
        """
        split = "train" if model.training else "eval"
        model_inputs, caption_embeds, caption_ids = self._take_batch_extras(inputs, split)
        training = split == "train" and torch.is_grad_enabled()
        micro_batch_size = self.args.contrastive_micro_batch_size
        grad_cache = not (
            return_outputs
            or not torch.is_grad_enabled()
            or micro_batch_size is None
            or micro_batch_size >= caption_ids.shape[0]
        )
        batches = [model_inputs]
        if grad_cache:
            batches = split_batch(model_inputs, micro_batch_size)
            if self.accelerator.distributed_type != DistributedType.FSDP:  # FSDP shards must run in the wrapper
                reuse_frozen_features(image_encoder_of(self.accelerator.unwrap_model(model)), batches)
        if training:
            loss_fn = self._training_loss_function(model, batches, caption_embeds, caption_ids)
        else:
            loss_fn = partial(self._loss, caption_embeds=caption_embeds, caption_ids=caption_ids)
        if grad_cache:
            output = None
            result = grad_cache_loss(
                model,
                batches,
                loss_fn=loss_fn,
                no_sync=lambda: self.accelerator.no_sync(model),
                forward_context=self.compute_loss_context_manager,
                loss_parameters=self._loss_parameters() if training else (),
            )
        else:
            output = model(**model_inputs)
            result = loss_fn(output.image_embeds, output.logit_scale)
        self._record(split, result, image_encoder_of(self.model).logit_scale)
        return (result.loss, output) if return_outputs else result.loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        model_inputs, caption_embeds, caption_ids = self._take_batch_extras(inputs, "eval")
        with torch.no_grad(), self.compute_loss_context_manager():
            output = model(**model_inputs)
            result = self._loss(output.image_embeds, output.logit_scale, caption_embeds, caption_ids)
        self._evaluated_batch(caption_ids, output.image_embeds)
        self._record("eval", result, output.logit_scale)
        if prediction_loss_only:
            return result.loss.detach(), None, None
        return result.loss.detach(), output.image_embeds.float(), (caption_ids, caption_embeds)

    # -- optimisation, logging, export -----------------------------------------------------------------------------

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
        split = logged_split(logs)
        collected = self._batch_metrics[split]
        if collected:
            self._log_rank_means(logs, split, {name: sum(values) / len(values) for name, values in collected.items()})
            collected.clear()
        super().log(logs, start_time)

    def _log_rank_means(self, logs: dict[str, float], split: str, values: dict[str, float]) -> None:
        """Adds `values` to `logs`, each averaged over ranks and named with the split's prefix."""
        names = sorted(values)
        means = torch.tensor([values[name] for name in names], device=self.args.device)
        means = self.accelerator.reduce(means, reduction="mean")
        prefix = "eval_" if split == "eval" else ""
        logs.update({prefix + name: round(value, 6) for name, value in zip(names, means.tolist(), strict=True)})

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
