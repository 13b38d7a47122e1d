"""Qwen2.5-VL's windowed vision attention, batched: all windows of one length go through a single attention call.

transformers runs the vision tower's non-flash attention one window at a time: a 448x448 image has 64 windows in
each of the 28 windowed blocks, so a batch of 32 images issues tens of thousands of tiny kernel launches. Windows of
equal length are independent sequences of the same shape, so they stack into one `(windows, heads, length, dim)`
call; ragged windows (at the right and bottom edges of a grid that is not a multiple of the window) form groups of
their own lengths. The numbers are those of the per-window loop (same kernels, same order of reductions per window).

The attention modules keep their weights and state-dict names: only their class is swapped for a subclass whose
forward batches the windows, so checkpoints, PEFT targets and the full-attention blocks (one window per image) are
untouched. Flash-attention backends already take all windows in one varlen call and keep their own forward.

The subclass is written against transformers' attention class (its forward's arguments, `qkv`/`proj`/`num_heads`/
`scaling`, the module's `apply_rotary_pos_emb_vision`); `fast_path_compat.py` checks those when a model is built, and
RelSimModel keeps transformers' own class where they differ.
"""

from __future__ import annotations

import itertools
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


VISION_ATTENTION_MODES = ("batched", "reference")
_BATCHED_CLASSES: dict[type, type] = {}
# (window length, number of windows, token index of the group's windows or None when they are every token in order)
WindowGroup = tuple[int, int, torch.Tensor | None]


def window_groups(cu_seqlens: torch.Tensor) -> list[WindowGroup]:
    """`(length, windows, token_index)` per distinct window length; `token_index` is None when that group is every
    token in order (the common square case), so no gather is needed. One host read of the window boundaries (none
    when RelSimModel has registered them, see `remember_window_groups`)."""
    boundaries = cu_seqlens.tolist()
    starts, lengths = boundaries[:-1], [end - start for start, end in itertools.pairwise(boundaries)]
    by_length: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths, strict=True):
        if length > 0:
            by_length.setdefault(length, []).append(start)
    total = boundaries[-1] - boundaries[0]
    groups = []
    for length, window_starts in by_length.items():
        if len(by_length) == 1 and boundaries[0] == 0 and len(window_starts) * length == total:
            groups.append((length, len(window_starts), None))
            continue
        index = (torch.tensor(window_starts)[:, None] + torch.arange(length)[None, :]).flatten()
        groups.append((length, len(window_starts), index.to(cu_seqlens.device)))
    return groups


class BatchedWindowAttentionMixin:
    """Overrides the forward of transformers' `Qwen2_5_VLVisionAttention` (same arguments)."""

    def forward(
        self,
        hidden_states: torch.Tensor,
        cu_seqlens: torch.Tensor,
        rotary_pos_emb: torch.Tensor | None = None,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if "flash" in str(getattr(self.config, "_attn_implementation", "")):
            return super().forward(  # type: ignore[misc]
                hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs
            )
        seq_length = hidden_states.shape[0]
        query, key, value = (
            self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        )
        if position_embeddings is None:
            embedding = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
            position_embeddings = (embedding.cos(), embedding.sin())
        query, key = self._apply_rotary(query, key, *position_embeddings)
        groups = _cached_groups(self, cu_seqlens)
        # one group in token order (the common centre-cropped case) needs neither gather nor scatter
        output = None if groups[0][2] is None else torch.empty_like(query)
        for length, windows, index in groups:
            q, k, v = (t if index is None else t[index] for t in (query, key, value))
            q, k, v = (t.view(windows, length, self.num_heads, -1).transpose(1, 2) for t in (q, k, v))
            attended = F.scaled_dot_product_attention(q, k, v, scale=self.scaling)
            attended = attended.transpose(1, 2).reshape(windows * length, self.num_heads, -1)
            if output is None:
                output = attended
            else:
                output[index] = attended
        return self.proj(output.reshape(seq_length, -1))


def _cached_groups(module: nn.Module, cu_seqlens: torch.Tensor) -> list[WindowGroup]:
    """The tower hands the same boundary tensor to every block of a forward: group once per tensor, not per block."""
    cached = _GROUP_CACHE.get(id(cu_seqlens))
    if cached is not None and cached[0] is cu_seqlens:  # the stored reference keeps the id from being reused
        return cached[1]
    groups = window_groups(cu_seqlens)
    remember_window_groups(cu_seqlens, groups)
    return groups


def remember_window_groups(cu_seqlens: torch.Tensor, groups: list[WindowGroup]) -> None:
    """Registers the groups of a boundary tensor computed on the host, so the blocks that receive that very tensor
    (on the device) use them instead of reading it back."""
    if len(_GROUP_CACHE) >= 8:
        _GROUP_CACHE.clear()
    _GROUP_CACHE[id(cu_seqlens)] = (cu_seqlens, groups)


_GROUP_CACHE: dict[int, tuple[torch.Tensor, list[WindowGroup]]] = {}


def set_vision_attention(visual: nn.Module, mode: str) -> None:
    """Switches every vision block's attention between `"batched"` and transformers' `"reference"` loop."""
    if mode not in VISION_ATTENTION_MODES:
        raise ValueError(f"vision_attention must be one of {VISION_ATTENTION_MODES}, got {mode!r}")
    for block in visual.blocks:
        attention = block.attn
        base = next(cls for cls in type(attention).__mro__ if cls not in _BATCHED_CLASSES.values()
                    and cls is not BatchedWindowAttentionMixin)  # fmt: skip
        if mode == "reference":
            attention.__class__ = base
            continue
        if base not in _BATCHED_CLASSES:
            # the rotary helper of the transformers version that defined the attention class
            rotary = staticmethod(sys.modules[base.__module__].apply_rotary_pos_emb_vision)
            _BATCHED_CLASSES[base] = type(
                f"Batched{base.__name__}", (BatchedWindowAttentionMixin, base), {"_apply_rotary": rotary}
            )
        attention.__class__ = _BATCHED_CLASSES[base]


__all__ = ["VISION_ATTENTION_MODES", "WindowGroup", "remember_window_groups", "set_vision_attention", "window_groups"]
