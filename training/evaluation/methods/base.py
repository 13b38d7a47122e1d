"""What every compared method provides: CPU preprocessing (run in DataLoader workers) and a batched embedding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch


METRICS = ("cosine", "l2")


class EmbeddingMethod(ABC):
    """A similarity method as vectors: `cosine` methods return L2-normalised rows compared by inner product; `l2`
    methods return feature rows whose squared Euclidean distance is the method's distance (LPIPS)."""

    name: str
    metric: str = "cosine"

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What a cache of this method's embeddings depends on (model, settings)."""

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> Any:
        """Runs on the CPU, in DataLoader workers when there are any; the default keeps the PIL images."""
        return list(images)

    @abstractmethod
    def embed(self, batch: Any, image_hashes: Sequence[str]) -> torch.Tensor:
        """`(len(image_hashes), dim)` float32 on the CPU for one preprocessed batch."""

    def cache_identity(self) -> dict[str, Any]:
        return {"method": self.name, "metric": self.metric, **self.identity()}
