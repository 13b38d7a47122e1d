"""Tiny random Qwen2.5-VL backbones and an offline tokenizer, for tests, the offline demo and CPU benchmarks.

No weights or tokenizer files can be downloaded here, so the tokenizer is a byte-level BPE trained on a few
sentences and given Qwen2.5-VL's special tokens (in Qwen's order) and chat format; the backbone has Qwen2.5-VL's
architecture at toy sizes. Everything is deterministic given the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AddedToken, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2TokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from modeling_relsim import RelSimConfig, RelSimModel, RelSimProcessor


# Qwen2.5-VL's added special tokens, in the order that gives them consecutive ids after the BPE vocabulary.
QWEN2_5_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

# The Qwen2.5-VL chat format (ChatML turns, a default system turn, an image as vision_start/image_pad/vision_end).
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_CORPUS = (
    "You are a helpful assistant.",
    "Look past the objects, colours and style of this image and attend to its underlying relational logic: "
    "how its parts relate, change, repeat or are arranged.",
    "Arrange {Object}s from smallest to largest to show progression.",
    "Transformation of {Subject} over time, from fresh to spent.",
    "A grid of identical {Object}s with one that differs from the rest.",
    "Many small {Object}s forming the outline of a large {Shape}.",
    "An {Object} nested inside a larger {Object} of the same kind.",
    "Panels that count one, two and three {Object}s.",
    "The quick brown fox jumps over the lazy dog 0123456789.",
)


@dataclass(frozen=True)
class TinyBackboneSizes:
    """Toy sizes that keep Qwen2.5-VL's structure: windowed + full vision attention, GQA, M-RoPE."""

    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate_size: int = 128
    vision_hidden_size: int = 32
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate_size: int = 64
    fullatt_block_indexes: tuple[int, ...] = (1,)
    window_size: int = 56


TINY_PRESETS = {
    "tiny": TinyBackboneSizes(),
    # four times the tiny one's vision width and depth: enough to see one odd object among many at 112 px on a CPU
    "medium": TinyBackboneSizes(
        text_hidden_size=128,
        text_intermediate_size=256,
        vision_hidden_size=64,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate_size=128,
        fullatt_block_indexes=(1, 3),
    ),
    # about 4M parameters: still minutes on a GPU, for the demo's --device cuda run
    "small": TinyBackboneSizes(
        text_hidden_size=256,
        text_layers=4,
        text_heads=8,
        text_kv_heads=4,
        text_intermediate_size=768,
        vision_hidden_size=128,
        vision_depth=4,
        vision_heads=4,
        vision_intermediate_size=384,
        fullatt_block_indexes=(1, 3),
        window_size=112,
    ),
}


def build_tiny_tokenizer(vocab_size: int = 400) -> Qwen2TokenizerFast:
    """A byte-level BPE with Qwen2.5-VL's special tokens and chat template, built offline in milliseconds."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(list(_CORPUS) * 4, trainer)
    bpe.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in QWEN2_5_VL_SPECIAL_TOKENS])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
    )
    tokenizer.chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    return tokenizer


def tiny_backbone_config(tokenizer: Any, sizes: TinyBackboneSizes = TinyBackboneSizes()) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config whose special-token ids match `tokenizer`, with spare vocabulary rows (as Qwen has)."""
    head_dim = sizes.text_hidden_size // sizes.text_heads
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    vocab_size = -(-(len(tokenizer) + 16) // 64) * 64
    token_id = tokenizer.convert_tokens_to_ids
    text_config = {
        "hidden_size": sizes.text_hidden_size,
        "num_hidden_layers": sizes.text_layers,
        "num_attention_heads": sizes.text_heads,
        "num_key_value_heads": sizes.text_kv_heads,
        "intermediate_size": sizes.text_intermediate_size,
        "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section, "rope_theta": 1_000_000.0},
        "bos_token_id": token_id("<|endoftext|>"),
        "eos_token_id": token_id("<|im_end|>"),
        "pad_token_id": token_id("<|endoftext|>"),
    }
    vision_config = {
        "depth": sizes.vision_depth,
        "hidden_size": sizes.vision_hidden_size,
        "num_heads": sizes.vision_heads,
        "intermediate_size": sizes.vision_intermediate_size,
        "out_hidden_size": sizes.text_hidden_size,
        "fullatt_block_indexes": list(sizes.fullatt_block_indexes),
        "window_size": sizes.window_size,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )


def build_tiny_processor(image_size: int = 112, **settings: Any) -> RelSimProcessor:
    """A RelSimProcessor over the offline tokenizer and the PIL Qwen2-VL image processor."""
    return RelSimProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=build_tiny_tokenizer(),
        image_size=image_size,
        **settings,
    )


def build_tiny_model(
    processor: RelSimProcessor,
    seed: int = 0,
    sizes: TinyBackboneSizes = TinyBackboneSizes(),
    **config_kwargs: Any,
) -> RelSimModel:
    """A randomly initialised tiny RelSimModel that agrees with `processor`."""
    config = RelSimConfig(
        backbone_config=tiny_backbone_config(processor.tokenizer, sizes),
        query_token_id=processor.query_token_id,
        **processor.settings(),
        **config_kwargs,
    )
    torch.manual_seed(seed)
    return RelSimModel(config).eval()


def save_tiny_backbone(directory: str | Path, seed: int = 0, sizes: TinyBackboneSizes = TinyBackboneSizes()) -> Path:
    """Writes a hub-like Qwen2.5-VL folder (weights with lm_head, tokenizer, image processor, chat template)."""
    directory = Path(directory)
    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_backbone_config(tokenizer, sizes)).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    Qwen2VLImageProcessorPil().save_pretrained(directory)
    return directory


__all__ = [
    "QWEN2_5_VL_CHAT_TEMPLATE",
    "QWEN2_5_VL_SPECIAL_TOKENS",
    "TINY_PRESETS",
    "TinyBackboneSizes",
    "build_tiny_model",
    "build_tiny_processor",
    "build_tiny_tokenizer",
    "save_tiny_backbone",
    "tiny_backbone_config",
]
