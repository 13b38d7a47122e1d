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

The steps ([`caption_columns`], [`text_to_image_anchors`], [`contrastive_result`]) are public so that a variant of
this loss (the objective options' queued negatives and soft targets, `training.trainer.objectives.contrastive`)
reuses them instead of copying them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from training.trainer.distributed import gather_counts, gather_rows, world


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
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # detached values of further terms, for the logs


@dataclass
class CaptionColumns:
    """The global batch's unique captions (the loss's columns) and where each sample's caption sits among them.

    Attributes:
        embeds: `(u, d)` one embedding per unique caption.
        ids: `(u,)` their caption ids, sorted.
        sample_columns: `(N,)` the column of every sample of the global batch, in rank order.
        local_columns: `(n,)` the columns of this rank's samples.
        counts: the number of samples of each rank.
    """

    embeds: torch.Tensor
    ids: torch.Tensor
    sample_columns: torch.Tensor
    local_columns: torch.Tensor
    counts: list[int]


def caption_columns(
    image_embeds: torch.Tensor, caption_embeds: torch.Tensor, caption_ids: torch.Tensor
) -> CaptionColumns:
    """Gathers the captions of every rank (without gradient: the text tower is frozen) and keeps one per id.

    Raises:
        ValueError: the three inputs do not describe the same samples.
    """
    if image_embeds.shape[0] != caption_embeds.shape[0] or caption_ids.shape != image_embeds.shape[:1]:
        raise ValueError(
            f"image_embeds {tuple(image_embeds.shape)}, caption_embeds {tuple(caption_embeds.shape)} and "
            f"caption_ids {tuple(caption_ids.shape)} must describe the same samples"
        )
    rank, _ = world()
    counts = gather_counts(image_embeds.shape[0], image_embeds.device)
    all_caption_embeds = gather_rows(caption_embeds.to(image_embeds.dtype), counts, with_grad=False)
    all_caption_ids = gather_rows(caption_ids, counts, with_grad=False)
    unique_ids, sample_columns = torch.unique(all_caption_ids, return_inverse=True)
    unique_embeds = torch.zeros(
        unique_ids.shape[0], all_caption_embeds.shape[1], dtype=all_caption_embeds.dtype, device=image_embeds.device
    )
    unique_embeds = unique_embeds.index_copy(0, sample_columns, all_caption_embeds)
    offset = sum(counts[:rank])
    local_columns = sample_columns[offset : offset + counts[rank]]
    return CaptionColumns(unique_embeds, unique_ids, sample_columns, local_columns, counts)


def text_to_image_anchors(columns: CaptionColumns) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the unique captions as text -> image anchors (every `world_size`-th column) and their
    `(a, N)` uniform multi-positive targets over the global batch's images."""
    rank, world_size = world()
    anchors = torch.arange(rank, columns.ids.shape[0], world_size, device=columns.embeds.device)
    positives = (columns.sample_columns[None, :] == anchors[:, None]).float()
    return anchors, positives / positives.sum(-1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """`-sum(targets * log_softmax(logits))` per row: the cross-entropy against a distribution of targets."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1)


def contrastive_result(
    columns: CaptionColumns,
    image_logits: torch.Tensor,
    per_image: torch.Tensor,
    per_caption: torch.Tensor | None = None,
) -> ContrastiveLoss:
    """The DDP-scaled means of the per-anchor losses (image -> text, and text -> image when given) and the top-1
    accuracy of this rank's images; the loss averages both directions when `per_caption` is given."""
    world_size = world()[1]
    image_to_text = per_image.sum() * world_size / sum(columns.counts)
    accuracy = (image_logits.argmax(-1) == columns.local_columns).float().mean()
    if per_caption is None:
        return ContrastiveLoss(image_to_text, accuracy.detach(), image_to_text.detach(), None)
    text_to_image = per_caption.sum() * world_size / columns.ids.shape[0]
    loss = (image_to_text + text_to_image) / 2
    return ContrastiveLoss(loss, accuracy.detach(), image_to_text.detach(), text_to_image.detach())


def relational_info_nce(
    image_embeds: torch.Tensor,
    caption_embeds: torch.Tensor,
    caption_ids: torch.Tensor,
    logit_scale: torch.Tensor,
    symmetric: bool = False,
) -> ContrastiveLoss:
    """InfoNCE over unique captions, gathered across ranks when a process group is running.

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings of this rank.
        caption_embeds: `(n, d)` L2-normalised frozen caption embeddings, row i belonging to image i.
        caption_ids: `(n,)` caption identities ([`caption_id`]); equal ids mean the same caption.
        logit_scale: scalar log inverse temperature; the logits are `logit_scale.exp() * cosine`.
        symmetric: average image->text with text->image over unique captions.

    Returns:
        [`ContrastiveLoss`] with the (DDP-scaled) loss and the image->caption top-1 accuracy of this rank's images.
    """
    columns = caption_columns(image_embeds, caption_embeds, caption_ids)
    scale = logit_scale.exp()
    image_logits = scale * image_embeds @ columns.embeds.T
    per_image = F.cross_entropy(image_logits, columns.local_columns, reduction="none")
    if not symmetric:
        return contrastive_result(columns, image_logits, per_image)
    text_logits, _, targets = text_to_image_logits(columns, image_embeds, scale)
    return contrastive_result(columns, image_logits, per_image, soft_cross_entropy(text_logits, targets))


def text_to_image_logits(
    columns: CaptionColumns, image_embeds: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The text->image direction: each unique caption against every rank's images (gathered with gradient).

    Returns:
        `(logits (captions, all_images), anchors, targets)`: the anchors index the captions of `columns`, the targets
        spread each caption's probability over the images that carry it.
    """
    all_image_embeds = gather_rows(image_embeds, columns.counts, with_grad=True)
    anchors, targets = text_to_image_anchors(columns)
    return scale * columns.embeds[anchors] @ all_image_embeds.T, anchors, targets
