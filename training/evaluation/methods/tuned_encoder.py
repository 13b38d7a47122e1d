"""The tuned vision-encoder baselines (a CLIP or DINOv2 folder trained by `RelSimTrainer`, see
`training.tuned_encoders`): the encoder's own image processor, then the trained projection, L2-normalised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from training.errors import loading_model
from training.evaluation.methods.base import EmbeddingMethod
from training.store import model_fingerprint, tensors_fingerprint
from training.tuned_encoders import TunedEncoderConfig, TunedImageEncoder


METHOD_NAMES_BY_ENCODER = {"clip_vision_model": "tuned-clip", "dinov2": "tuned-dino"}


def load_tuned_encoder(model_name_or_path: str, dtype: torch.dtype = torch.float32) -> tuple[TunedImageEncoder, Any]:
    """The tuned encoder and its image processor saved in `model_name_or_path` (folder or hub id).

    Raises:
        ValueError: the folder holds another kind of model (a relsim folder goes to the relsim method).
        ModelLoadError: naming the id when it cannot be found or downloaded.
    """
    from transformers import AutoImageProcessor, PretrainedConfig

    with loading_model(model_name_or_path, "the tuned encoder", "--model"):
        config, _ = PretrainedConfig.get_config_dict(model_name_or_path)
        if config.get("model_type") != TunedEncoderConfig.model_type:
            raise ValueError(
                f"{model_name_or_path} holds a {config.get('model_type')!r} model, not a tuned encoder "
                f"({TunedEncoderConfig.model_type!r}, written by `training.trainer train` with image_encoder or "
                "tiny_image_encoder)"
            )
        model = TunedImageEncoder.from_pretrained(model_name_or_path, dtype=dtype)
        return model, AutoImageProcessor.from_pretrained(model_name_or_path)


class TunedEncoderMethod(EmbeddingMethod):
    """Tuned CLIP / tuned DINO: image -> encoder's image processor -> encoder -> trained projection, L2-normalised.

    Args:
        model_name_or_path: the folder or hub id to load; with `model` and `image_processor` given (a model just
            trained, as in the ablation) it only names them in the cache identity.
    """

    name = "tuned-encoder"  # per instance: tuned-clip or tuned-dino, after the encoder it holds
    caption_space = True  # trained against the caption encoder's embeddings

    def __init__(
        self,
        model_name_or_path: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model: TunedImageEncoder | None = None,
        image_processor: Any = None,
    ) -> None:
        super().__init__(device)
        if model_name_or_path is None and (model is None or image_processor is None):
            raise ValueError("TunedEncoderMethod needs model_name_or_path, or an in-memory model and image processor")
        self.model_name_or_path = model_name_or_path or "in-memory"
        in_memory = model is not None and image_processor is not None
        if not in_memory:
            model, image_processor = load_tuned_encoder(model_name_or_path, dtype)
        self.model = model.to(self.device).eval()
        self.name = METHOD_NAMES_BY_ENCODER[model.config.encoder_type]
        self.image_processor = image_processor
        self.weights = (
            tensors_fingerprint(model.state_dict().items()) if in_memory else model_fingerprint(model_name_or_path)
        )

    def identity(self) -> dict[str, Any]:
        return {
            "model": self.model_name_or_path,
            "weights": self.weights,
            "image_processor": self.image_processor.to_dict(),
        }

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> Any:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        pixel_values = batch.to(self.device, non_blocking=True)
        return self.model.get_image_features(pixel_values=pixel_values).float().cpu()
