"""GradCache: the gradients of a large contrastive batch computed in micro-batches that fit in memory.

Gradient accumulation cannot grow a contrastive batch: each accumulation step only sees its own negatives. GradCache
instead (1) embeds every micro-batch without a graph, (2) computes the loss on all the embeddings at once and its
gradient with respect to them, and (3) re-runs each micro-batch with a graph, back-propagating those cached
gradients. The random state of each micro-batch is replayed in (3), so dropout masks match, and the parameter
gradients equal those of one full-batch backward. Under DDP every replay but the last runs in `no_sync()`, so the
gradients are all-reduced once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from training.trainer.losses import ContrastiveLoss


class RandomState:
    """The CPU and accelerator random state at one point, to replay a forward pass exactly."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state(self.cuda_state, self.device)


def split_batch(batch: Mapping[str, Any], micro_batch_size: int) -> list[dict[str, Any]]:
    """Slices every per-sample entry of a processor batch into micro-batches (the pixel layout is per sample)."""
    size = batch["input_ids"].shape[0]
    micro_batches = []
    for start in range(0, size, micro_batch_size):
        micro_batch = {key: value[start : start + micro_batch_size] for key, value in batch.items()}
        attention_mask = micro_batch["attention_mask"]
        longest = int(attention_mask.sum(-1).max())
        if longest < attention_mask.shape[1]:
            # drop the columns that are padding for every sample of this micro-batch
            keep = attention_mask.any(0)
            micro_batch["input_ids"] = micro_batch["input_ids"][:, keep]
            micro_batch["attention_mask"] = attention_mask[:, keep]
        micro_batches.append(micro_batch)
    return micro_batches


def reuse_frozen_vision_features(relsim_model: torch.nn.Module, micro_batches: list[dict[str, Any]]) -> bool:
    """Replaces each micro-batch's pixels by the vision tower's features when no vision parameter trains (relsim's
    recipe): GradCache's two passes then run the tower once instead of twice, and never under autograd.

    Returns whether the features were computed (False when some vision parameter trains).
    """
    if any(parameter.requires_grad for parameter in relsim_model.backbone.visual.parameters()):
        return False
    with torch.no_grad():
        for micro_batch in micro_batches:
            if micro_batch.get("pixel_values") is not None:
                pixel_values = micro_batch.pop("pixel_values")
                micro_batch["image_features"] = relsim_model.get_vision_features(
                    pixel_values, micro_batch["image_grid_thw"]
                )
    return True


def grad_cache_step(
    model: torch.nn.Module,
    micro_batches: list[dict[str, Any]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], ContrastiveLoss],
    backward: Callable[[torch.Tensor], None],
    no_sync: Callable[[], contextlib.AbstractContextManager],
) -> ContrastiveLoss:
    """One GradCache forward/backward over `micro_batches`; returns the full-batch loss.

    Args:
        model: the (possibly DDP-wrapped) model; its output has `image_embeds` and `logit_scale`.
        micro_batches: consecutive slices of one batch (see [`split_batch`]).
        loss_fn: `(image_embeds (n, d), logit_scale ()) -> ContrastiveLoss` on the whole batch, already scaled as
            it should be back-propagated (e.g. divided by the gradient-accumulation steps).
        backward: back-propagates a scalar (e.g. `accelerator.backward`).
        no_sync: context manager that suspends DDP gradient reduction.
    """
    device = micro_batches[0]["input_ids"].device
    states, embeddings = [], []
    with torch.no_grad():
        for micro_batch in micro_batches:
            states.append(RandomState(device))
            output = model(**micro_batch)
            embeddings.append(output.image_embeds)
    logit_scale = output.logit_scale
    cached_embeds = torch.cat(embeddings).detach().float().requires_grad_()
    cached_scale = logit_scale.detach().float().requires_grad_(logit_scale.requires_grad)
    result = loss_fn(cached_embeds, cached_scale)
    leaves = [cached_embeds] + ([cached_scale] if cached_scale.requires_grad else [])
    gradients = torch.autograd.grad(result.loss, leaves)
    embed_gradients = gradients[0].split([embeds.shape[0] for embeds in embeddings])
    scale_gradient = gradients[1] if len(gradients) > 1 else None

    final_state = RandomState(device)
    for index, (micro_batch, state, embed_gradient) in enumerate(
        zip(micro_batches, states, embed_gradients, strict=True)
    ):
        is_last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if is_last else no_sync():
            state.restore()
            output = model(**micro_batch)
            surrogate = (output.image_embeds * embed_gradient.to(output.image_embeds.dtype)).sum()
            if scale_gradient is not None:
                # a share in every replay keeps the temperature in each graph (DDP expects all parameters used)
                surrogate = surrogate + output.logit_scale * (scale_gradient / len(micro_batches))
            backward(surrogate)
    final_state.restore()
    return result
