"""relsim itself: a saved RelSimModel folder or hub id with the processor saved next to it (loaded by
`training.relsim_folder.load_relsim`), or a model in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from modeling_relsim import RelSimModel, RelSimProcessor, move_batch
from training.evaluation.methods.base import EmbeddingMethod
from training.relsim_folder import load_relsim
from training.store import model_fingerprint, tensors_fingerprint


class RelSimMethod(EmbeddingMethod):
    """relsim's embedding: image -> Qwen2.5-VL -> hidden state at the query token -> projection, L2-normalised.

    Args:
        model_name_or_path: the folder or hub id to load; with `model` and `processor` given (a model just trained,
            the demo's untrained twin) it only names them in the cache identity.
    """

    name = "relsim"
    caption_space = True  # trained against the caption encoder's embeddings

    def __init__(
        self,
        model_name_or_path: str | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        model: RelSimModel | None = None,
        processor: RelSimProcessor | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(device)
        if model_name_or_path is None and (model is None or processor is None):
            raise ValueError("RelSimMethod needs model_name_or_path, or both an in-memory model and its processor")
        self.model_name_or_path = model_name_or_path or "in-memory"
        if model is None or processor is None:
            model, processor = load_relsim(model_name_or_path, dtype, trust_remote_code)
        self.model = model.to(self.device).eval()
        self.processor = processor
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
