"""A tiny random generating Qwen2.5-VL (with its language-model head) for tests, CPU recipes and the pipeline demo.

It shares training.tiny_backbone's architecture sizes and offline tokenizer. That tokenizer spells short answers
letter by letter ("Yes" is three tokens), so answer probabilities would compare first letters; the answers are
added here as whole tokens instead, leaving the shared tokenizer (and every figure built on it) untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from training.tiny_backbone import TinyBackboneSizes, build_tiny_tokenizer, tiny_backbone_config
from training.vlm.chat import QwenVLChat


TINY_CHAT_NAME = "tiny-random-qwen2.5-vl-chat"
# The tiny chat pretrained on literal descriptions (`python -m training.vlm pretrain-tiny`): the offline "base VLM".
PRETRAINED_TINY_CHAT = Path(__file__).resolve().parent / "pretrained_tiny"
DEFAULT_SIZES = TinyBackboneSizes()


def build_tiny_chat(
    extra_tokens: Sequence[str] = ("Yes", "No"),
    seed: int = 0,
    sizes: TinyBackboneSizes = DEFAULT_SIZES,
    max_pixels: int = 112 * 112,
) -> QwenVLChat:
    """A randomly initialised tiny Qwen2_5_VLForConditionalGeneration and its chat wrapper; the same `seed` gives the
    same weights.

    Args:
        extra_tokens: added to the tokenizer as normal (non-special) tokens, so each is one token when written.
        max_pixels: the image budget (112x112 gives 16 image tokens).
    """
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_tokens([token for token in extra_tokens if token not in tokenizer.get_vocab()])
    config = tiny_backbone_config(tokenizer, sizes)  # sized from len(tokenizer): the added tokens have rows
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return QwenVLChat(model, tokenizer, Qwen2VLImageProcessorPil(), TINY_CHAT_NAME, max_pixels)


def save_tiny_chat(
    directory: str | Path,
    extra_tokens: Sequence[str] = ("Yes", "No"),
    seed: int = 0,
    sizes: TinyBackboneSizes = DEFAULT_SIZES,
    max_pixels: int = 112 * 112,
) -> Path:
    """Writes `build_tiny_chat(...)` as a folder `QwenVLChat.from_pretrained` loads (pass the same `max_pixels`
    there: it is a setting of the wrapper, not of the folder)."""
    return build_tiny_chat(extra_tokens, seed, sizes, max_pixels).save_pretrained(directory)


def add_word_tokens(chat: QwenVLChat, words: Sequence[str]) -> int:
    """Adds the `words` the chat's tokenizer lacks as whole tokens, with embedding rows (mean-initialised) for them,
    so text the tiny tokenizer never met (a new caption vocabulary) is not spelled byte by byte. Returns how many
    tokens were added."""
    missing = [word for word in dict.fromkeys(words) if word not in chat.tokenizer.get_vocab()]
    added = chat.tokenizer.add_tokens(missing)
    if len(chat.tokenizer) > chat.model.get_input_embeddings().num_embeddings:
        chat.model.resize_token_embeddings(len(chat.tokenizer), pad_to_multiple_of=64)
    return added


def load_pretrained_tiny_chat(max_pixels: int = 112 * 112, directory: str | Path = PRETRAINED_TINY_CHAT) -> QwenVLChat:
    """The shipped tiny chat pretrained on literal descriptions of synthetic images (see
    training/vlm/tiny_pretraining.py and its `pretraining.json`), a fresh copy on every call."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{directory} holds no pretrained tiny chat; rebuild it with "
            f"`python -m training.vlm pretrain-tiny --output {directory}`"
        )
    return QwenVLChat.from_pretrained(str(directory), max_pixels=max_pixels)
