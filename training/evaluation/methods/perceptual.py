"""Perceptual baselines through their own packages (both need torchvision: `pip install "relsim-hf[perceptual]"`).

LPIPS is a distance, not a similarity of two vectors, but an exact vector form exists: with unit-normalised channel
features f_l and non-negative linear weights w_l, LPIPS(x, y) = sum_l mean_hw sum_c w_lc (f_lc(x) - f_lc(y))^2
= || phi(x) - phi(y) ||^2 with phi(x) = concat_l sqrt(w_l) * f_l(x) / sqrt(H_l W_l). So the cache stores phi and
retrieval ranks by squared Euclidean distance, without running the pairwise network query x pool times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from training.errors import import_extra, loading_model
from training.evaluation.methods.base import EmbeddingMethod
from training.store import tensors_fingerprint


class LpipsMethod(EmbeddingMethod):
    """LPIPS (v0.1 linear calibration) on `net`; `image_size` fixes the feature length (alex at 64: 31,872 values).

    Args:
        pretrained_backbone: False builds the trunk with random weights (tests; no download).
    """

    name = "lpips"
    metric = "l2"

    def __init__(
        self, net: str = "alex", image_size: int = 64, device="cpu", pretrained_backbone: bool = True, model=None
    ) -> None:
        super().__init__(device)
        lpips = import_extra("lpips", "perceptual", "the lpips method")

        self._lpips = lpips
        self.net_name = net
        self.image_size = image_size
        self.pretrained_backbone = pretrained_backbone
        if model is None:
            fix = "torchvision downloads these weights on first use (into ~/.cache/torch): run once with network access"
            with loading_model(net, "the lpips backbone", fix=fix):
                model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained_backbone, verbose=False)
        self.model = model
        self.model.to(self.device).eval()
        # small (a few million values): hashing the tensors themselves is exact and instant
        self.weights = tensors_fingerprint(self.model.state_dict().items())
        weights = [lin.model[-1].weight.detach() for lin in self.model.lins]
        if any(bool((weight < 0).any()) for weight in weights):
            raise ValueError("LPIPS linear weights must be non-negative for the exact feature form")
        self.channel_scales = [weight.flatten().sqrt().view(1, -1, 1, 1).to(self.device) for weight in weights]

    def identity(self) -> dict[str, Any]:
        return {
            "net": self.net_name,
            "image_size": self.image_size,
            "pretrained_backbone": self.pretrained_backbone,
            "weights": self.weights,
        }

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        """RGB in [-1, 1], `(batch, 3, image_size, image_size)`, as LPIPS expects."""
        side = self.image_size
        arrays = [np.asarray(image.convert("RGB").resize((side, side), PIL.Image.BICUBIC)) for image in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return pixels

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """phi(x) `(batch, dim)`: LPIPS(x, y) equals the squared distance of these rows."""
        trunk_outputs = self.model.net.forward(self.model.scaling_layer(pixels.to(self.device)))
        parts = []
        for layer, scale in enumerate(self.channel_scales):
            normalised = self._lpips.normalize_tensor(trunk_outputs[layer])
            height, width = normalised.shape[-2:]
            parts.append((normalised * scale).flatten(1) / (height * width) ** 0.5)
        return torch.cat(parts, dim=1)

    def embed(self, batch: torch.Tensor, image_hashes: Sequence[str]) -> torch.Tensor:
        return self.features(batch).float().cpu()


class DreamSimMethod(EmbeddingMethod):
    """DreamSim (its ensemble by default): cosine between its embeddings, as its distance is 1 - cosine."""

    name = "dreamsim"

    def __init__(self, dreamsim_type: str = "ensemble", cache_dir: str = "./models", device="cpu") -> None:
        super().__init__(device)
        dreamsim = import_extra("dreamsim", "perceptual", "the dreamsim method").dreamsim

        self.dreamsim_type = dreamsim_type
        fix = f"dreamsim downloads them into {cache_dir} on first use: run once with network access"
        with loading_model(dreamsim_type, "the dreamsim weights", "--dreamsim-cache", fix=fix):
            self.model, self._preprocess_one = dreamsim(
                pretrained=True, device=str(self.device), cache_dir=cache_dir, dreamsim_type=dreamsim_type
            )
        # its weights come from download URLs pinned by the package; hashing the loaded tensors (~1 GB) is exact
        self.weights = tensors_fingerprint(self.model.state_dict().items())

    def identity(self) -> dict[str, Any]:
        return {"dreamsim_type": self.dreamsim_type, "weights": self.weights}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        return torch.cat([self._preprocess_one(image) for image in images])

    def embed(self, batch: torch.Tensor, image_hashes: Sequence[str]) -> torch.Tensor:
        return F.normalize(self.model.embed(batch.to(self.device)).float(), dim=-1).cpu()
