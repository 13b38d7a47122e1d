"""Pretraining the tiny generating Qwen2.5-VL on literal descriptions of synthetic images: the offline stand-in for
the image-text pretraining every real VLM has had before anyone fine-tunes it.

The real filter and captioners start from Qwen2.5-VL-7B-Instruct, which already sees shapes, colours and layouts;
fine-tuning only teaches it the task. A randomly initialised tiny model has to learn to see first, and a one-word
answer ("Yes"/"No") is too thin a signal for that: its filter loss stays at ln 2 for thousands of steps. Describing
images literally ("three outlined purple hexagons in a row, growing, on a cream background") gives a dozen
supervised words per image, about objects as well as their arrangement, so a few thousand steps teach the tiny
model to see. Only training-split images are described (training shapes and colours, relation families and
non-relational negatives); no relational or filter label is used.

The vocabulary of these descriptions, of the families' anonymous captions and the filter's answers is added to
the tiny tokenizer as whole words (see `tiny_vocabulary`), standing in for a real tokenizer's vocabulary.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.store import atomic_write
from training.synthetic.dataset import synthetic_examples
from training.synthetic.families import FAMILIES
from training.synthetic.literal import literal_description
from training.synthetic.negatives import negative_examples
from training.vlm.chat import QwenVLChat
from training.vlm.chat_model import ChatModelArguments
from training.vlm.sft_training import VLMSFTArguments, load_recipe, train_chat_sft
from training.vlm.tiny import build_tiny_chat


logger = logging.getLogger(__name__)

TINY_PRETRAIN_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "tiny-vlm-pretrain-cpu.yaml"
FILTER_ANSWERS = ("Yes", "No")
SUMMARY_FILE = "pretraining.json"


@dataclass
class LiteralPretrainingArguments:
    """Which generated images are described, and how the model is asked."""

    prompt: str = field(default="Describe the image.", metadata={"help": "the user turn beside each image"})
    synthetic_num_per_family: int = field(default=200, metadata={"help": "relational images per family (train)"})
    synthetic_negatives: int = field(default=600, metadata={"help": "non-relational images (train)"})
    synthetic_image_size: int = 112
    synthetic_seed: int = 0


def word_tokens(texts: Iterable[str]) -> list[str]:
    """Every whitespace-separated word of `texts`, bare and with a leading space (both spellings a byte-level BPE
    uses), in first-seen order."""
    words = dict.fromkeys(word for text in texts for word in text.split())
    return [piece for word in words for piece in (word, " " + word)]


def spaced_punctuation(text: str) -> str:
    """`text` with commas as words of their own, so every description word is one whole token."""
    return text.replace(",", " ,")


def tiny_vocabulary(image_size: int = 112, seed: int = 0) -> list[str]:
    """The whole words given to the tiny tokenizer: the filter's answers, the families' anonymous captions and
    literal descriptions of examples of both splits (so held-out colour and shape names are single, untrained
    tokens rather than byte pieces)."""
    descriptions = [
        spaced_punctuation(literal_description(example))
        for split in ("train", "heldout")
        for example in [
            *synthetic_examples(30, split, seed, image_size),
            *negative_examples(90, split, seed, image_size),
        ]
    ]
    captions = [family.caption for family in FAMILIES.values()]
    return list(dict.fromkeys([*FILTER_ANSWERS, *word_tokens([*captions, *descriptions])]))


def literal_rows(arguments: LiteralPretrainingArguments, split: str = "train") -> list[dict[str, Any]]:
    """SFT rows (image, prompt, literal description) for the generated images of `split`."""
    examples = [
        *synthetic_examples(
            arguments.synthetic_num_per_family, split, arguments.synthetic_seed, arguments.synthetic_image_size
        ),
        *negative_examples(
            arguments.synthetic_negatives, split, arguments.synthetic_seed, arguments.synthetic_image_size
        ),
    ]
    return [
        {
            "images": [example["image"]],
            "prompt": arguments.prompt,
            "answer": spaced_punctuation(literal_description(example)),
        }
        for example in examples
    ]


def load_pretraining_recipe(
    path: str | Path = TINY_PRETRAIN_RECIPE, overrides: Mapping[str, Any] | None = None
) -> tuple[ChatModelArguments, VLMSFTArguments, LiteralPretrainingArguments]:
    """The three argument groups of a pretraining recipe, `overrides` on top."""
    return load_recipe(path, (ChatModelArguments, VLMSFTArguments, LiteralPretrainingArguments), overrides)


def pretrain_tiny_chat(
    output_dir: str | Path, recipe: str | Path = TINY_PRETRAIN_RECIPE, overrides: Mapping[str, Any] | None = None
) -> QwenVLChat:
    """Builds the tiny random chat with `tiny_vocabulary()` and trains it (TRL SFT, in full) to describe training
    images literally; saves it to `output_dir` (a folder `QwenVLChat.from_pretrained` loads) with
    `pretraining.json` (rows, steps, seconds, final training loss)."""
    output_dir = Path(output_dir)
    model_arguments, sft_arguments, settings = load_pretraining_recipe(
        recipe, {**(overrides or {}), "output_dir": str(output_dir)}
    )
    if not model_arguments.tiny_model:
        raise ValueError(f"{recipe}: literal pretraining is for the tiny model (tiny_model: true)")
    vocabulary = tiny_vocabulary(settings.synthetic_image_size, settings.synthetic_seed)
    chat = build_tiny_chat(vocabulary, seed=model_arguments.initializer_seed, max_pixels=model_arguments.max_pixels)
    rows = literal_rows(settings)
    started = time.perf_counter()
    trained = train_chat_sft(chat, rows, sft_arguments)
    seconds = time.perf_counter() - started
    trained.save_pretrained(output_dir)
    (output_dir / "training_args.bin").unlink(missing_ok=True)  # the Trainer's pickle: the folder ships without one
    summary = {
        "rows": len(rows),
        "max_steps": sft_arguments.max_steps,
        "learning_rate": sft_arguments.learning_rate,
        "batch_size": sft_arguments.per_device_train_batch_size,
        "training_seconds": round(seconds, 1),
        "vocabulary_words": len(vocabulary),
        "prompt": settings.prompt,
    }
    atomic_write(output_dir / SUMMARY_FILE, (json.dumps(summary, indent=1) + "\n").encode())
    logger.info("pretrained the tiny chat on %d literal descriptions in %.0f s: %s", len(rows), seconds, output_dir)
    return trained
