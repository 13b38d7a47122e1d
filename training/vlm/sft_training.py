"""Supervised fine-tuning of the generating Qwen2.5-VL with TRL's `SFTTrainer`: LoRA (peft) on the language model's
attention, or full fine-tuning (the random tiny model, where adapting random weights would teach nothing).

The batches are `ChatSFTCollator`'s (answer-only labels, images rendered as at inference), so TRL's own dataset
preparation is skipped as TRL documents for vision-language models: `remove_unused_columns=False`,
`dataset_kwargs={"skip_prepare_dataset": True}` and a custom collator. Rows that carry a `weight` scale their
share of the loss (the filter's class balance), which `WeightedSFTTrainer` applies; without weights the loss is
TRL's own.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from peft import LoraConfig
from transformers import HfArgumentParser
from transformers.processing_utils import ProcessorMixin
from trl import SFTConfig, SFTTrainer

from training.cpu_threads import set_torch_threads
from training.recipes import read_recipe
from training.vlm.chat import QwenVLChat
from training.vlm.sft_data import ChatSFTCollator, check_sft_row


logger = logging.getLogger(__name__)


@dataclass
class VLMSFTArguments(SFTConfig):
    """TRL's `SFTConfig` plus the LoRA recipe and the CPU thread count.

    The paper's LoRA (r 16, alpha 32, dropout 0.05 on q_proj and v_proj) is the default; `use_lora: false` trains
    every weight, vision tower included (the tiny random model).
    """

    use_lora: bool = field(default=True, metadata={"help": "LoRA on the language model; else train every weight"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    torch_num_threads: int | None = field(
        default=None, metadata={"help": "torch intra-op CPU threads (recipes that promise numbers fix it)"}
    )
    lm_head_learning_rate_multiplier: float = field(
        default=1.0,
        metadata={
            "help": "the output layer learns at learning_rate times this: answer words new to a pretrained model "
            "start from random output rows, which must move faster than the features they read"
        },
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "the collator reads images/prompt/answer"})
    dataset_kwargs: dict[str, Any] | str | None = field(
        default_factory=lambda: {"skip_prepare_dataset": True},
        metadata={"help": "TRL's dataset preparation is skipped: ChatSFTCollator builds the batches"},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.torch_num_threads is not None and self.torch_num_threads < 1:
            raise ValueError(f"torch_num_threads must be a positive number of threads, got {self.torch_num_threads}")
        if self.lm_head_learning_rate_multiplier <= 0:
            raise ValueError(
                f"lm_head_learning_rate_multiplier must be positive, got {self.lm_head_learning_rate_multiplier}"
            )
        if self.use_lora and (self.lora_r < 1 or not self.lora_target_modules):
            raise ValueError(
                f"LoRA needs lora_r >= 1 and target modules, got {self.lora_r}, {self.lora_target_modules}"
            )

    def lora_config(self) -> LoraConfig:
        """LoRA on the language model's layers only (the vision tower's attention is `qkv`, and its MLP is left
        alone by the anchored pattern)."""
        names = "|".join(self.lora_target_modules)
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=rf".*language_model\.layers\.\d+\..*\.({names})",
            task_type="CAUSAL_LM",
        )


def load_recipe(path: str | Path, argument_classes: Sequence[type], overrides: Mapping[str, Any] | None = None):
    """A YAML recipe (keys are fields of `argument_classes`) with `overrides` on top, parsed by `HfArgumentParser`.

    Returns:
        one instance per class, in order. Unknown keys are refused with their names.
    """
    recipe = {**read_recipe(path), **(overrides or {})}
    known = {spec for argument_class in argument_classes for spec in argument_class.__dataclass_fields__}
    unknown = sorted(set(recipe) - known)
    if unknown:
        names = ", ".join(argument_class.__name__ for argument_class in argument_classes)
        raise ValueError(f"{path}: {unknown} are not fields of {names}")
    return HfArgumentParser(list(argument_classes)).parse_dict(recipe)


class ChatProcessor(ProcessorMixin):
    """The image processor and tokenizer as one processor: TRL recognises a vision-language model by it and saves
    both with each checkpoint (the stock Qwen2.5-VL processor needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template: str | None = None) -> None:
        super().__init__(image_processor, tokenizer, chat_template=chat_template)


