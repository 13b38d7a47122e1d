"""Momentum distillation: an exponential moving average (EMA) of the trainable weights gives soft targets.

After every optimizer step each trainable parameter's EMA copy moves towards it:

    ema <- m * ema + (1 - m) * theta          (m = `ema_momentum`, 0.995 by default)

The teacher is the model run with the EMA copies in place of the trainable weights (frozen weights are shared, so
the copy costs only the trainable parts: LoRA, query, projection, temperature), in eval mode and without a graph.
Its image->caption softmax, over the same columns as the student's (unique captions, plus queued negatives), is
mixed with the hard targets:

    target = alpha_t * softmax(s_ema * <x_ema, c>) + (1 - alpha_t) * onehot(positive)
    alpha_t = alpha * min(1, step / ramp_steps)

(alpha = `distill_alpha`, TCL/ALBEF use 0.4; ramp_steps = `distill_ramp_steps`, by default one epoch of optimizer
steps; s_ema the EMA temperature). The loss is the cross-entropy `-sum(target * log_softmax(student logits))`; the
text->image direction, when on, mixes the teacher's caption->image softmax with its uniform multi-positive target
the same way. Soft targets soften the penalty on captions that fit an image nearly as well as its own (common with
anonymous captions of near-identical relations).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class DistillationTargets:
    """What the loss needs from the teacher for one batch.

    Attributes:
        image_embeds: `(n, d)` the teacher's L2-normalised embeddings of this rank's images.
        logit_scale: the teacher's scalar log inverse temperature.
        alpha: the (ramped) weight of the soft targets.
    """

    image_embeds: torch.Tensor
    logit_scale: torch.Tensor
    alpha: float


def ramped_alpha(alpha: float, step: int, ramp_steps: int) -> float:
    """`alpha * min(1, step / ramp_steps)`: zero at the first step, `alpha` from step `ramp_steps` on."""
    if ramp_steps < 1:
        raise ValueError(f"distill_ramp_steps must be positive, got {ramp_steps}")
    return alpha * min(1.0, step / ramp_steps)


def mix_targets(hard_targets: torch.Tensor, teacher_logits: torch.Tensor, alpha: float) -> torch.Tensor:
    """`alpha * softmax(teacher_logits) + (1 - alpha) * hard_targets`, row-wise (each row sums to one)."""
    return alpha * F.softmax(teacher_logits, dim=-1) + (1.0 - alpha) * hard_targets


class MomentumTeacher:
    """EMA copies of a model's trainable parameters, and the teacher forward that uses them.

    Args:
        model: the trained model (plain or under PEFT, unwrapped from DDP); its parameters with `requires_grad` are
            copied.
        momentum: `m` of the EMA update.
    """

    def __init__(self, model: torch.nn.Module, momentum: float) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.weights = {
            name: parameter.detach().clone() for name, parameter in model.named_parameters() if parameter.requires_grad
        }
        if not self.weights:
            raise ValueError("momentum distillation needs trainable parameters, and the model has none")

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """`ema <- m * ema + (1 - m) * theta` for every trainable parameter (call after each optimizer step)."""
        for name, parameter in model.named_parameters():
            if name in self.weights:
                self.weights[name].mul_(self.momentum).add_(parameter.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def embed(self, model: torch.nn.Module, batches: Iterable[Mapping[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's `(n, d)` float32 image embeddings of `batches` (concatenated) and its logit scale.

        Runs `model` in eval mode (no dropout, so no random numbers are drawn and GradCache's replay is undisturbed)
        with the EMA weights substituted through `torch.func.functional_call`; the model's own weights are untouched.
        """
        was_training = model.training
        model.eval()
        try:
            outputs = [
                torch.func.functional_call(model, self.weights, args=(), kwargs=dict(batch)) for batch in batches
            ]
        finally:
            model.train(was_training)
        return torch.cat([output.image_embeds.float() for output in outputs]), outputs[-1].logit_scale.float()

    def state(self) -> dict[str, torch.Tensor]:
        return dict(self.weights)

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if set(state) != set(self.weights):
            missing, unexpected = sorted(set(self.weights) - set(state)), sorted(set(state) - set(self.weights))
            raise ValueError(
                f"the checkpoint's EMA weights do not match the model's trainable parameters (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}); resume with the run's model and LoRA settings"
            )
        for name, value in state.items():
            self.weights[name].copy_(value)
