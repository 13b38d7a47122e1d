"""relsim itself: a saved RelSimModel folder or hub id, with the processor saved next to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from modeling_relsim import RelSimModel, RelSimProcessor, move_batch
from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.model_fingerprint import model_fingerprint
from training.store import tensors_fingerprint


class RelSimMethod(EmbeddingMethod):
    name = "relsim"

    def __init__(
        self,
        model_name_or_path: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model: RelSimModel | None = None,
        processor: RelSimProcessor | None = None,
    ) -> None:
        super().__init__(device)
        self.model_name_or_path = model_name_or_path
        self.model = model if model is not None else RelSimModel.from_pretrained(model_name_or_path, dtype=dtype)
        self.model.to(self.device).eval()
        self.processor = processor if processor is not None else RelSimProcessor.from_pretrained(model_name_or_path)
        self.model.check_processor(self.processor)
        # a model handed in may differ from the files at the path: fingerprint what actually embeds
        self.weights = (
            tensors_fingerprint(model.state_dict().items())
            if model is not None
            else model_fingerprint(model_name_or_path)
        )

    def identity(self) -> dict[str, Any]:
        return {"model": self.model_name_or_path, "weights": self.weights, "processor": self.processor.settings()}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> Any:
        prepared = [self.processor.prepare_image(image, index) for index, image in enumerate(images)]
        return self.processor.batch_prepared_images(prepared)

    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        return self.model.get_image_features(**move_batch(batch, self.device)).float().cpu()
