"""Which generating Qwen2.5-VL a recipe starts from, and loading it: the `model` part of the filter, captioner and
tiny-pretraining recipes (SFT settings are `training.vlm.sft_training`'s)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from training.vlm.chat import QwenVLChat
from training.vlm.tiny import build_tiny_chat, load_pretrained_tiny_chat


@dataclass
class ChatModelArguments:
    """Which generating Qwen2.5-VL to start from: a hub id or folder (optionally with a LoRA adapter merged in), or
    the tiny random model."""

    model_name_or_path: str = field(
        default="Qwen/Qwen2.5-VL-7B-Instruct", metadata={"help": "Qwen2.5-VL hub id or folder"}
    )
    adapter: str | None = field(default=None, metadata={"help": "a PEFT LoRA folder or hub id merged in first"})
    tiny_model: bool = field(default=False, metadata={"help": "the tiny random Qwen2.5-VL (CPU recipes and tests)"})
    tiny_pretrained: bool = field(
        default=False,
        metadata={
            "help": "the shipped tiny Qwen2.5-VL pretrained on literal descriptions (training/vlm/tiny_pretraining.py)"
        },
    )
    tiny_extra_tokens: list[str] = field(
        default_factory=lambda: ["Yes", "No"], metadata={"help": "words added as whole tokens to the tiny tokenizer"}
    )
    initializer_seed: int = field(default=0, metadata={"help": "seed of the tiny model's random weights"})
    dtype: str = field(default="float32", metadata={"help": "weights dtype: float32, bfloat16 or float16"})
    max_pixels: int = field(default=448 * 448, metadata={"help": "image budget in pixels (aspect kept)"})
    device: str = field(default="cpu", metadata={"help": "where the model runs: cpu, cuda, cuda:1 ..."})

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.tiny_model and self.tiny_pretrained:
            raise ValueError("set one of tiny_model (random weights) and tiny_pretrained (the shipped pretrained tiny)")

    def load_chat(self) -> QwenVLChat:
        """The chat these arguments name."""
        if self.tiny_pretrained:
            return load_pretrained_tiny_chat(max_pixels=self.max_pixels)
        if self.tiny_model:
            return build_tiny_chat(self.tiny_extra_tokens, seed=self.initializer_seed, max_pixels=self.max_pixels)
        return QwenVLChat.from_pretrained(
            self.model_name_or_path,
            device=self.device,
            dtype=getattr(torch, self.dtype),
            max_pixels=self.max_pixels,
            adapter=self.adapter,
        )
