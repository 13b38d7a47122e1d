"""Configuration of relsim: a Qwen2.5-VL backbone read out at one query token and projected to a text space.

This file travels as remote code next to saved weights, so it imports only torch, transformers and its siblings.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PretrainedConfig, Qwen2_5_VLConfig


DEFAULT_INSTRUCTION = (
    "Look past the objects, colours and style of this image and attend to its underlying relational logic: "
    "how its parts relate, change, repeat or are arranged."
)
CROP_POLICIES = ("center", "none")
# the settings a processor must share with the model it feeds
PROCESSOR_SETTING_NAMES = ("query_token", "instruction", "use_system_prompt", "image_size", "crop")


class RelSimConfig(PretrainedConfig):
    r"""Configuration for [`RelSimModel`].

    Args:
        backbone_config (`Qwen2_5_VLConfig` or `dict`, *optional*):
            The vision-language backbone (vision tower + language model). The lm_head is never built.
        projection_dim (`int`, defaults to 384):
            Size of the relational embedding; must equal the text encoder's output size.
        query_token (`str`, defaults to `"<|query|>"`):
            Special token whose last hidden state is the image's relational read-out.
        query_token_id (`int`, *optional*):
            Id of `query_token` in the processor's tokenizer. Required before the model can run a forward.
        instruction (`str`, *optional*):
            Text placed before the image in the user turn. `None` gives no instruction (the official release).
        use_system_prompt (`bool`, defaults to `True`):
            Keep the chat template's system turn (the official release does).
        image_size (`int`, defaults to 448):
            Side of the square the image is resized to (`crop="center"`), or the pixel budget `image_size**2`
            that keeps the aspect ratio (`crop="none"`).
        crop (`str`, defaults to `"center"`):
            `"center"` centre-crops to a square before resizing; `"none"` keeps the aspect ratio.
        logit_scale_init (`float`, defaults to `log(1/0.07)`):
            Initial CLIP-style log inverse temperature.
        logit_scale_max (`float`, defaults to `log(100)`):
            Upper clamp of the log inverse temperature, applied by the trainer after each step.
        text_encoder (`str`, defaults to `"sentence-transformers/all-MiniLM-L6-v2"`):
            Sentence-transformers model whose caption embeddings the image embeddings are trained to match.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the new parameters' (query vector, projection) normal initialisation.
        initializer_seed (`int`, defaults to 0):
            Seed of the new parameters' initialisation, so building from a backbone is reproducible.
        vision_attention (`str`, defaults to `"batched"`):
            `"batched"` sends all vision windows of one length through one attention call and computes the tower's
            index tensors on the host; `"reference"` runs transformers' own vision code (one call per window). Same
            numbers; batched is much faster on GPU. Where the installed transformers' vision internals differ from
            what the batched path was written for, the model runs the reference path and warns once.
    """

    model_type = "relsim"
    sub_configs = {"backbone_config": Qwen2_5_VLConfig}

    def __init__(
        self,
        backbone_config: Qwen2_5_VLConfig | dict[str, Any] | None = None,
        projection_dim: int = 384,
        query_token: str = "<|query|>",
        query_token_id: int | None = None,
        instruction: str | None = DEFAULT_INSTRUCTION,
        use_system_prompt: bool = True,
        image_size: int = 448,
        crop: str = "center",
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = math.log(100.0),
        text_encoder: str = "sentence-transformers/all-MiniLM-L6-v2",
        initializer_range: float = 0.02,
        initializer_seed: int = 0,
        vision_attention: str = "batched",
        **kwargs: Any,
    ) -> None:
        if backbone_config is None:
            backbone_config = Qwen2_5_VLConfig()
        elif isinstance(backbone_config, dict):
            backbone_config = Qwen2_5_VLConfig(**backbone_config)
        elif not isinstance(backbone_config, Qwen2_5_VLConfig):
            raise TypeError(
                f"backbone_config must be a Qwen2_5_VLConfig or a dict, got {type(backbone_config).__name__}"
            )
        if crop not in CROP_POLICIES:
            raise ValueError(f"crop must be one of {CROP_POLICIES}, got {crop!r}")
        if vision_attention not in ("batched", "reference"):
            raise ValueError(f"vision_attention must be 'batched' or 'reference', got {vision_attention!r}")
        if projection_dim <= 0:
            raise ValueError(f"projection_dim must be positive, got {projection_dim}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if not logit_scale_init <= logit_scale_max:
            raise ValueError(
                f"logit_scale_init ({logit_scale_init}) must not exceed logit_scale_max ({logit_scale_max})"
            )
        self.backbone_config = backbone_config
        self.projection_dim = projection_dim
        self.query_token = query_token
        self.query_token_id = query_token_id
        self.instruction = instruction
        self.use_system_prompt = use_system_prompt
        self.image_size = image_size
        self.crop = crop
        self.logit_scale_init = logit_scale_init
        self.logit_scale_max = logit_scale_max
        self.text_encoder = text_encoder
        self.initializer_range = initializer_range
        self.initializer_seed = initializer_seed
        self.vision_attention = vision_attention
        super().__init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        """Width of the language model, i.e. of the query read-out."""
        return self.backbone_config.text_config.hidden_size

    def processor_settings(self) -> dict[str, Any]:
        """The prompt and image settings a RelSimProcessor must share: `RelSimProcessor.from_pretrained(backbone,
        **config.processor_settings())` builds a matching one."""
        return {name: getattr(self, name) for name in PROCESSOR_SETTING_NAMES}

    def get_text_config(self, *args: Any, **kwargs: Any) -> PretrainedConfig:
        return self.backbone_config.get_text_config(*args, **kwargs)


__all__ = ["CROP_POLICIES", "DEFAULT_INSTRUCTION", "RelSimConfig"]
