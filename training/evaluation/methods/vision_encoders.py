"""Image-encoder baselines through transformers: CLIP-I (projected image features) and DINO (the CLS token)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel, CLIPModel

from training.errors import loading_model
from training.evaluation.methods.base import EmbeddingMethod
from training.store import model_fingerprint


CLIP_DEFAULT = "openai/clip-vit-large-patch14"
DINO_DEFAULT = "facebook/dinov2-large"


class _ImageEncoderMethod(EmbeddingMethod):
    def __init__(self, model_name_or_path: str, device: str | torch.device, dtype: torch.dtype, model_class) -> None:
        super().__init__(device)
        self.model_name_or_path = model_name_or_path
        with loading_model(model_name_or_path, f"the {self.name} model", "--model"):
            self.model = model_class.from_pretrained(model_name_or_path, dtype=dtype).to(self.device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(model_name_or_path)
        self.weights = model_fingerprint(model_name_or_path, self.model)

    def identity(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "weights": self.weights}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> Any:
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def _pixels(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, dtype=self.model.dtype, non_blocking=True)


class ClipImageMethod(_ImageEncoderMethod):
    """CLIP-I: cosine between CLIP image embeddings (after the visual projection)."""

    name = "clip-i"

    def __init__(self, model_name_or_path: str = CLIP_DEFAULT, device="cpu", dtype=torch.float32) -> None:
        super().__init__(model_name_or_path, device, dtype, CLIPModel)

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        features = self.model.get_image_features(pixel_values=self._pixels(batch))
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1).cpu()


class DinoMethod(_ImageEncoderMethod):
    """DINO: cosine between DINOv2 CLS tokens (after the final layer norm)."""

    name = "dino"

    def __init__(self, model_name_or_path: str = DINO_DEFAULT, device="cpu", dtype=torch.float32) -> None:
        super().__init__(model_name_or_path, device, dtype, AutoModel)

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        cls_token = self.model(pixel_values=self._pixels(batch)).last_hidden_state[:, 0]
        return F.normalize(cls_token.float(), dim=-1).cpu()
