"""A FIFO queue of past caption embeddings: extra negatives at almost no cost, because the text tower is frozen.

Each training step appends the global batch's `(caption embedding, caption id)` rows after its loss is computed
(under DDP the gathered rows, in rank order, so every rank holds the same queue); once full, the oldest rows are
overwritten. When the loss reads the queue ([`queued_negatives`]):

- every queued row whose caption id occurs in the current global batch is dropped: that caption is already a
  column of the loss, so a queued copy would be a false negative for the images it describes (and a duplicate
  negative for the others);
- the remaining rows are reduced to one per caption id: a caption seen in many past batches is one negative, as in
  the unique-caption loss.

With a frozen text tower a caption's embedding never changes, so queued rows are never stale.
"""

from __future__ import annotations

import torch

from training.trainer.distributed import gather_counts, gather_rows


def queued_negatives(queue_embeds: torch.Tensor, queue_ids: torch.Tensor, batch_ids: torch.Tensor) -> torch.Tensor:
    """The queued caption embeddings usable as negatives for a batch, one row per caption id not in the batch.

    Args:
        queue_embeds: `(q, d)` queued caption embeddings.
        queue_ids: `(q,)` their caption ids.
        batch_ids: caption ids of the current global batch (any shape).

    Returns:
        `(m, d)` rows, `m <= q`, in order of first occurrence in the queue.
    """
    keep = ~torch.isin(queue_ids, batch_ids)
    ids, embeds = queue_ids[keep], queue_embeds[keep]
    if ids.numel() == 0:
        return embeds
    unique_ids, inverse = torch.unique(ids, return_inverse=True)
    positions = torch.arange(ids.shape[0], device=ids.device)
    first = torch.full_like(unique_ids, ids.shape[0]).scatter_reduce(0, inverse, positions, reduce="amin")
    return embeds[first.sort().values]


class CaptionQueue:
    """A ring buffer of `size` caption embeddings and their ids.

    Args:
        size: the number of rows kept (the oldest are overwritten).
        dimension: the caption embedding size.
        device: where the buffer lives (the loss's device).
    """

    def __init__(self, size: int, dimension: int, device: torch.device | str = "cpu") -> None:
        if size < 1:
            raise ValueError(f"caption_queue_size must be positive to build a queue, got {size}")
        self.size = size
        self.embeds = torch.zeros(size, dimension, device=device)
        self.ids = torch.zeros(size, dtype=torch.long, device=device)
        self.pointer = 0  # the next row to write
        self.filled = 0

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(filled, d)` embeddings and `(filled,)` ids (ring order, not age order: the loss does not care)."""
        return self.embeds[: self.filled], self.ids[: self.filled]

    @property
    def fill_fraction(self) -> float:
        return self.filled / self.size

    @torch.no_grad()
    def enqueue(self, caption_embeds: torch.Tensor, caption_ids: torch.Tensor) -> None:
        """Appends this rank's rows after gathering every rank's (so all ranks append the same rows)."""
        counts = gather_counts(caption_embeds.shape[0], caption_embeds.device)
        embeds = gather_rows(caption_embeds.to(self.embeds.dtype), counts, with_grad=False)
        ids = gather_rows(caption_ids.to(self.ids.device), counts, with_grad=False)
        embeds, ids = embeds[-self.size :], ids[-self.size :]
        rows = (self.pointer + torch.arange(ids.shape[0], device=self.ids.device)) % self.size
        self.embeds[rows] = embeds.to(self.embeds.device)
        self.ids[rows] = ids
        self.pointer = (self.pointer + ids.shape[0]) % self.size
        self.filled = min(self.size, self.filled + ids.shape[0])

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "embeds": self.embeds,
            "ids": self.ids,
            "pointer": torch.tensor(self.pointer),
            "filled": torch.tensor(self.filled),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        if tuple(state["embeds"].shape) != tuple(self.embeds.shape):
            raise ValueError(
                f"the checkpoint's caption queue holds {tuple(state['embeds'].shape)} rows but caption_queue_size "
                f"gives {tuple(self.embeds.shape)}; resume with the run's caption_queue_size"
            )
        self.embeds.copy_(state["embeds"])
        self.ids.copy_(state["ids"])
        self.pointer, self.filled = int(state["pointer"]), int(state["filled"])
