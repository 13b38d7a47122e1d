"""A tuned vision-encoder baseline: CLIP or DINOv2 image tower -> pooled feature -> new projection -> L2 norm.

It is trained by `RelSimTrainer` exactly as relsim is (same captions, loss, GradCache), so the comparison isolates
the backbone: a vision encoder against relsim's vision-language model. `save_pretrained` writes a plain
transformers folder (config + safetensors); `TunedImageEncoder.from_pretrained` loads it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPVisionModelWithProjection, Dinov2Model, PreTrainedModel
from transformers.utils import ModelOutput

from training.tuned_encoders.configuration import TunedEncoderConfig


logger = logging.getLogger(__name__)

ENCODER_CLASSES: dict[str, type[PreTrainedModel]] = {
    "clip_vision_model": CLIPVisionModelWithProjection,
    "dinov2": Dinov2Model,
}
NEW_MODULES = ("projection", "temperature")


@dataclass
class TunedEncoderOutput(ModelOutput):
    """
    Args:
        image_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): L2-normalised embeddings.
        encoder_features (`torch.FloatTensor` of shape `(batch_size, feature_size)`): the pooled encoder feature.
        logit_scale (`torch.FloatTensor` of shape `()`): the learnable log inverse temperature.
    """

    image_embeds: torch.FloatTensor | None = None
    encoder_features: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None


class TunedEncoderTemperature(nn.Module):
    """Holds the log inverse temperature in a named submodule (PEFT and the trainer find it by its name)."""

    def __init__(self, init_value: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(float(init_value)))

    def forward(self) -> torch.Tensor:
        return self.logit_scale


class TunedEncoderPreTrainedModel(PreTrainedModel):
    config_class = TunedEncoderConfig
    config: TunedEncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The projection gets a seeded draw, so two builds around the same encoder are identical."""
        if isinstance(module, TunedEncoderTemperature):
            nn.init.constant_(module.logit_scale, self.config.logit_scale_init)
        elif module is getattr(self, "projection", None):
            generator = torch.Generator(device=module.weight.device).manual_seed(self.config.initializer_seed)
            nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range, generator=generator)
            nn.init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class TunedImageEncoder(TunedEncoderPreTrainedModel):
    r"""CLIP's image tower (read after its visual projection) or DINOv2 (read at its final-norm CLS token), then a
    new `Linear(feature_size -> projection_dim)` and L2 normalisation; a learnable temperature for the loss."""

    def __init__(self, config: TunedEncoderConfig) -> None:
        super().__init__(config)
        self.encoder = ENCODER_CLASSES[config.encoder_type](config.encoder_config)
        self.projection = nn.Linear(config.feature_size, config.projection_dim)
        self.temperature = TunedEncoderTemperature(config.logit_scale_init)
        self.post_init()

    @property
    def logit_scale(self) -> torch.Tensor:
        """Log inverse temperature (a scalar parameter); `logit_scale.exp()` multiplies the cosine similarities."""
        return self.temperature()

    def get_encoder_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(batch_size, feature_size)` pooled features of the image tower (what the untuned baselines compare)."""
        pixel_values = pixel_values.to(self.encoder.dtype)
        if self.config.encoder_type == "clip_vision_model":
            return self.encoder(pixel_values=pixel_values).image_embeds
        return self.encoder(pixel_values=pixel_values).pooler_output

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        image_features: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> TunedEncoderOutput | tuple[torch.Tensor, ...]:
        """Embeds a batch of images.

        Args:
            pixel_values: `(batch_size, 3, height, width)` from the encoder's own image processor.
            image_features: `(batch_size, feature_size)` pooled features computed earlier (by
                [`get_encoder_features`]) in place of `pixel_values`, for GradCache when the encoder is frozen.
        """
        if (pixel_values is None) == (image_features is None):
            raise ValueError("give exactly one of pixel_values and image_features")
        if image_features is None:
            image_features = self.get_encoder_features(pixel_values)
        projection_dtype = self.projection.weight.dtype
        image_embeds = F.normalize(self.projection(image_features.to(projection_dtype)), dim=-1)
        if return_dict is False:
            return (image_embeds, image_features, self.logit_scale)
        return TunedEncoderOutput(
            image_embeds=image_embeds, encoder_features=image_features, logit_scale=self.logit_scale
        )

    def get_image_features(self, **inputs: Any) -> torch.Tensor:
        """L2-normalised embeddings `(batch_size, projection_dim)` of an image-processor batch."""
        inputs.pop("return_dict", None)
        return self.forward(**inputs, return_dict=True).image_embeds

    def encoder_is_frozen(self) -> bool:
        return not any(parameter.requires_grad for parameter in self.encoder.parameters())

    def train_last_layers(self, count: int | None) -> None:
        """Trains the projection, the temperature and the encoder's last `count` blocks with its final norm (and
        CLIP's visual projection); `None` trains the whole encoder, 0 none of it."""
        self.requires_grad_(True)
        if count is None:
            return
        if count < 0:
            raise ValueError(f"the number of trained encoder layers must be >= 0 or None (all), got {count}")
        if self.config.encoder_type == "clip_vision_model":
            blocks = self.encoder.vision_model.encoder.layers
            heads = [self.encoder.vision_model.post_layernorm, self.encoder.visual_projection]
        else:
            blocks = self.encoder.encoder.layer
            heads = [self.encoder.layernorm]
        if count > len(blocks):
            raise ValueError(f"the encoder has {len(blocks)} layers; cannot train the last {count}")
        self.encoder.requires_grad_(False)
        if count:
            for module in [*blocks[len(blocks) - count :], *heads]:
                module.requires_grad_(True)

    @classmethod
    def from_encoder(cls, encoder_name_or_path: str, **kwargs: Any) -> TunedImageEncoder:
        """Builds the tuned encoder around a pretrained CLIP (`openai/clip-vit-large-patch14`, its image tower only)
        or DINOv2 (`facebook/dinov2-large`); the projection and temperature are new.

        Every encoder weight must load: a missing or mis-shaped key raises instead of staying random.

        Args:
            kwargs: `TunedEncoderConfig` fields (`projection_dim`, `initializer_seed`, ...); the rest goes to the
                encoder's `from_pretrained` (`dtype`, `attn_implementation`, `revision`, ...).
        """
        from transformers import AutoConfig

        config_fields = (
            "projection_dim",
            "logit_scale_init",
            "logit_scale_max",
            "text_encoder",
            "initializer_range",
            "initializer_seed",
        )
        config_kwargs = {key: kwargs.pop(key) for key in config_fields if key in kwargs}
        hub_kwargs = {
            key: kwargs[key] for key in ("revision", "token", "cache_dir", "local_files_only") if key in kwargs
        }
        found = AutoConfig.from_pretrained(encoder_name_or_path, **hub_kwargs)
        model_type = found.model_type
        if model_type == "clip":  # its image tower and visual projection only, at the full model's projection size
            model_type = "clip_vision_model"
            kwargs.setdefault("config", found.vision_config)
            kwargs["config"].projection_dim = found.projection_dim
        if model_type not in ENCODER_CLASSES:
            raise ValueError(
                f"{encoder_name_or_path} is a {model_type!r} model; tuned encoders support CLIP and DINOv2 "
                f"({', '.join(ENCODER_CLASSES)})"
            )
        encoder, info = ENCODER_CLASSES[model_type].from_pretrained(
            encoder_name_or_path, output_loading_info=True, **kwargs
        )
        missing, mismatched = sorted(info["missing_keys"]), [str(entry) for entry in info["mismatched_keys"]]
        if missing or mismatched:
            raise ValueError(
                f"{encoder_name_or_path} is not a complete {model_type} checkpoint; these weights would stay random: "
                f"missing {missing[:10]}, mismatched {mismatched[:10]}"
            )
        return cls.around_encoder(encoder, TunedEncoderConfig(encoder_config=encoder.config, **config_kwargs))

    @classmethod
    def around_encoder(cls, encoder: PreTrainedModel, config: TunedEncoderConfig) -> TunedImageEncoder:
        """Wraps a loaded encoder without allocating a second one; the new parameters come from the seed and take
        the encoder's device and dtype."""
        with torch.device("meta"):
            model = cls(config)
        model.encoder = encoder
        model.config.encoder_config = encoder.config
        reference = next(encoder.parameters())
        for name in NEW_MODULES:
            module = getattr(model, name).to_empty(device=reference.device)
            model._init_weights(module)
            module.to(reference.dtype)
        return model.eval()


__all__ = ["ENCODER_CLASSES", "TunedEncoderOutput", "TunedImageEncoder"]
