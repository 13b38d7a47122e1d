"""Builds the processor and the trainable model a run starts from, from `ModelArguments`.

The export CLI rebuilds the same base model from the saved arguments (the new parameters come from a seed), so a
LoRA checkpoint can be merged long after training without having stored a copy of the base.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from peft import get_peft_model

from modeling_relsim import RelSimModel, RelSimProcessor
from training.errors import loading_model
from training.tiny_backbone import TINY_PRESETS, build_tiny_model, build_tiny_processor
from training.trainer.arguments import ModelArguments
from training.trainer.lora import relsim_lora_config
from training.tuned_encoders import TunedImageEncoder, build_tiny_encoder


logger = logging.getLogger(__name__)

MODEL_ARGUMENTS_FILE = "relsim_model_arguments.json"


def build_base(arguments: ModelArguments) -> tuple[RelSimProcessor, RelSimModel]:
    """The processor and the RelSimModel before any adapter: from a relsim folder, a backbone, or a tiny backbone."""
    dtype = getattr(torch, arguments.dtype)
    settings = arguments.relsim_settings()
    if arguments.model_name_or_path:
        processor = RelSimProcessor.from_pretrained(arguments.model_name_or_path)
        model = RelSimModel.from_pretrained(
            arguments.model_name_or_path, dtype=dtype, attn_implementation=arguments.attn_implementation
        )
        model.check_processor(processor)
        return processor, model
    if arguments.tiny_backbone:
        processor = build_tiny_processor(**settings)
        model = build_tiny_model(
            processor,
            seed=arguments.initializer_seed,
            sizes=TINY_PRESETS[arguments.tiny_preset],
            projection_dim=arguments.projection_dim,
            initializer_seed=arguments.initializer_seed,
        )
        return processor, model.to(dtype)
    processor = RelSimProcessor.from_pretrained(arguments.backbone, **settings)
    model = RelSimModel.from_backbone(
        arguments.backbone,
        processor=processor,
        projection_dim=arguments.projection_dim,
        initializer_seed=arguments.initializer_seed,
        dtype=dtype,
        attn_implementation=arguments.attn_implementation,
    )
    return processor, model


def keep_trainable_parameters_in_float32(model: torch.nn.Module) -> int:
    """Casts the trainable parameters of a LoRA model to float32 (the frozen backbone stays in its dtype); returns
    how many were cast.

    PEFT already keeps LoRA weights in float32, but the new heads (query vector, projection, logit scale) are trained
    as copies in the backbone's dtype. In bfloat16 a logit scale near 2.6 moves in steps of 0.016, so updates of
    lr 1e-4 would vanish. bf16 autocast still runs their matmuls in bfloat16; float32 is the master copy.
    """
    cast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            cast += 1
    return cast


def make_trainable(model: RelSimModel, arguments: ModelArguments) -> torch.nn.Module:
    """LoRA on the language model (plus the new heads, in float32), or full training with the vision tower frozen
    by default."""
    if arguments.use_lora:
        config = relsim_lora_config(
            r=arguments.lora_r,
            lora_alpha=arguments.lora_alpha,
            lora_dropout=arguments.lora_dropout,
            target_modules=arguments.lora_target_modules,
        )
        model = get_peft_model(model, config)
        keep_trainable_parameters_in_float32(model)
        return model
    model.requires_grad_(True)
    if not arguments.train_vision_tower:
        model.backbone.visual.requires_grad_(False)
    return model


def build_image_encoder(arguments: ModelArguments) -> tuple[Any, TunedImageEncoder]:
    """The image processor and the tuned CLIP/DINOv2 baseline: around a pretrained encoder, or tiny and random."""
    if arguments.tiny_image_encoder:
        image_processor, model = build_tiny_encoder(
            arguments.tiny_image_encoder,
            seed=arguments.initializer_seed,
            projection_dim=arguments.projection_dim,
            initializer_seed=arguments.initializer_seed,
        )
        return image_processor, model.to(getattr(torch, arguments.dtype))
    from transformers import AutoImageProcessor

    with loading_model(arguments.image_encoder, "the image encoder", "image_encoder"):
        image_processor = AutoImageProcessor.from_pretrained(arguments.image_encoder)
        model = TunedImageEncoder.from_encoder(
            arguments.image_encoder,
            projection_dim=arguments.projection_dim,
            initializer_seed=arguments.initializer_seed,
            dtype=getattr(torch, arguments.dtype),
            attn_implementation=arguments.attn_implementation,
        )
    return image_processor, model


def build_processor_and_model(arguments: ModelArguments) -> tuple[Any, torch.nn.Module]:
    """The processor (relsim's, or an image encoder's image processor) and the model with its trainable parts set."""
    if arguments.uses_image_encoder:
        processor, model = build_image_encoder(arguments)
        model.train_last_layers(arguments.image_encoder_trainable_layers)
        keep_trainable_parameters_in_float32(model)
    else:
        processor, model = build_base(arguments)
        model = make_trainable(model, arguments)
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    logger.info("trainable parameters: %d of %d (%.2f%%)", trainable, total, 100 * trainable / total)
    return processor, model


def save_model_arguments(arguments: ModelArguments, output_dir: str | Path) -> Path:
    path = Path(output_dir) / MODEL_ARGUMENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(arguments), indent=2) + "\n", encoding="utf-8")
    return path


def load_model_arguments(run_dir: str | Path) -> ModelArguments:
    path = Path(run_dir) / MODEL_ARGUMENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: it is written by training.trainer.train at the start of a run")
    return ModelArguments(**json.loads(path.read_text(encoding="utf-8")))
