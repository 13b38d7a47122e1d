"""Intra-modal image–image contrastive term: images that carry the same caption are positives of each other.

For each anchor image i with at least one other image of its caption in the (global) batch:

    loss_i = -1/|P(i)| * sum_{p in P(i)} log( exp(s * <x_i, x_p>) / sum_{j != i} exp(s * <x_i, x_j>) )

where `s = exp(logit_scale)`, `P(i)` are the other images with i's caption id and `j` runs over every image of the
global batch but i itself. The term is the mean over such anchors; anchors whose caption is alone in the batch have
no positive and are left out. It pulls a seed group's images together directly instead of only through their shared
caption embedding (TCL's intra-modal term, with caption identity defining the positives).

Under DDP the other images come from the global batch (gathered with gradients), each rank sums its own anchors and
scales by `world_size / global_anchor_count`, so DDP's gradient averaging gives the gradient of the global mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.trainer.distributed import gather_counts, gather_rows, world


def intra_image_contrastive(
    image_embeds: torch.Tensor, caption_ids: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """The image–image multi-positive InfoNCE of this rank's anchors (DDP-scaled, see the module docstring).

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings of this rank.
        caption_ids: `(n,)` caption identities; equal ids make images positives of each other.
        logit_scale: scalar log inverse temperature (the contrastive loss's own).

    Returns:
        A scalar; zero (still attached to the embeddings) when no image shares its caption with another one.
    """
    rank, world_size = world()
    counts = gather_counts(image_embeds.shape[0], image_embeds.device)
    all_image_embeds = gather_rows(image_embeds, counts, with_grad=True)
    all_caption_ids = gather_rows(caption_ids, counts, with_grad=False)
    offset = sum(counts[:rank])
    local_rows = torch.arange(offset, offset + counts[rank], device=image_embeds.device)

    is_self = local_rows[:, None] == torch.arange(all_image_embeds.shape[0], device=image_embeds.device)[None, :]
    positives = (caption_ids[:, None] == all_caption_ids[None, :]) & ~is_self
    logits = (logit_scale.exp() * image_embeds @ all_image_embeds.T).masked_fill(is_self, float("-inf"))
    log_probabilities = F.log_softmax(logits, dim=-1)
    positive_counts = positives.sum(-1)
    has_positive = positive_counts > 0
    # where() and not a product: the masked diagonal holds -inf, and 0 * -inf would be nan
    positive_log_probabilities = torch.where(positives, log_probabilities, torch.zeros_like(log_probabilities))
    per_anchor = -positive_log_probabilities.sum(-1) / positive_counts.clamp(min=1)

    all_positive_counts = (all_caption_ids[:, None] == all_caption_ids[None, :]).sum(-1) - 1
    global_anchors = int((all_positive_counts > 0).sum())
    if global_anchors == 0:
        return 0.0 * all_image_embeds.sum()
    return per_anchor[has_positive].sum() * world_size / global_anchors
