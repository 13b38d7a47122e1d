"""How a chat answer is decoded: greedy by default, nucleus sampling when asked, repeatable under a seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Decoding:
    """Decoding settings for `QwenVLChat.generate`.

    Greedy (`do_sample=False`) is the default: answers are then a function of the weights and the prompt, so caches
    keyed by both stay valid. Sampling (`do_sample=True`) draws from the softmax at `temperature`, cut to the
    smallest set of tokens whose mass reaches `top_p`; with a `seed` the draws repeat run after run (each batch seeds
    its own generator from `seed` and the batch index, leaving the global random state untouched).

    Attributes:
        max_new_tokens: the longest answer, in tokens.
        do_sample: sample instead of taking the most likely token.
        temperature: softmax temperature when sampling (> 0).
        top_p: nucleus mass when sampling, in (0, 1].
        seed: makes sampling repeatable; `None` draws from torch's global generator.
    """

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive (use do_sample=False for greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `transformers`' `generate` (sampling knobs only when sampling, so greedy decoding
        draws no warnings about unused settings)."""
        if not self.do_sample:
            return {"max_new_tokens": self.max_new_tokens, "do_sample": False}
        return {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": None,  # nucleus sampling only: the model's generation config may carry a top_k of its own
        }
