"""Gathering rows from every rank for the contrastive loss, with unequal row counts per rank.

Ranks can hold different numbers of samples (the last batch of an epoch, images skipped as unreadable), so rows
are padded to the largest count before the collective and the padding is cut off afterwards.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional


def world() -> tuple[int, int]:
    """`(rank, world_size)`; `(0, 1)` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_counts(count: int, device: torch.device) -> list[int]:
    """Every rank's row count, in rank order."""
    _, world_size = world()
    if world_size == 1:
        return [count]
    local = torch.tensor([count], dtype=torch.long, device=device)
    counts = [torch.zeros_like(local) for _ in range(world_size)]
    dist.all_gather(counts, local)
    return [int(value) for value in torch.cat(counts).tolist()]


def gather_rows(rows: torch.Tensor, counts: list[int], with_grad: bool) -> torch.Tensor:
    """Concatenates `rows` of every rank (rank order) along dim 0.

    Args:
        rows: this rank's `(counts[rank], ...)` tensor.
        counts: every rank's row count, from [`gather_counts`].
        with_grad: let gradients flow back to the rank that owns each row (autograd all-gather). Without it the
            result carries no gradient: use for frozen inputs such as caption embeddings.
    """
    if len(counts) == 1:
        return rows
    longest = max(counts)
    padded = torch.nn.functional.pad(rows, (0, 0) * (rows.dim() - 1) + (0, longest - rows.shape[0]))
    if with_grad:
        pieces = distributed_functional.all_gather(padded)
    else:
        pieces = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(pieces, padded.contiguous())
    return torch.cat([piece[:count] for piece, count in zip(pieces, counts, strict=True)])