class WeightedSFTTrainer(SFTTrainer):
    """`SFTTrainer` whose loss honours per-row `weights` (from `ChatSFTCollator`): each row's summed token loss is
    scaled by its weight and the sum divided by the weighted token count, so a weight-2 row counts as that row seen
    twice. Batches without weights get TRL's loss unchanged."""

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """TRL's optimizer, with the output layer's parameters moved to a group of their own whose learning rate is
        `lm_head_learning_rate_multiplier` times the others' (before the scheduler reads the groups)."""
        optimizer = super().create_optimizer(model)
        multiplier = getattr(self.args, "lm_head_learning_rate_multiplier", 1.0)
        if multiplier == 1.0:
            return optimizer
        head = {id(p) for name, p in (model or self.model).named_parameters() if "lm_head" in name and p.requires_grad}
        if not head:
            raise ValueError("lm_head_learning_rate_multiplier is set but the model has no trainable lm_head")
        moved: list[torch.nn.Parameter] = []
        for group in optimizer.param_groups:
            moved += [p for p in group["params"] if id(p) in head]
            group["params"] = [p for p in group["params"] if id(p) not in head]
        base = optimizer.param_groups[0]
        optimizer.add_param_group({"params": moved, "lr": base["lr"] * multiplier, "weight_decay": 0.0})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop("weights", None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(**inputs, use_cache=False, fused_lm_head=True)
        token_counts = outputs.label_mask.sum(-1).to(weights.dtype)
        row_losses = -outputs.log_probs.sum(-1)
        loss = (row_losses * weights).sum() / (token_counts * weights).sum().clamp(min=1e-8)
        return (loss, outputs) if return_outputs else loss


def as_sft_dataset(rows: datasets.Dataset | Sequence[Mapping[str, Any]], what: str) -> datasets.Dataset:
    """A `datasets.Dataset` of SFT rows (a list is converted; the first row is checked either way)."""
    if not isinstance(rows, datasets.Dataset):
        rows = list(rows)
        for position, row in enumerate(rows):
            check_sft_row(row, f"{what}[{position}]")
        rows = datasets.Dataset.from_list(rows)
    if len(rows) == 0:
        raise ValueError(f"the {what} SFT rows are empty")
    check_sft_row(rows[0], f"{what}[0]")
    return rows


def train_chat_sft(
    chat: QwenVLChat,
    train_rows: datasets.Dataset | Sequence[Mapping[str, Any]],
    arguments: VLMSFTArguments,
    eval_rows: datasets.Dataset | Sequence[Mapping[str, Any]] | None = None,
) -> QwenVLChat:
    """Fine-tunes `chat`'s model on SFT rows with TRL's `SFTTrainer` and saves the result to `arguments.output_dir`.

    With LoRA the folder holds the adapter (load it with `QwenVLChat.from_pretrained(base, adapter=folder)`);
    without, the full model (`QwenVLChat.from_pretrained(folder)`); the tokenizer and image processor are saved
    beside either. `chat.model` is trained in place.

    Returns:
        a chat over the trained weights (LoRA merged in), in eval mode.
    """
    if arguments.torch_num_threads is not None:
        set_torch_threads(arguments.torch_num_threads)
    train_dataset = as_sft_dataset(train_rows, "train")
    eval_dataset = None if eval_rows is None else as_sft_dataset(eval_rows, "eval")
    model = chat.model
    if not arguments.use_lora:
        model.requires_grad_(True)
    trainer = WeightedSFTTrainer(
        model=model,
        args=arguments,
        data_collator=ChatSFTCollator(chat),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=ChatProcessor(
            chat.image_processor, chat.tokenizer, chat_template=chat.tokenizer.chat_template
        ),
        peft_config=arguments.lora_config() if arguments.use_lora else None,
    )
    trainer.train()
    output_dir = Path(arguments.output_dir)
    trainer.save_model(str(output_dir))
    chat.tokenizer.save_pretrained(output_dir)
    chat.image_processor.save_pretrained(output_dir)
    trained = trainer.model
    if arguments.use_lora:
        trained = trained.merge_and_unload()
    logger.info("saved the fine-tuned %s to %s", "adapter" if arguments.use_lora else "model", output_dir)
    return QwenVLChat(trained.eval(), chat.tokenizer, chat.image_processor, chat.model_name_or_path, chat.max_pixels)
