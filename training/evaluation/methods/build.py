"""`MethodOptions` and `build_method`: the compared methods by name; each loads its real model (hub id or folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from training.evaluation.captioner import Captioner
from training.evaluation.method_names import METHOD_NAMES
from training.evaluation.methods.attribute_baselines import ColourHistogramMethod, PixelCosineMethod
from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.methods.caption_text import ClipTextMethod, QwenTextMethod
from training.evaluation.methods.perceptual import DreamSimMethod, LpipsMethod
from training.evaluation.methods.relsim import RelSimMethod
from training.evaluation.methods.tuned_encoder import TunedEncoderMethod
from training.evaluation.methods.vision_encoders import CLIP_DEFAULT, DINO_DEFAULT, ClipImageMethod, DinoMethod
from training.vlm.chat import QwenVLChat


@dataclass
class MethodOptions:
    """Settings of `build_method`; `model` is the method's model id or folder (its default when None)."""

    model: str | None = None
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    caption_model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    caption_cache: str | Path = "captions.jsonl"
    text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2"
    lpips_net: str = "alex"
    lpips_image_size: int = 64
    dreamsim_cache: str = "./models"
    trust_remote_code: bool = False


def build_method(name: str, options: MethodOptions) -> EmbeddingMethod:
    if name not in METHOD_NAMES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHOD_NAMES)}")
    if name == "relsim":
        if options.model is None:
            raise ValueError("the relsim method needs a model: a RelSimModel folder or hub id")
        return RelSimMethod(
            options.model, device=options.device, dtype=options.dtype, trust_remote_code=options.trust_remote_code
        )
    if name in ("tuned-clip", "tuned-dino"):
        if options.model is None:
            raise ValueError(f"the {name} method needs a model: a folder trained with image_encoder")
        method = TunedEncoderMethod(options.model, device=options.device, dtype=options.dtype)
        if method.name != name:
            raise ValueError(f"{options.model} holds a {method.name} model; use --method {method.name}")
        return method
    if name in ("pixel", "colour-histogram"):
        method_class = PixelCosineMethod if name == "pixel" else ColourHistogramMethod
        return method_class(device=options.device)
    if name in ("clip-i", "dino"):
        if name == "clip-i":
            return ClipImageMethod(options.model or CLIP_DEFAULT, device=options.device, dtype=options.dtype)
        return DinoMethod(options.model or DINO_DEFAULT, device=options.device, dtype=options.dtype)
    if name == "lpips":
        return LpipsMethod(net=options.lpips_net, image_size=options.lpips_image_size, device=options.device)
    if name == "dreamsim":
        return DreamSimMethod(cache_dir=options.dreamsim_cache, device=options.device)

    chat = QwenVLChat.from_pretrained(options.caption_model, device=options.device, dtype=options.dtype)
    captioner = Captioner(chat, options.caption_cache)
    if name == "clip-t":
        return ClipTextMethod(captioner, options.model or CLIP_DEFAULT, device=options.device)
    return QwenTextMethod(captioner, options.model or options.text_encoder, device=options.device)
