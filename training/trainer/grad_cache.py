"""GradCache: the gradients of a large contrastive batch computed in micro-batches that fit in memory.

Gradient accumulation cannot grow a contrastive batch: each accumulation step only sees its own negatives. GradCache
instead (1) embeds every micro-batch without a graph, (2) computes the loss on all the embeddings at once and its
gradient with respect to them, and (3) re-runs each micro-batch with a graph, back-propagating those cached
gradients. The random state of each micro-batch is replayed in (3), so dropout masks match, and the parameter
gradients equal those of one full-batch backward.

Steps (1) and (2) run inside the loss computation; step (3) runs when the returned loss is back-propagated (a custom
autograd function whose backward replays the micro-batches). The Trainer's own `training_step` therefore stays
untouched: whatever it multiplies the loss by before `backward` (gradient-accumulation division, the fp16 gradient
scaler) arrives as the incoming gradient and scales every replay. Under DDP every replay but the last runs in
`no_sync()`, so the gradients are all-reduced once.

Parameters that the loss itself uses outside the model (the prototypes of `training.trainer.objectives`) get their
gradient in step (2); the returned loss hands it on, scaled by the incoming gradient, when it is back-propagated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from training.trainer.losses import ContrastiveLoss


PER_IMAGE_KEYS = ("pixel_values", "image_grid_thw", "image_features")


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


def batch_device_and_size(batch: Mapping[str, Any]) -> tuple[torch.device, int]:
    """Where a batch lives and how many samples it holds: `input_ids` for a relsim batch, `pixel_values` for an image
    encoder's."""
    key = "input_ids" if "input_ids" in batch else "pixel_values" if "pixel_values" in batch else "image_features"
    if key not in batch:
        raise ValueError(f"a batch needs input_ids, pixel_values or image_features; got {sorted(batch)}")
    return batch[key].device, batch[key].shape[0]


def split_batch(batch: Mapping[str, Any], micro_batch_size: int) -> list[dict[str, Any]]:
    """Slices every per-sample entry of a processor batch into micro-batches (the pixel layout is per sample).

    Token columns that are padding for every sample of a micro-batch are dropped from each per-token entry, so a
    micro-batch of short prompts is not run at the full batch's width (a batch of pixels alone has no tokens).
    """
    size = batch_device_and_size(batch)[1]
    width = batch["input_ids"].shape[1] if "input_ids" in batch else None
    micro_batches = []
    for start in range(0, size, micro_batch_size):
        micro_batch = {key: value[start : start + micro_batch_size] for key, value in batch.items()}
        keep = micro_batch["attention_mask"].bool().any(0) if width is not None else None
        if keep is not None and not bool(keep.all()):
            for key, value in micro_batch.items():
                if key not in PER_IMAGE_KEYS and value.dim() == 2 and value.shape[1] == width:
                    micro_batch[key] = value[:, keep]
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


class _ReplayOnBackward(torch.autograd.Function):
    """Passes the loss value through; its backward hands the incoming gradient to `replay` (step 3) and returns the
    cached gradients of the loss's own `parameters`, scaled by it."""

    @staticmethod
    def forward(
        ctx,
        loss: torch.Tensor,
        replay: Callable[[torch.Tensor], None],
        parameter_gradients: Sequence[torch.Tensor],
        *parameters: torch.Tensor,
    ) -> torch.Tensor:
        ctx.replay, ctx.parameter_gradients = replay, parameter_gradients
        return loss.clone()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        replay, ctx.replay = ctx.replay, None  # the closure holds the micro-batches: free them with the graph
        replay(grad_output)
        return (None, None, None, *(gradient * grad_output for gradient in ctx.parameter_gradients))


def grad_cache_loss(
    model: torch.nn.Module,
    micro_batches: list[dict[str, Any]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], ContrastiveLoss],
    no_sync: Callable[[], contextlib.AbstractContextManager],
    forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    loss_parameters: Sequence[torch.Tensor] = (),
) -> ContrastiveLoss:
    """The full-batch loss over `micro_batches`, computed without a graph; back-propagating its `loss` replays each
    micro-batch and leaves in the parameters' `.grad` the gradients of one full-batch backward.

    Args:
        model: the (possibly DDP-wrapped) model; its output has `image_embeds` and `logit_scale`.
        micro_batches: consecutive slices of one batch (see [`split_batch`]).
        loss_fn: `(image_embeds (n, d), logit_scale ()) -> ContrastiveLoss` on the whole batch.
        no_sync: context manager that suspends DDP gradient reduction (all replays but the last run in it).
        forward_context: context manager for each replayed forward (the Trainer's `compute_loss_context_manager`):
            the replays run during `backward`, outside the context the first pass ran in. (accelerate's mixed
            precision needs nothing here: it travels with the prepared model's forward.)
        loss_parameters: trainable tensors `loss_fn` uses besides the embeddings and the temperature; their
            gradients arrive in `.grad` when the returned loss is back-propagated.
    """
    device = batch_device_and_size(micro_batches[0])[0]
    states, embeddings = [], []
    with torch.no_grad():
        for micro_batch in micro_batches:
            states.append(RandomState(device))
            output = model(**micro_batch)
            embeddings.append(output.image_embeds)
    cached_embeds = torch.cat(embeddings).detach().float().requires_grad_()
    cached_scale = output.logit_scale.detach().float().requires_grad_(output.logit_scale.requires_grad)
    with torch.enable_grad():
        result = loss_fn(cached_embeds, cached_scale)
    leaves = [cached_embeds] + ([cached_scale] if cached_scale.requires_grad else [])
    gradients = torch.autograd.grad(result.loss, leaves + list(loss_parameters))
    parameter_gradients = gradients[len(leaves) :]
    embed_gradients = gradients[0].split([embeds.shape[0] for embeds in embeddings])
    scale_gradient = gradients[1] if len(leaves) > 1 else None

    def replay(grad_output: torch.Tensor) -> None:
        final_state = RandomState(device)
        last = len(micro_batches) - 1
        with torch.enable_grad():
            for index, (micro_batch, state, embed_gradient) in enumerate(
                zip(micro_batches, states, embed_gradients, strict=True)
            ):
                with contextlib.nullcontext() if index == last else no_sync():
                    state.restore()
                    with forward_context():
                        output = model(**micro_batch)
                    # float32 like the full-batch loss, whatever the embeddings' dtype
                    surrogate = (output.image_embeds.float() * embed_gradient).sum()
                    if scale_gradient is not None:
                        # a share in every replay keeps the temperature in each graph (DDP expects all parameters used)
                        surrogate = surrogate + output.logit_scale.float() * (scale_gradient / len(micro_batches))
                    (surrogate * grad_output).backward()
        final_state.restore()

    result.loss = _ReplayOnBackward.apply(
        result.loss.detach().requires_grad_(), replay, parameter_gradients, *loss_parameters
    )
    return result
