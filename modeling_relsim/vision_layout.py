"""The vision tower's per-batch index tensors, computed on the host and sent to the device without a stall.

transformers' Qwen2.5-VL tower derives its rotary positions, attention boundaries and window order from `grid_thw`
inside its forward. With the grid on a GPU that is several device-to-host reads per forward, each one draining the
stream, plus a few small kernels per image for the positions. The grid is made by the processor on the host, so
relsim computes all of it there with transformers' own functions (`transformers.vision_utils`), copies it to the
device asynchronously, and hands it to the tower as the precomputed keyword arguments those functions accept. The
batched window attention's groups come from the same host boundaries, so no block reads them back either.
`fast_path_compat.py` checks at build that these helpers still pop what they are given and that the tower calls them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .vision_attention import WindowGroup, remember_window_groups, window_groups


# Internals of transformers (5.17 on): a version without them must still import this file, so that the model can fall
# back to the tower's own computation (see fast_path_compat.py, which checks them before the layout is ever used).
try:
    from transformers import vision_utils
except ImportError:
    vision_utils = None
try:
    from transformers.utils.generic import get_max_seqlen
except ImportError:
    get_max_seqlen = None

LAYOUT_HELPERS = ("get_vision_position_ids", "get_vision_attention_seqlens", "get_vision_window_index")


def layout_helpers() -> dict[str, Any]:
    """The transformers functions the layout calls (and the tower must call with the same `kwargs`), by name;
    None for any this transformers lacks."""
    helpers = {name: getattr(vision_utils, name, None) for name in LAYOUT_HELPERS}
    return {**helpers, "get_max_seqlen": get_max_seqlen}


@dataclass(frozen=True)
class VisionLayout:
    """What the tower would compute from `grid_thw`, plus the attention groups of both boundary tensors."""

    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    window_index: torch.Tensor
    cu_window_seqlens: torch.Tensor
    max_seqlen: int | None
    max_window_seqlen: int | None
    image_groups: list[WindowGroup]
    window_groups: list[WindowGroup]

    @classmethod
    def from_grid(cls, visual: nn.Module, grid_thw: torch.Tensor) -> VisionLayout:
        """`grid_thw` must be on the host (the processor's own tensor, or one read of a device copy)."""
        if grid_thw.device.type != "cpu":
            raise ValueError(f"VisionLayout needs the image grid on the host, got a tensor on {grid_thw.device}")
        position_ids = vision_utils.get_vision_position_ids(grid_thw, visual.spatial_merge_size)
        cu_seqlens, max_seqlen = vision_utils.get_vision_attention_seqlens(grid_thw, visual.config)
        window_index, cu_window_seqlens = vision_utils.get_vision_window_index(
            grid_thw,
            spatial_merge_size=visual.spatial_merge_size,
            window_size=visual.window_size,
            patch_size=visual.patch_size,
        )
        return cls(
            position_ids=position_ids,
            cu_seqlens=cu_seqlens,
            window_index=window_index,
            cu_window_seqlens=cu_window_seqlens,
            max_seqlen=max_seqlen,
            max_window_seqlen=get_max_seqlen(cu_window_seqlens, visual.config),
            image_groups=window_groups(cu_seqlens),
            window_groups=window_groups(cu_window_seqlens),
        )

    def to(self, device: torch.device) -> VisionLayout:
        """Copies every tensor to `device` without waiting for it (pinned host memory on CUDA), and registers the
        groups of the device boundary tensors so that the batched attention never reads those back."""
        if device.type == "cpu":
            moved = self
        else:

            def send(tensor: torch.Tensor | None) -> torch.Tensor | None:
                if tensor is None:
                    return None
                if device.type == "cuda":
                    tensor = tensor.pin_memory()
                return tensor.to(device, non_blocking=True)

            def send_groups(groups: list[WindowGroup]) -> list[WindowGroup]:
                return [(length, windows, send(index)) for length, windows, index in groups]

            moved = replace(
                self,
                position_ids=send(self.position_ids),
                cu_seqlens=send(self.cu_seqlens),
                window_index=send(self.window_index),
                cu_window_seqlens=send(self.cu_window_seqlens),
                image_groups=send_groups(self.image_groups),
                window_groups=send_groups(self.window_groups),
            )
        remember_window_groups(moved.cu_seqlens, moved.image_groups)
        remember_window_groups(moved.cu_window_seqlens, moved.window_groups)
        return moved

    def tower_kwargs(self) -> dict[str, torch.Tensor | int]:
        """The keyword arguments that transformers' vision helpers pop instead of computing (None ones are left
        out: the helpers would compute them again, and they are None only where nothing needs them)."""
        values = {
            "position_ids": self.position_ids,
            "cu_seqlens": self.cu_seqlens,
            "max_seqlen": self.max_seqlen,
            "window_index": self.window_index,
            "cu_window_seqlens": self.cu_window_seqlens,
            "max_window_seqlen": self.max_window_seqlen,
        }
        return {name: value for name, value in values.items() if value is not None}


__all__ = ["VisionLayout"]
