"""Training the relational filter: TRL SFT on the fixed question with the class balance applied."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import datasets

from training.pipeline.filter.rows import balance_rows, filter_label_rows
from training.vlm.chat import QwenVLChat
from training.vlm.sft_training import VLMSFTArguments, train_chat_sft


logger = logging.getLogger(__name__)


def train_filter(
    chat: QwenVLChat,
    dataset_or_rows: datasets.Dataset | Sequence[Mapping[str, Any]],
    arguments: VLMSFTArguments,
    balance: str = "weight",
) -> QwenVLChat:
    """Fine-tunes `chat` as the filter and saves it to `arguments.output_dir`.

    Args:
        dataset_or_rows: a `filter_labels` dataset (`image`, `label`) or SFT rows from `filter_rows`.
        balance: "weight" (default: inverse class frequency, see `training.pipeline.filter.rows`), "oversample" or
            "none".
    """
    if isinstance(dataset_or_rows, datasets.Dataset) and "answer" not in dataset_or_rows.column_names:
        rows = filter_label_rows(dataset_or_rows)
    else:
        rows = [dict(row) for row in dataset_or_rows]
    balanced = balance_rows(rows, balance, seed=arguments.seed)
    logger.info("filter training rows: %s, balance %s", dict(Counter(row["answer"] for row in rows)), balance)
    return train_chat_sft(chat, balanced, arguments)
