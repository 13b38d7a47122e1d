"""Image->caption retrieval metrics of a held-out set, for the trainer's evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import EvalPrediction


def caption_retrieval_metrics(
    image_embeds: torch.Tensor, caption_ids: torch.Tensor, caption_embeds: torch.Tensor, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Recall@k of retrieving each image's caption among the set's unique captions.

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings.
        caption_ids: `(n,)` caption identity of each image.
        caption_embeds: `(n, d)` embedding of each image's caption.
    """
    unique_ids, column_of_sample = torch.unique(caption_ids, return_inverse=True)
    unique_embeds = torch.zeros(unique_ids.shape[0], caption_embeds.shape[1], dtype=caption_embeds.dtype)
    unique_embeds = unique_embeds.index_copy(0, column_of_sample, caption_embeds)
    scores = image_embeds.float() @ unique_embeds.float().T
    own_score = scores.gather(1, column_of_sample[:, None])
    rank = (scores > own_score).sum(-1)
    return {f"recall@{k}": float((rank < k).float().mean()) for k in ks}


def retrieval_compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """`Trainer.compute_metrics` for relsim: predictions are image embeddings, labels `(caption_ids, embeds)`."""
    caption_ids, caption_embeds = prediction.label_ids
    return caption_retrieval_metrics(
        torch.as_tensor(np.asarray(prediction.predictions)),
        torch.as_tensor(np.asarray(caption_ids)),
        torch.as_tensor(np.asarray(caption_embeds)),
    )
