"""What every compared method provides: CPU preprocessing (run in DataLoader workers) and a batched embedding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from training.image_ids import pixel_hash


METRICS = ("cosine", "l2")


class EmbeddingMethod(ABC):
    """A similarity method as vectors: `cosine` methods return L2-normalised rows compared by inner product; `l2`
    methods return feature rows whose squared Euclidean distance is the method's distance (LPIPS).

    `caption_space` is True for methods trained to match caption embeddings (relsim, the tuned encoders): their
    vectors can be compared with a caption's sentence embedding, so a relation's text can query them."""

    name: str
    metric: str = "cosine"
    caption_space: bool = False

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


def embed_image_list(
    method: EmbeddingMethod,
    images: Sequence[PIL.Image.Image],
    batch_size: int = 64,
    image_hashes: Sequence[str] | None = None,
) -> torch.Tensor:
    """Any method's embeddings of in-memory images (the synthetic benchmark, the demo): preprocess and embed batch
    by batch, as `embed_pool` does for a pool on disk, without a cache.

    Args:
        image_hashes: the images' ids, given to `method.embed`; default `pixel_hash` of each image.

    Returns:
        `(len(images), dim)` float32 on the CPU.
    """
    if len(images) == 0:
        raise ValueError("embed_image_list got no images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if image_hashes is not None and len(image_hashes) != len(images):
        raise ValueError(f"got {len(image_hashes)} image_hashes for {len(images)} images")
    from transformers.utils.logging import tqdm

    rows = []
    starts = range(0, len(images), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc=f"embedding with {method.name}", unit="batch", disable=len(starts) <= 10):
            chunk = list(images[start : start + batch_size])
            hashes = image_hashes[start : start + batch_size] if image_hashes is not None else map(pixel_hash, chunk)
            rows.append(method.embed(method.preprocess(chunk), list(hashes)).float().cpu())
    return torch.cat(rows)
