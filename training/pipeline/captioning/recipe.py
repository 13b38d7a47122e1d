"""Captioner recipes: one YAML file holds the model (`ChatModelArguments`), the captioner's prompt and decoding
(`CaptionerArguments`), its training data (`CaptionerDataArguments`) and TRL's training arguments
(`VLMSFTArguments`); `training/configs/captioner-*.yaml` are the shipped ones.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.pipeline.captioning.group import seed_groups_from_dataset, seed_groups_from_json
from training.pipeline.captioning.prompts import CaptionPrompt, single_image_prompt
from training.pipeline.captioning.quality import evaluate_captioner, load_text_encoder
from training.pipeline.captioning.single import SingleImageCaptioner, sft_rows_from_groups, train_single_captioner
from training.vlm.chat_model import ChatModelArguments
from training.vlm.decoding import Decoding
from training.vlm.sft_training import VLMSFTArguments, load_recipe


logger = logging.getLogger(__name__)


@dataclass
class CaptionerArguments:
    """The captioner's prompt and decoding (see `single` for why greedy is the default)."""

    prompt: str | None = field(
        default=None,
        metadata={
            "help": "the captioning prompt; unset: our own (prompts.SINGLE_IMAGE_PROMPT). The released adapter was "
            "trained with the official wording: pass that exact text when captioning with it"
        },
    )
    max_new_tokens: int = field(default=128, metadata={"help": "longest caption, in tokens (official: 128)"})
    do_sample: bool = field(default=False, metadata={"help": "sample instead of greedy (official HF example: true)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature (official HF example: 0.7)"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus mass when sampling (official HF example: 0.9)"})
    decoding_seed: int | None = field(default=None, metadata={"help": "makes sampled captions repeatable"})
    generation_batch_size: int = field(default=8, metadata={"help": "images per generate call (left padded)"})

    def decoding(self) -> Decoding:
        if not self.do_sample:
            return Decoding(max_new_tokens=self.max_new_tokens)
        return Decoding(self.max_new_tokens, True, self.temperature, self.top_p, self.decoding_seed)

    def caption_prompt(self) -> CaptionPrompt:
        return single_image_prompt(self.prompt)


@dataclass
class CaptionerDataArguments:
    """Where the seed groups come from (real data), or how many synthetic ones to draw (the offline recipe)."""

    seed_group_json: str | None = field(default=None, metadata={"help": "the official seed_group.json"})
    image_dir: str | None = field(default=None, metadata={"help": "its images, named <md5(url)>.<ext>"})
    seed_groups_dataset: str | None = field(
        default=None, metadata={"help": "or a built seed_groups dataset with images (datasets.save_to_disk folder)"}
    )
    heldout_group_fraction: float = field(
        default=0.0, metadata={"help": "groups kept out of training for the quality check (official: 0, test=train)"}
    )
    split_seed: int = 0
    synthetic_world: str = field(
        default="families",
        metadata={
            "help": "synthetic seed groups: of the eight relation families, or of the compositional world's "
            "training relations (then *_per_family means per relation, and held-out looks of seen and unseen "
            "relations are scored apart)"
        },
    )
    synthetic_max_relations: int | None = field(
        default=None, metadata={"help": "relations world: at most this many of each relation split (quick runs)"}
    )
    synthetic_num_per_family: int = field(default=0, metadata={"help": "synthetic training images per family"})
    synthetic_eval_num_per_family: int = field(default=0, metadata={"help": "held-out-attribute images per family"})
    synthetic_group_size: int = field(default=4, metadata={"help": "images per synthetic seed group"})
    synthetic_image_size: int = 112
    synthetic_seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_group_fraction < 1:
            raise ValueError(f"heldout_group_fraction must be in [0, 1), got {self.heldout_group_fraction}")
        if self.synthetic_world not in ("families", "relations"):
            raise ValueError(f"synthetic_world must be 'families' or 'relations', got {self.synthetic_world!r}")
        if self.synthetic_group_size < 2:
            raise ValueError(f"synthetic_group_size must be at least 2, got {self.synthetic_group_size}")


@dataclass
class CaptionerRecipe:
    model: Any  # training.vlm.chat_model.ChatModelArguments
    captioner: CaptionerArguments
    data: CaptionerDataArguments
    sft: Any  # training.vlm.sft_training.VLMSFTArguments


def load_captioner_recipe(path: str | Path, overrides: Mapping[str, Any] | None = None) -> CaptionerRecipe:
    """Parses a captioner recipe; unknown keys are refused with their names."""
    model, captioner, data, sft = load_recipe(
        path, [ChatModelArguments, CaptionerArguments, CaptionerDataArguments, VLMSFTArguments], overrides
    )
    return CaptionerRecipe(model, captioner, data, sft)


def load_seed_groups(data: CaptionerDataArguments) -> list:
    """The recipe's seed groups, from `seed_group_json` + `image_dir` or a `seed_groups_dataset` folder."""
    if data.seed_group_json:
        if not data.image_dir:
            raise ValueError("seed_group_json needs image_dir, the folder of its images (<md5(url)>.<ext>)")
        return seed_groups_from_json(data.seed_group_json, data.image_dir)
    if data.seed_groups_dataset:
        import datasets

        loaded = datasets.load_from_disk(data.seed_groups_dataset)
        return seed_groups_from_dataset(loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded)
    raise ValueError("the recipe names no seed groups: set seed_group_json + image_dir, or seed_groups_dataset")


def split_groups(groups: list, fraction: float, seed: int) -> tuple[list, list]:
    """(training groups, held-out groups): whole groups held out, so a held-out caption was never trained on."""
    if fraction == 0:
        return groups, []
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    heldout = set(order[: max(1, round(len(groups) * fraction))])
    return [g for i, g in enumerate(groups) if i not in heldout], [g for i, g in enumerate(groups) if i in heldout]


def train_captioner_from_recipe(recipe: CaptionerRecipe):
    """Trains the single-image captioner on the recipe's seed groups and, when groups are held out, measures its
    quality on them (MiniLM cosine to the group caption, placeholder rate, leak rate when literal descriptions are
    known: not for real groups). Writes `quality.json` beside the weights.

    Returns:
        `(chat, fingerprint, quality or None)`.
    """
    train_groups, heldout_groups = split_groups(
        load_seed_groups(recipe.data), recipe.data.heldout_group_fraction, recipe.data.split_seed
    )
    prompt = recipe.captioner.caption_prompt()
    rows, unreadable = sft_rows_from_groups(train_groups, prompt)
    logger.info(
        "%d training pairs from %d groups (%d images unreadable)", len(rows), len(train_groups), len(unreadable)
    )
    chat, fingerprint = train_single_captioner(recipe.model.load_chat(), rows, recipe.sft)
    if not heldout_groups:
        return chat, fingerprint, None
    output_dir = Path(recipe.sft.output_dir)
    captioner = SingleImageCaptioner(
        chat, output_dir / "heldout_captions.jsonl", prompt, recipe.captioner.decoding(), fingerprint,
        recipe.captioner.generation_batch_size,
    )  # fmt: skip
    images = [(image, group.reference_caption) for group in heldout_groups for image in group.images]
    run = captioner([image for image, _ in images])
    kept = [
        (caption.caption, reference) for caption, (_, reference) in zip(run.captions, images, strict=True) if caption
    ]
    quality = evaluate_captioner(
        [caption for caption, _ in kept], load_text_encoder(), references=[reference for _, reference in kept]
    )
    (output_dir / "quality.json").write_text(json.dumps(quality.summary(), indent=1) + "\n", encoding="utf-8")
    return chat, fingerprint, quality
