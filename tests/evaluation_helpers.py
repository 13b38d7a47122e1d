"""Small on-disk pools, tiny CLIP/DINOv2 folders and an in-memory method for the evaluation tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from tokenizers import pre_tokenizers
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Dinov2Config, Dinov2Model
from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from training.evaluation.methods.base import EmbeddingMethod
from training.evaluation.pool import PoolItem, write_pool
from training.image_ids import url_image_hash


CAPTIONS = ["arrange {Object}s from small to large", "one {Object} differs from the rest", "{Object}s mirrored"]


def pool_hash(name: str) -> str:
    """The real-looking image hash (md5, 32 hex) that `write_pool_folder(hashed=True)` gives the image `name`."""
    return url_image_hash(name)


def write_pool_folder(
    folder: Path, groups: int = 3, per_group: int = 3, distractors: int = 4, hashed: bool = False
) -> Path:
    """Images on disk and their manifest: `groups` captioned seed groups (test split) plus uncaptioned distractors;
    each group's images share a dominant colour, so a colour embedding retrieves within the group.

    Args:
        hashed: name the images by `pool_hash(name)` (what the report needs for thumbnail files) instead of by
            their readable names (`g0_1`, `d2`).
    """
    image_hash = pool_hash if hashed else str
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = []
    for group in range(groups):
        base = np.array([255 * (group == 0), 255 * (group == 1), 255 * (group == 2)], dtype=np.int16)
        for index in range(per_group):
            pixels = np.clip(base + rng.integers(-40, 40, (48, 64, 3)), 0, 255).astype(np.uint8)
            path = folder / f"g{group}_{index}.png"
            PIL.Image.fromarray(pixels).save(path)
            items.append(
                PoolItem(image_hash(f"g{group}_{index}"), path.name, "test", CAPTIONS[group % len(CAPTIONS)], group)
            )
    for index in range(distractors):
        pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        path = folder / f"d{index}.png"
        PIL.Image.fromarray(pixels).save(path)
        items.append(PoolItem(image_hash(f"d{index}"), path.name, "distractor"))
    return write_pool(items, folder / "pool.jsonl")


class MeanColourMethod(EmbeddingMethod):
    """A transparent method for the plumbing tests: the normalised mean RGB of each image."""

    name = "mean-colour"

    def __init__(self, fail_after_batches: int | None = None) -> None:
        super().__init__("cpu")
        self.calls = 0
        self.fail_after_batches = fail_after_batches

    def identity(self) -> dict:
        return {"version": 1}

    def preprocess(self, images: Sequence[PIL.Image.Image]) -> torch.Tensor:
        return torch.stack([torch.from_numpy(np.asarray(image, dtype=np.float32)).mean((0, 1)) for image in images])

    def embed(self, batch: torch.Tensor, image_hashes: Sequence[str]) -> torch.Tensor:
        if self.fail_after_batches is not None and self.calls >= self.fail_after_batches:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return torch.nn.functional.normalize(batch + 1.0, dim=-1)


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """CLIP's tokenizer over a byte-level alphabet without merges: every character is a token (514 in all)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for character in alphabet:
        vocab[character] = len(vocab)
        vocab[character + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def save_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random CLIP with its tokenizer and PIL image processor, as a hub folder."""
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1,
                     "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                     "max_position_embeddings": 77},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 37,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def save_tiny_dinov2(folder: Path, seed: int = 0) -> Path:
    config = Dinov2Config(image_size=28, patch_size=14, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=37)  # fmt: skip
    torch.manual_seed(seed)
    Dinov2Model(config).save_pretrained(folder)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}).save_pretrained(folder)
    return folder
