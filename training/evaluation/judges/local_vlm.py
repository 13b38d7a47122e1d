"""A local transformers judge: Qwen2.5-VL asked the same question, greedy, both images in one user turn."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import PIL.Image

from training.evaluation.judges.cache import JudgeFailure
from training.evaluation.judges.prompt import PROMPT_VERSION, RELATIONAL_SIMILARITY_QUESTION
from training.store import model_fingerprint
from training.vlm.chat import QwenVLChat


class LocalVLMJudge:
    def __init__(self, chat: QwenVLChat, batch_size: int = 8, max_new_tokens: int = 16) -> None:
        self.chat = chat
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.weights = model_fingerprint(chat.model_name_or_path, chat.model)

    def identity(self) -> dict[str, Any]:
        return {
            "judge": "local-vlm",
            "model": self.chat.model_name_or_path,
            "weights": self.weights,
            "prompt": PROMPT_VERSION,
        }

    def ask_many(self, pairs: Sequence[tuple[PIL.Image.Image, PIL.Image.Image]]) -> Iterator[str | JudgeFailure]:
        """Answers batch by batch, each batch's answers yielded as soon as it is generated."""
        for start in range(0, len(pairs), self.batch_size):
            conversations = [
                ([query, candidate], "The first image is A, the second is B. " + RELATIONAL_SIMILARITY_QUESTION)
                for query, candidate in pairs[start : start + self.batch_size]
            ]
            for answer in self.chat.generate(conversations, max_new_tokens=self.max_new_tokens):
                yield answer if answer.strip() else JudgeFailure(f"empty answer {answer!r}")
