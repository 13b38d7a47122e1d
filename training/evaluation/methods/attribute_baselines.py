"""Attribute baselines and the relsim embedder for the synthetic benchmark: `list[PIL.Image] -> (N, D)` unit rows."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from modeling_relsim import RelSimModel, RelSimProcessor


Embedder = Callable[[Sequence[PIL.Image.Image]], torch.Tensor]

PIXEL_SIDE = 32
HISTOGRAM_BINS = 8


def pixel_embeddings(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    """Raw pixels at 32x32, centred per image: cosine similarity of the picture itself."""
    rows = [
        np.asarray(image.convert("RGB").resize((PIXEL_SIDE, PIXEL_SIDE), PIL.Image.BILINEAR), dtype=np.float32).ravel()
        for image in images
    ]
    pixels = torch.from_numpy(np.stack(rows))
    return F.normalize(pixels - pixels.mean(1, keepdim=True), dim=-1)


def colour_histogram_embeddings(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    """Joint RGB histogram (8 bins a channel) without its largest bin: the colours of the objects, wherever they
    are (the largest bin is the background, which would otherwise decide every comparison)."""
    rows = []
    for image in images:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3) // (256 // HISTOGRAM_BINS)
        codes = (pixels[:, 0] * HISTOGRAM_BINS + pixels[:, 1]) * HISTOGRAM_BINS + pixels[:, 2]
        histogram = np.bincount(codes, minlength=HISTOGRAM_BINS**3).astype(np.float32)
        histogram[histogram.argmax()] = 0.0
        rows.append(histogram)
    return F.normalize(torch.from_numpy(np.stack(rows)), dim=-1)


class RelSimEmbedder:
    """A RelSimModel as a benchmark method."""

    def __init__(
        self,
        model: RelSimModel,
        processor: RelSimProcessor,
        batch_size: int = 64,
        show_progress: bool | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size
        self.show_progress = show_progress

    def __call__(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        return self.model.embed_images(
            list(images), self.processor, batch_size=self.batch_size, show_progress=self.show_progress
        )


BASELINES: dict[str, Embedder] = {"pixel cosine": pixel_embeddings, "colour histogram": colour_histogram_embeddings}
