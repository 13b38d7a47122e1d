"""Model sizes for the benchmarks and an analytic FLOP count of one image's forward.

`3b` and `7b` are Qwen2.5-VL-3B/7B-Instruct's architecture (vision tower, language model widths, depths, heads) with
random weights: speed does not depend on weight values. Their vocabulary is the offline test tokenizer's (a few
hundred rows instead of 152k): the embedding lookup costs nothing either way and relsim computes no logits.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from training.tiny_backbone import TINY_PRESETS, TinyBackboneSizes


QWEN2_5_VL_VISION = {
    "vision_hidden_size": 1280,
    "vision_depth": 32,
    "vision_heads": 16,
    "vision_intermediate_size": 3420,
    "fullatt_block_indexes": (7, 15, 23, 31),
    "window_size": 112,
}
PRESETS: dict[str, TinyBackboneSizes] = {
    **TINY_PRESETS,
    "3b": TinyBackboneSizes(text_hidden_size=2048, text_layers=36, text_heads=16, text_kv_heads=2,
                            text_intermediate_size=11008, **QWEN2_5_VL_VISION),
    "7b": TinyBackboneSizes(text_hidden_size=3584, text_layers=28, text_heads=28, text_kv_heads=4,
                            text_intermediate_size=18944, **QWEN2_5_VL_VISION),
}  # fmt: skip
DEFAULT_IMAGE_SIZE = {"tiny": 112, "small": 224, "3b": 448, "7b": 448}
NARROW_HEAD_DIM = 8
# dense bf16 tensor-core peaks (TFLOP/s) for the roofline fraction
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def narrowed(sizes: TinyBackboneSizes, head_dim: int = NARROW_HEAD_DIM) -> TinyBackboneSizes:
    """The same depths, heads, windows and full-attention blocks at a head width of `head_dim`.

    Such a model launches exactly the kernels of the full-width one (the same attention calls per window, the same
    layers) for a small fraction of its FLOPs, so on a CPU it exposes the per-call overhead that makes the issue's
    GPU profile launch-bound, and its call counts are those of the real model.
    """
    return replace(
        sizes,
        text_hidden_size=sizes.text_heads * head_dim,
        text_intermediate_size=2 * sizes.text_heads * head_dim,
        vision_hidden_size=sizes.vision_heads * head_dim,
        vision_intermediate_size=2 * sizes.vision_heads * head_dim,
    )


def preset_sizes(preset: str, narrow: bool = False) -> TinyBackboneSizes:
    return narrowed(PRESETS[preset]) if narrow else PRESETS[preset]


@dataclass
class FlopCount:
    vision: float
    language: float

    @property
    def total(self) -> float:
        return self.vision + self.language

    @property
    def training_step(self) -> float:
        """Model FLOPs of one training sample with a frozen backbone and LoRA: the vision tower forward (it needs no
        backward) and the language model forward plus its activation gradients (about one forward more; the LoRA
        weight gradients are negligible). Recomputation (checkpointing, GradCache's replay) is overhead and is not
        counted, as in model-FLOP utilisation."""
        return self.vision + 2 * self.language


def image_forward_flops(sizes: TinyBackboneSizes, image_size: int, prompt_tokens: int, patch: int = 14) -> FlopCount:
    """Multiply-adds x 2 of one image through the vision tower and the language model (no logits)."""
    grid = image_size // patch
    patches = grid * grid
    hidden, inner = sizes.vision_hidden_size, sizes.vision_intermediate_size
    window_tokens = min((sizes.window_size // patch) ** 2, patches)
    vision = 2 * patches * (3 * 2 * patch * patch) * hidden  # patch embedding (temporal patch 2)
    for block in range(sizes.vision_depth):
        attended = patches if block in sizes.fullatt_block_indexes else window_tokens
        vision += 2 * patches * (4 * hidden * hidden + 3 * hidden * inner) + 4 * patches * attended * hidden
    merged = patches // 4
    vision += 2 * merged * (4 * hidden * 4 * hidden + 4 * hidden * sizes.text_hidden_size)
    text, text_inner = sizes.text_hidden_size, sizes.text_intermediate_size
    kv_width = text // sizes.text_heads * sizes.text_kv_heads
    sequence = merged + prompt_tokens
    per_layer = 2 * sequence * (2 * text * text + 2 * text * kv_width + 3 * text * text_inner)
    per_layer += 2 * sequence * sequence * text  # causal attention: half of the 4*s^2*h of full attention
    return FlopCount(vision=float(vision), language=float(per_layer * sizes.text_layers))


def prompt_token_count(attention_mask: torch.Tensor, image_size: int, patch: int = 14, merge: int = 2) -> int:
    """Text tokens around one centre-cropped square image in a sample of a processor batch."""
    return int(attention_mask[0].sum()) - (image_size // (patch * merge)) ** 2


def achieved(items_per_second: float, flops_per_item: float, peak: float | None) -> dict[str, float | None]:
    """Achieved TFLOP/s and its fraction of the dense peak (None without a known peak, e.g. on CPU)."""
    tflops = items_per_second * flops_per_item / 1e12
    return {"achieved_tflops": tflops, "roofline_fraction": tflops / peak if peak else None}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((value for key, value in PEAK_TFLOPS.items() if key in name), None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds_interleaved(
    device: torch.device, paths: dict[str, Callable[[], object]], rounds: int, warm_up: bool = True
) -> dict[str, float]:
    """Median seconds per call of each path, timed in interleaved rounds (after one warm-up call each, unless the
    caller has warmed them up).

    Interleaving puts every path under the same machine conditions (clock changes, neighbours), so their ratio
    holds even where absolute times drift; the median drops the odd disturbed round.
    """
    if warm_up:
        for run in paths.values():
            run()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, run in paths.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


class AttentionCallCounter:
    """Counts `scaled_dot_product_attention` calls (transformers' sdpa backend and relsim's batched path use it)."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = torch.nn.functional.scaled_dot_product_attention

    def __enter__(self) -> AttentionCallCounter:
        original = self._original

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        torch.nn.functional.scaled_dot_product_attention = counted
        return self

    def __exit__(self, *exc) -> None:
        torch.nn.functional.scaled_dot_product_attention = self._original
