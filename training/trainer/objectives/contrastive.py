"""The unique-caption InfoNCE of `training.trainer.losses` with the two options that change the loss itself: queued
captions add negative columns to image -> text, and momentum distillation replaces the hard targets by a mix with
the teacher's softmax over the same columns (text -> image too, when symmetric). With neither, the computation is
exactly `relational_info_nce`'s: both are built from the same steps of `training.trainer.losses`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.trainer.distributed import gather_rows
from training.trainer.losses import (
    ContrastiveLoss,
    caption_columns,
    contrastive_result,
    soft_cross_entropy,
    text_to_image_logits,
)
from training.trainer.objectives.caption_queue import queued_negatives
from training.trainer.objectives.momentum import DistillationTargets, mix_targets


def queued_distilled_info_nce(
    image_embeds: torch.Tensor,
    caption_embeds: torch.Tensor,
    caption_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    symmetric: bool = False,
    *,
    queued_captions: tuple[torch.Tensor, torch.Tensor] | None = None,
    distillation: DistillationTargets | None = None,
) -> ContrastiveLoss:
    """`relational_info_nce` (same arguments and result) with queued negatives and distillation targets.

    Args:
        queued_captions: `(q, d)` embeddings and `(q,)` ids of a caption queue: each queued caption absent from the
            global batch is one more negative column of image -> text ([`queued_negatives`]).
        distillation: the teacher's embeddings and weight: targets become `alpha * softmax(teacher logits) +
            (1 - alpha) * hard targets` over the same columns (`training.trainer.objectives.momentum`).
    """
    columns = caption_columns(image_embeds, caption_embeds, caption_ids)
    scale = logit_scale.exp()
    candidates = columns.embeds
    if queued_captions is not None:
        queue_embeds, queue_ids = queued_captions
        negatives = queued_negatives(queue_embeds.to(candidates.dtype), queue_ids, columns.ids)
        candidates = torch.cat([candidates, negatives])
    distilling = distillation is not None and distillation.alpha > 0
    image_logits = scale * image_embeds @ candidates.T
    if distilling:
        teacher_scale = distillation.logit_scale.exp()
        hard = F.one_hot(columns.local_columns, candidates.shape[0]).to(image_logits.dtype)
        teacher_logits = teacher_scale * distillation.image_embeds.to(candidates.dtype) @ candidates.T
        per_image = soft_cross_entropy(image_logits, mix_targets(hard, teacher_logits, distillation.alpha))
    else:
        per_image = F.cross_entropy(image_logits, columns.local_columns, reduction="none")
    if not symmetric:
        return contrastive_result(columns, image_logits, per_image)

    text_logits, anchors, targets = text_to_image_logits(columns, image_embeds, scale)
    if distilling:
        all_teacher_embeds = gather_rows(distillation.image_embeds.to(columns.embeds.dtype), columns.counts,
                                         with_grad=False)  # fmt: skip
        teacher_logits = teacher_scale * columns.embeds[anchors] @ all_teacher_embeds.T
        targets = mix_targets(targets, teacher_logits, distillation.alpha)
    return contrastive_result(columns, image_logits, per_image, soft_cross_entropy(text_logits, targets))
