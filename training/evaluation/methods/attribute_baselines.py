"""Attribute baselines: similarity of looks, with no notion of relation. They show what relsim must beat on the
synthetic benchmark (where shape and colour are known traps) and run on any pool like every other method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from training.evaluation.methods.base import EmbeddingMethod


class PixelCosineMethod(EmbeddingMethod):
    """Raw pixels at `side` x `side`, centred per image: cosine similarity of the picture itself."""

    name = "pixel"

    def __init__(self, side: int = 32, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.side = side

    def identity(self) -> dict[str, Any]:
        return {"side": self.side}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        size = (self.side, self.side)
        rows = [np.asarray(image.convert("RGB").resize(size, PIL.Image.BILINEAR), dtype=np.float32) for image in images]
        return torch.from_numpy(np.stack(rows)).flatten(1)

    def embed(self, batch: torch.Tensor, image_hashes: Sequence[str]) -> torch.Tensor:
        return F.normalize(batch - batch.mean(1, keepdim=True), dim=-1)


class ColourHistogramMethod(EmbeddingMethod):
    """Joint RGB histogram (`bins` a channel) without its largest bin: the colours of the objects, wherever they are
    (the largest bin is the background, which would otherwise decide every comparison)."""

    name = "colour-histogram"

    def __init__(self, bins: int = 8, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        if bins < 1 or 256 % bins:
            raise ValueError(f"bins must divide 256 (e.g. 4, 8, 16), got {bins}")
        self.bins = bins

    def identity(self) -> dict[str, Any]:
        return {"bins": self.bins}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        rows = []
        for image in images:
            pixels = np.asarray(image.convert("RGB")).reshape(-1, 3) // (256 // self.bins)
            codes = (pixels[:, 0] * self.bins + pixels[:, 1]) * self.bins + pixels[:, 2]
            histogram = np.bincount(codes, minlength=self.bins**3).astype(np.float32)
            histogram[histogram.argmax()] = 0.0
            rows.append(histogram)
        return torch.from_numpy(np.stack(rows))

    def embed(self, batch: torch.Tensor, image_hashes: Sequence[str]) -> torch.Tensor:
        return F.normalize(batch, dim=-1)
