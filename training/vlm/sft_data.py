"""Supervised fine-tuning batches for the generating Qwen2.5-VL: the loss falls on the answer only.

An SFT row is a dict (or a `datasets.Dataset` row) with `images` (a list of PIL images or file paths), `prompt`
(the user's text) and `answer` (the assistant's reply), and optionally `weight` (a float scaling the row's loss).
The prompt is rendered exactly as `QwenVLChat.build_batch` renders it for inference and the answer's tokens follow
it as the model would generate them (the answer tokenized on its own, then `<|im_end|>`), so what is trained is
what `generate` and `answer_probabilities` read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature

from training.vlm.chat import QwenVLChat


IGNORE_INDEX = -100
SFT_COLUMNS = ("images", "prompt", "answer")


def check_sft_row(row: Mapping[str, Any], position: int | str) -> None:
    """Raises a `ValueError` naming the row and the field when `row` is not an SFT row."""
    missing = [name for name in SFT_COLUMNS if name not in row]
    if missing:
        raise ValueError(
            f"SFT row {position} lacks {missing}; an SFT row has {list(SFT_COLUMNS)} (and optional weight)"
        )
    if isinstance(row["images"], (str, bytes)) or not isinstance(row["images"], Sequence):
        raise ValueError(f"SFT row {position}: images must be a list of images or file paths, got {row['images']!r}")
    for name in ("prompt", "answer"):
        if not isinstance(row[name], str) or not row[name]:
            raise ValueError(f"SFT row {position}: {name} must be a non-empty string, got {row[name]!r}")


class ChatSFTCollator:
    """SFT rows -> a right-padded training batch for `Qwen2_5_VLForConditionalGeneration`.

    The batch holds `input_ids`, `attention_mask`, `mm_token_type_ids`, `pixel_values`, `image_grid_thw` and
    `labels` (`-100` everywhere except the answer's tokens and the turn's closing `<|im_end|>`, so the model learns
    both the answer and where to stop), plus `weights` `(batch,)` when any row carries a `weight` (missing ones
    count 1).
    """

    def __init__(self, chat: QwenVLChat) -> None:
        self.chat = chat

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> BatchFeature:
        for position, row in enumerate(rows):
            check_sft_row(row, position)
        prompts, pixels = self.chat.render_prompts([(row["images"], row["prompt"]) for row in rows])
        tokenizer = self.chat.tokenizer
        sequences, label_rows = [], []
        for prompt, row in zip(prompts, rows, strict=True):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids = tokenizer(row["answer"], add_special_tokens=False)["input_ids"] + [self.chat.turn_end_id]
            sequences.append(prompt_ids + answer_ids)
            label_rows.append([IGNORE_INDEX] * len(prompt_ids) + answer_ids)
        length = max(map(len, sequences))
        pad_id = tokenizer.pad_token_id
        input_ids = torch.tensor([ids + [pad_id] * (length - len(ids)) for ids in sequences])
        labels = torch.tensor([ids + [IGNORE_INDEX] * (length - len(ids)) for ids in label_rows])
        attention_mask = torch.tensor([[1] * len(ids) + [0] * (length - len(ids)) for ids in sequences])
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": (input_ids == self.chat.image_token_id).int(),
            **pixels,
            "labels": labels,
        }
        if any(row.get("weight") is not None for row in rows):
            weights = [1.0 if row.get("weight") is None else float(row["weight"]) for row in rows]
            if min(weights) < 0:
                raise ValueError(f"SFT row weights must be non-negative, got {weights}")
            batch["weights"] = torch.tensor(weights, dtype=torch.float32)
        return BatchFeature(batch)
