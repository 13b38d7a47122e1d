"""Prototype alignment: K learnable prototypes in the caption space that images and captions are assigned to.

Prototypes `P` (K, d) are used L2-normalised. For a global batch of N caption embeddings `c` the targets are a
Sinkhorn-balanced soft assignment (SwAV's equipartition):

    Q = sinkhorn(exp(<c, P> / epsilon))   (N, K): rows sum to 1, columns to N / K (exactly in the limit)

and each image predicts its caption's assignment (swapped prediction with a frozen text side):

    loss_i = -sum_k Q_ik * log softmax_k(<x_i, P_k> / tau)

with tau = `prototype_temperature`, epsilon = `sinkhorn_epsilon`, `sinkhorn_iterations` rounds of alternating
row/column normalisation; the targets carry no gradient. The term is the mean over images (DDP-scaled like the
contrastive loss); gradients reach the image embeddings and the prototypes. The balancing keeps every prototype in
use, so the images of a batch spread over K shared "relation clusters" instead of only matching their own caption.

Prototypes start at the k-means centres of caption embeddings (scikit-learn's KMeans). Two metrics describe them:
the perplexity of the prototype usage (exp of the entropy of the histogram of images' most likely prototype; K when
all are used equally, 1 when one takes everything) and the normalised mutual information between that assignment
and the caption identity (scikit-learn's `normalized_mutual_info_score`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.trainer.distributed import gather_counts, gather_rows, world


@torch.no_grad()
def sinkhorn(scores: torch.Tensor, iterations: int, epsilon: float) -> torch.Tensor:
    """Balanced soft assignments of N samples to K prototypes.

    Args:
        scores: `(N, K)` similarities of samples to prototypes.
        iterations: rounds of (column, row) normalisation.
        epsilon: entropic regularisation; smaller gives harder assignments.

    Returns:
        `(N, K)`: each row sums to 1; each column sums to about N / K (exactly as the iterations grow).
    """
    if iterations < 1:
        raise ValueError(f"sinkhorn_iterations must be positive, got {iterations}")
    samples, prototypes = scores.shape
    # in log space: a column of exp(score / epsilon) that underflows to zero would otherwise divide 0 by 0
    log_assignments = scores.double() / epsilon
    for _ in range(iterations):
        log_assignments = log_assignments - torch.logsumexp(log_assignments, 0, keepdim=True) - math.log(prototypes)
        log_assignments = log_assignments - torch.logsumexp(log_assignments, 1, keepdim=True) - math.log(samples)
    return (log_assignments + math.log(samples)).exp().to(scores.dtype)


@dataclass
class PrototypeLoss:
    """The DDP-scaled prototype term of this rank's images, and each image's most likely prototype."""

    loss: torch.Tensor
    assignments: torch.Tensor


def prototype_alignment_loss(
    image_embeds: torch.Tensor,
    caption_embeds: torch.Tensor,
    prototypes: torch.Tensor,
    temperature: float,
    iterations: int,
    epsilon: float,
) -> PrototypeLoss:
    """The swapped-prediction term of the module docstring.

    Args:
        image_embeds: `(n, d)` L2-normalised image embeddings of this rank.
        caption_embeds: `(n, d)` L2-normalised caption embeddings of the same samples.
        prototypes: `(K, d)` prototype parameter (normalised here).
        temperature, iterations, epsilon: tau, Sinkhorn rounds, epsilon.
    """
    rank, world_size = world()
    counts = gather_counts(image_embeds.shape[0], image_embeds.device)
    all_caption_embeds = gather_rows(caption_embeds.to(image_embeds.dtype), counts, with_grad=False)
    normalised = F.normalize(prototypes.to(image_embeds.dtype), dim=-1)
    targets = sinkhorn(all_caption_embeds @ normalised.detach().T, iterations, epsilon)
    offset = sum(counts[:rank])
    local_targets = targets[offset : offset + counts[rank]]
    image_logits = image_embeds @ normalised.T / temperature
    per_image = -(local_targets * F.log_softmax(image_logits, dim=-1)).sum(-1)
    loss = per_image.sum() * world_size / sum(counts)
    return PrototypeLoss(loss, image_logits.detach().argmax(-1))


def kmeans_centres(embeddings: torch.Tensor, num_prototypes: int, seed: int) -> torch.Tensor:
    """`(K, d)` L2-normalised k-means centres of `embeddings` (distinct rows), with a fixed seed.

    Raises:
        ValueError: fewer distinct embeddings than prototypes.
    """
    from sklearn.cluster import KMeans

    points = np.unique(embeddings.detach().float().cpu().numpy(), axis=0)
    if points.shape[0] < num_prototypes:
        raise ValueError(
            f"num_prototypes={num_prototypes} but only {points.shape[0]} distinct captions are there to initialise "
            "them from; lower num_prototypes"
        )
    kmeans = KMeans(n_clusters=num_prototypes, n_init=4, random_state=seed).fit(points)
    return F.normalize(torch.from_numpy(kmeans.cluster_centers_).float(), dim=-1)


def usage_perplexity(assignments: torch.Tensor) -> float:
    """exp(entropy) of the histogram of prototype assignments: the number of equally used prototypes it equals."""
    _, counts = torch.unique(assignments, return_counts=True)
    shares = counts.double() / counts.sum()
    return math.exp(float(-(shares * shares.log()).sum()))


def assignment_nmi(caption_ids: torch.Tensor, assignments: torch.Tensor) -> float:
    """Normalised mutual information between caption identity and prototype assignment (0: unrelated, 1: same
    partition)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(caption_ids.cpu().numpy(), assignments.cpu().numpy()))


class PrototypeAlignment(torch.nn.Module):
    """The prototypes (a trainable parameter the trainer hands to its optimizer) and their settings.

    Args:
        num_prototypes: K.
        dimension: the embedding size (384 for all-MiniLM-L6-v2).
        temperature, iterations, epsilon: see [`prototype_alignment_loss`].
    """

    def __init__(self, num_prototypes: int, dimension: int, temperature: float, iterations: int, epsilon: float):
        super().__init__()
        if num_prototypes < 2:
            raise ValueError(f"num_prototypes must be at least 2 to align to, got {num_prototypes}")
        if temperature <= 0 or epsilon <= 0:
            raise ValueError(
                f"prototype_temperature and sinkhorn_epsilon must be positive, got {temperature} and {epsilon}"
            )
        self.prototypes = torch.nn.Parameter(torch.zeros(num_prototypes, dimension))
        self.register_buffer("initialized", torch.tensor(False))
        self.temperature, self.iterations, self.epsilon = temperature, iterations, epsilon

    @torch.no_grad()
    def initialize(self, caption_embeds: torch.Tensor, seed: int) -> None:
        """Sets the prototypes to the k-means centres of `caption_embeds`."""
        self.prototypes.copy_(kmeans_centres(caption_embeds, self.prototypes.shape[0], seed))
        self.initialized.fill_(True)

    def forward(self, image_embeds: torch.Tensor, caption_embeds: torch.Tensor) -> PrototypeLoss:
        if not bool(self.initialized):
            raise RuntimeError("the prototypes are used before their k-means initialisation")
        return prototype_alignment_loss(
            image_embeds, caption_embeds, self.prototypes, self.temperature, self.iterations, self.epsilon
        )

    @torch.no_grad()
    def assign(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """`(n,)` each image's most likely prototype."""
        return (image_embeds.float() @ F.normalize(self.prototypes.float(), dim=-1).T).argmax(-1)
