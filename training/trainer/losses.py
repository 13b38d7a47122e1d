"""InfoNCE between image embeddings and frozen caption embeddings, with shared captions as shared positives.

Anonymous captions are written per seed group, so several images of a batch often carry the *same* caption. The
official code scores each image against every sample's caption and counts identical captions as negatives, which
pushes images of one group apart and bounds the loss away from zero. Here the candidates are the *unique* captions:

- image -> text: each image's one positive is its caption's column, all other unique captions are negatives;
- text -> image (symmetric option): each unique caption's positives are all images that carry it (a uniform
  multi-positive target), the other images are negatives.

Under DDP the candidates come from the global batch, while each rank's loss covers only its own anchors and is
scaled by `world_size / global_anchor_count`: DDP's gradient averaging then yields exactly the gradient of the
global mean loss, and the loss logged (averaged over ranks) is the global mean.

Two options of `training.trainer.objectives` change this loss itself (both off unless given): queued captions add
negative columns to image -> text, and momentum distillation replaces the hard targets by a mix with the teacher's
softmax. With neither, the computation is exactly the one above.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from training.trainer.distributed import gather_counts, gather_rows, world
from training.trainer.objectives.caption_queue import queued_negatives
from training.trainer.objectives.momentum import DistillationTargets, mix_targets


def caption_id(caption: str) -> int:
    """A stable 63-bit id of a caption's text: equal captions get equal ids on every rank and in every run."""
    return int.from_bytes(hashlib.blake2b(caption.encode("utf-8"), digest_size=8).digest(), "big") >> 1


@dataclass
class ContrastiveLoss:
    """Loss value and metrics of one batch (this rank's anchors)."""

    loss: torch.Tensor
    accuracy: torch.Tensor
    image_to_text: torch.Tensor
    text_to_image: torch.Tensor | None
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # detached values of the optional objectives
    prototype_assignments: torch.Tensor | None = None


def relational_info_nce(
    image_embeds: torch.Tensor,
    caption_embeds: torch.Tensor,
    caption_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    symmetric: bool = False,
    *,
    queued_captions: tuple[torch.Tensor, torch.Tensor] | None = None,
    distillation: DistillationTargets | None = None,
) -> ContrastiveLoss:
    """InfoNCE over unique captions, gathered across ranks when a process group is running.

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings of this rank.
        caption_embeds: `(n, d)` L2-normalised frozen caption embeddings, row i belonging to image i.
        caption_ids: `(n,)` caption identities ([`caption_id`]); equal ids mean the same caption.
        logit_scale: scalar log inverse temperature; the logits are `logit_scale.exp() * cosine`.
        symmetric: average image->text with text->image over unique captions.
        queued_captions: `(q, d)` embeddings and `(q,)` ids of a caption queue: each queued caption absent from the
            global batch is one more negative column of image -> text ([`queued_negatives`]).
        distillation: the teacher's embeddings and weight: targets become `alpha * softmax(teacher logits) +
            (1 - alpha) * hard targets` over the same columns (`training.trainer.objectives.momentum`).

    Returns:
        [`ContrastiveLoss`] with the (DDP-scaled) loss and the image->caption top-1 accuracy of this rank's images.
    """
    if image_embeds.shape[0] != caption_embeds.shape[0] or caption_ids.shape != image_embeds.shape[:1]:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)}, caption_embeds {tuple(caption_embeds.shape)} and "
            f"caption_ids {tuple(caption_ids.shape)} must describe the same samples"
        )
    rank, world_size = world()
    counts = gather_counts(image_embeds.shape[0], image_embeds.device)
    all_caption_embeds = gather_rows(caption_embeds.to(image_embeds.dtype), counts, with_grad=False)
    all_caption_ids = gather_rows(caption_ids, counts, with_grad=False)

    unique_ids, column_of_sample = torch.unique(all_caption_ids, return_inverse=True)
    unique_embeds = torch.zeros(
        unique_ids.shape[0], all_caption_embeds.shape[1], dtype=all_caption_embeds.dtype, device=image_embeds.device
    )
    unique_embeds = unique_embeds.index_copy(0, column_of_sample, all_caption_embeds)
    scale = logit_scale.exp()

    offset = sum(counts[:rank])
    local_columns = column_of_sample[offset : offset + counts[rank]]
    columns = unique_embeds
    if queued_captions is not None:
        queue_embeds, queue_ids = queued_captions
        columns = torch.cat([unique_embeds, queued_negatives(queue_embeds.to(columns.dtype), queue_ids, unique_ids)])
    distilling = distillation is not None and distillation.alpha > 0
    image_logits = scale * image_embeds @ columns.T
    if distilling:
        teacher_scale = distillation.logit_scale.exp()
        hard = F.one_hot(local_columns, columns.shape[0]).to(image_logits.dtype)
        targets = mix_targets(hard, teacher_scale * distillation.image_embeds.to(columns.dtype) @ columns.T,
                              distillation.alpha)  # fmt: skip
        per_image = -(targets * F.log_softmax(image_logits, dim=-1)).sum(-1)
    else:
        per_image = F.cross_entropy(image_logits, local_columns, reduction="none")
    image_to_text = per_image.sum() * world_size / sum(counts)
    accuracy = (image_logits.argmax(-1) == local_columns).float().mean()
    if not symmetric:
        return ContrastiveLoss(image_to_text, accuracy.detach(), image_to_text.detach(), None)

    all_image_embeds = gather_rows(image_embeds, counts, with_grad=True)
    anchors = torch.arange(rank, unique_ids.shape[0], world_size, device=image_embeds.device)
    positives = (column_of_sample[None, :] == anchors[:, None]).float()
    text_logits = scale * unique_embeds[anchors] @ all_image_embeds.T
    targets = positives / positives.sum(-1, keepdim=True)
    if distilling:
        all_teacher_embeds = gather_rows(distillation.image_embeds.to(unique_embeds.dtype), counts, with_grad=False)
        targets = mix_targets(
            targets, teacher_scale * unique_embeds[anchors] @ all_teacher_embeds.T, distillation.alpha
        )
    per_caption = -(targets * F.log_softmax(text_logits, dim=-1)).sum(-1)
    text_to_image = per_caption.sum() * world_size / unique_ids.shape[0]
    loss = (image_to_text + text_to_image) / 2
    return ContrastiveLoss(loss, accuracy.detach(), image_to_text.detach(), text_to_image.detach())
