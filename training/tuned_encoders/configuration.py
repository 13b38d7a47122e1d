"""Configuration of a tuned vision-encoder baseline: a CLIP or DINOv2 image tower, a new projection to the caption
space and a learnable temperature, trained with relsim's loss on the same captions (the paper's tuned CLIP/DINO)."""

from __future__ import annotations

import math
from typing import Any

from transformers import CLIPVisionConfig, Dinov2Config, PretrainedConfig


# encoder model_type -> what the tuned encoder pools from it (the feature the untuned CLIP-I / DINO baselines compare)
ENCODER_CONFIGS: dict[str, type[PretrainedConfig]] = {"clip_vision_model": CLIPVisionConfig, "dinov2": Dinov2Config}


def encoder_config_from(value: PretrainedConfig | dict[str, Any]) -> PretrainedConfig:
    """A supported encoder config from a config object or its dict (as `config.json` stores it)."""
    if isinstance(value, dict):
        model_type = value.get("model_type")
        if model_type not in ENCODER_CONFIGS:
            raise ValueError(f"encoder_config has model_type {model_type!r}; supported: {', '.join(ENCODER_CONFIGS)}")
        return ENCODER_CONFIGS[model_type](**{key: item for key, item in value.items() if key != "model_type"})
    if getattr(value, "model_type", None) not in ENCODER_CONFIGS:
        raise ValueError(
            f"encoder_config is a {type(value).__name__}; supported encoders: {', '.join(ENCODER_CONFIGS)}"
        )
    return value


class TunedEncoderConfig(PretrainedConfig):
    r"""Configuration for [`TunedImageEncoder`].

    Args:
        encoder_config (`CLIPVisionConfig`, `Dinov2Config` or `dict`):
            The image tower. CLIP is read after its own visual projection (what CLIP-I compares), DINOv2 at its
            final-norm CLS token (what DINO compares).
        projection_dim (`int`, defaults to 384):
            Size of the embedding; must equal the caption text encoder's output size.
        logit_scale_init (`float`, defaults to `log(1/0.07)`):
            Initial CLIP-style log inverse temperature.
        logit_scale_max (`float`, defaults to `log(100)`):
            Upper clamp of the log inverse temperature, applied by the trainer after each step.
        text_encoder (`str`, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Sentence-transformers model whose caption embeddings the image embeddings are trained to match.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the projection's normal initialisation.
        initializer_seed (`int`, defaults to 0):
            Seed of the projection's initialisation, so two builds around the same encoder are identical.
    """

    model_type = "relsim_tuned_encoder"

    def __init__(
        self,
        encoder_config: PretrainedConfig | dict[str, Any] | None = None,
        projection_dim: int = 384,
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = math.log(100.0),
        text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2",
        initializer_range: float = 0.02,
        initializer_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
        if not logit_scale_init <= logit_scale_max:
            raise ValueError(
                f"logit_scale_init ({logit_scale_init}) must not exceed logit_scale_max ({logit_scale_max})"
            )
        self.encoder_config = encoder_config_from(encoder_config if encoder_config is not None else Dinov2Config())
        self.projection_dim = projection_dim
        self.logit_scale_init = logit_scale_init
        self.logit_scale_max = logit_scale_max
        self.text_encoder = text_encoder
        self.initializer_range = initializer_range
        self.initializer_seed = initializer_seed
        super().__init__(**kwargs)

    @property
    def encoder_type(self) -> str:
        return self.encoder_config.model_type

    @property
    def feature_size(self) -> int:
        """Width of the pooled encoder feature the projection reads."""
        if self.encoder_type == "clip_vision_model":
            return self.encoder_config.projection_dim
        return self.encoder_config.hidden_size

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["encoder_config"] = self.encoder_config.to_dict()
        return output


__all__ = ["ENCODER_CONFIGS", "TunedEncoderConfig", "encoder_config_from"]
