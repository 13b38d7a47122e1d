"""Tiny random CLIP and DINOv2 image towers with their own image processors, built offline (CPU recipes, tests, the
ablation). Sized like the tiny relsim backbone's language model (width 64, 2 layers) and reading the synthetic
benchmark's 112-pixel images whole."""

from __future__ import annotations

from typing import Any

import torch
from transformers import CLIPVisionConfig, Dinov2Config
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from training.tuned_encoders.configuration import TunedEncoderConfig
from training.tuned_encoders.modeling import TunedImageEncoder


TINY_ENCODERS = ("clip", "dinov2")
TINY_IMAGE_SIZE = 112


def tiny_encoder_config(kind: str) -> CLIPVisionConfig | Dinov2Config:
    """A ViT of width 64, 2 layers, 4 heads, 14-pixel patches over 112-pixel images (64 patches)."""
    sizes = {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": TINY_IMAGE_SIZE,
        "patch_size": 14,
    }
    if kind == "clip":
        return CLIPVisionConfig(intermediate_size=128, projection_dim=64, **sizes)
    if kind == "dinov2":
        return Dinov2Config(mlp_ratio=2, **sizes)
    raise ValueError(f"unknown tiny encoder {kind!r}; choose from {', '.join(TINY_ENCODERS)}")


def tiny_image_processor(kind: str) -> Any:
    """The encoder's own processor type (what `AutoImageProcessor` loads for the real model), at 112 pixels: resize
    the shorter side, centre-crop, normalise with the encoder's mean and standard deviation (PIL backend)."""
    size = {"shortest_edge": TINY_IMAGE_SIZE}
    crop_size = {"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}
    if kind == "clip":
        return CLIPImageProcessorPil(
            size=size, crop_size=crop_size, image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD
        )
    if kind == "dinov2":
        return BitImageProcessorPil(
            size=size,
            crop_size=crop_size,
            image_mean=IMAGENET_DEFAULT_MEAN,
            image_std=IMAGENET_DEFAULT_STD,
            do_convert_rgb=True,
        )
    raise ValueError(f"unknown tiny encoder {kind!r}; choose from {', '.join(TINY_ENCODERS)}")


def build_tiny_encoder(
    kind: str, seed: int = 0, projection_dim: int = 384, initializer_seed: int = 0
) -> tuple[Any, TunedImageEncoder]:
    """A random tiny tuned encoder (`kind` is "clip" or "dinov2") and its image processor; `seed` fixes the
    encoder's random weights, `initializer_seed` the projection's."""
    config = TunedEncoderConfig(
        encoder_config=tiny_encoder_config(kind), projection_dim=projection_dim, initializer_seed=initializer_seed
    )
    torch.manual_seed(seed)
    return tiny_image_processor(kind), TunedImageEncoder(config).eval()


__all__ = ["TINY_ENCODERS", "build_tiny_encoder", "tiny_encoder_config", "tiny_image_processor"]
