"""What `RelSimTrainer` needs from the model it trains: the small image-encoder interface.

`RelSimModel` (relsim: Qwen2.5-VL read out at a query token) and `TunedImageEncoder` (the tuned CLIP/DINOv2
baselines) both satisfy it unchanged, so the same loss, data pipeline, GradCache and export train either one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from modeling_relsim import RelSimModel
from training.trainer.grad_cache import reuse_frozen_vision_features
from training.tuned_encoders import TunedImageEncoder


CONFIG_FIELDS = ("projection_dim", "logit_scale_max", "text_encoder")


@runtime_checkable
class ImageEncoder(Protocol):
    """A `PreTrainedModel` embedding a processor batch of images into the caption space.

    - `forward(**batch)` returns an output with `image_embeds` `(n, projection_dim)`, L2-normalised, and
      `logit_scale` (the learnable log inverse temperature, a parameter whose name ends in `logit_scale`: the
      trainer clamps it and exempts it from weight decay);
    - `get_image_features(**batch)` returns those embeddings alone (what the evaluation methods call);
    - `config` has `projection_dim` (the text encoder's size), `logit_scale_max` (the clamp) and `text_encoder`;
    - the parameters with `requires_grad` are what trains; `save_pretrained` writes the standalone folder.
    """

    config: Any

    @property
    def logit_scale(self) -> torch.Tensor: ...

    def forward(self, **batch: Any) -> Any: ...

    def get_image_features(self, **batch: Any) -> torch.Tensor: ...

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any: ...


def image_encoder_of(model: torch.nn.Module) -> ImageEncoder:
    """The image encoder inside a PEFT wrapper (or the model itself).

    Raises:
        TypeError: the model lacks part of the interface (naming what is missing).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    missing = [
        name
        for name in ("logit_scale", "forward", "get_image_features", "save_pretrained", "config")
        if not hasattr(base, name)
    ]
    missing += [f"config.{name}" for name in CONFIG_FIELDS if not hasattr(getattr(base, "config", None), name)]
    if missing or not isinstance(base, ImageEncoder):
        raise TypeError(
            f"RelSimTrainer trains an image encoder such as RelSimModel or TunedImageEncoder (optionally under PEFT); "
            f"{type(base).__name__} lacks {', '.join(missing)}"
        )
    return base


def reuse_frozen_features(encoder: ImageEncoder, micro_batches: list[dict[str, Any]]) -> bool:
    """Replaces each micro-batch's pixels by the frozen part's features when that part does not train, so
    GradCache's two passes run it once, without autograd: relsim's vision tower, or a tuned encoder's whole image
    tower (only its projection training). Returns whether features were computed."""
    if isinstance(encoder, RelSimModel):
        return reuse_frozen_vision_features(encoder, micro_batches)
    if isinstance(encoder, TunedImageEncoder) and encoder.encoder_is_frozen():
        with torch.no_grad():
            for micro_batch in micro_batches:
                micro_batch["image_features"] = encoder.get_encoder_features(micro_batch.pop("pixel_values"))
        return True
    return False
