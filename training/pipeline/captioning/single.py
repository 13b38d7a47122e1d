"""The single-image anonymous captioner: a Qwen2.5-VL fine-tuned (TRL SFT, LoRA) to write, for one image, the
anonymous caption its seed group was given, so the pipeline can caption images that belong to no group.

- Training: (image, group caption) pairs from seed groups (`sft_rows_from_groups`), through the VLM core's
  `train_chat_sft`. The official recipe is `training/configs/captioner-qwen2.5-vl-7b.yaml`.
- Or no training: the released adapter `thaoshibe/relsim-anonymous-caption-qwen25vl-lora` (PEFT LoRA of
  Qwen2.5-VL-7B-Instruct, saved by transformers 4.x) merged into the base (`load_captioner`).
- Captioning: batched generation (left padding) with the recipe's decoding, cached per image so a rerun captions only
  new images; an unreadable image is reported and counted.

Decoding default: greedy, at most 128 new tokens, as the official `anonymous_caption/config.yaml`. A caption becomes
a training target: greedy gives the caption the model finds most likely, the same one on every run, which keeps the
cache valid and the dataset reproducible. The official Hugging Face example samples at T=0.7, top_p=0.9 (more varied
wording across images of one logic); set `do_sample: true` in the recipe for that.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
from transformers.utils.logging import tqdm

from modeling_relsim.image_decoding import UnreadableImageError
from training.caption_text import normalize_caption
from training.pipeline.captioning.cache_keys import caption_key, chat_fingerprint, decoding_settings
from training.pipeline.captioning.group import SeedGroup
from training.pipeline.captioning.image_inputs import UnreadableImage, image_name, read_image
from training.pipeline.captioning.prompts import SINGLE_IMAGE_PROMPT, CaptionPrompt
from training.store import RecordLog, adapter_fingerprint, atomic_write, tensors_fingerprint, weights_fingerprint
from training.vlm.chat import QwenVLChat
from training.vlm.decoding import Decoding
from training.vlm.sft_training import train_chat_sft


logger = logging.getLogger(__name__)

OFFICIAL_CAPTIONER_ADAPTER = "thaoshibe/relsim-anonymous-caption-qwen25vl-lora"


@dataclass
class ImageCaption:
    """One image's caption: `source` names the image, `image_hash` is its cache id."""

    source: str
    image_hash: str
    caption: str
    raw_caption: str
    reused: bool


@dataclass
class SingleCaptionRun:
    """Captions aligned with the input (None where the image was unreadable), and every unreadable image."""

    captions: list[ImageCaption | None] = field(default_factory=list)
    unreadable: list[UnreadableImage] = field(default_factory=list)
    generated: int = 0
    reused: int = 0

    def texts(self) -> list[str | None]:
        return [None if caption is None else caption.caption for caption in self.captions]

    def summary(self) -> dict[str, int]:
        return {
            "captioned": sum(caption is not None for caption in self.captions),
            "generated": self.generated,
            "reused": self.reused,
            "unreadable_images": len(self.unreadable),
        }


def sft_rows_from_groups(
    groups: Sequence[SeedGroup], prompt: CaptionPrompt = SINGLE_IMAGE_PROMPT
) -> tuple[list[dict[str, Any]], list[UnreadableImage]]:
    """One SFT row (image, prompt, the group's caption) per readable image of every group, and the unreadable images.

    Raises:
        ValueError: a group without a caption (`reference_caption`), named by its id.
    """
    rows, unreadable = [], []
    for group in groups:
        if not group.reference_caption:
            raise ValueError(f"seed group {group.group_id} has no caption to train on (reference_caption is empty)")
        answer = normalize_caption(group.reference_caption)
        for value, name in zip(group.images, group.names, strict=True):
            try:
                image = read_image(value, image_name(value, name)).image
            except UnreadableImageError as error:
                unreadable.append(UnreadableImage(error.source, error.reason, group.group_id))
                logger.warning("group %s: cannot read %s: %s", group.group_id, error.source, error.reason)
                continue
            rows.append({"images": [image], "prompt": prompt.text, "answer": answer})
    return rows, unreadable


def load_captioner(model_arguments) -> tuple[QwenVLChat, str]:
    """The chat a `ChatModelArguments` names (base model, with `adapter` merged in when set, e.g.
    `OFFICIAL_CAPTIONER_ADAPTER`) and the fingerprint its captions are cached under (base and adapter both; the
    loaded tensors when the adapter can be found neither as a folder nor in the Hub cache)."""
    chat = model_arguments.load_chat()
    base = chat_fingerprint(chat)
    if not model_arguments.adapter:
        return chat, base
    adapter = adapter_fingerprint(model_arguments.adapter)
    return chat, f"{base}+{adapter}" if adapter else tensors_fingerprint(chat.model.state_dict().items())


def train_single_captioner(chat: QwenVLChat, rows, sft_arguments, eval_rows=None) -> tuple[QwenVLChat, str]:
    """Fine-tunes `chat` on SFT rows with TRL (`training.vlm.sft_training.train_chat_sft`); returns the trained chat
    and the fingerprint of what was saved (the base's plus the adapter folder's with LoRA, else the model folder's),
    so captions of the new weights never reuse the old ones'."""
    base = chat_fingerprint(chat) if sft_arguments.use_lora else None
    trained = train_chat_sft(chat, rows, sft_arguments, eval_rows)
    saved = weights_fingerprint(sft_arguments.output_dir)
    return trained, f"{base}+{saved}" if base else saved


class SingleImageCaptioner:
    """Args:
    chat: the captioning VLM (fine-tuned, or with the released adapter merged in).
    cache_file: the `RecordLog` of captions (created on first use; reused across runs).
    prompt: the captioning prompt (versioned).
    decoding: greedy with at most 128 new tokens unless told otherwise (see the module docstring).
    fingerprint: the weights fingerprint to key the cache by (from `load_captioner` / `train_single_captioner`);
        computed from `chat` when None.
    batch_size: images per `generate` call.
    """

    def __init__(
        self,
        chat: QwenVLChat,
        cache_file: str | Path,
        prompt: CaptionPrompt = SINGLE_IMAGE_PROMPT,
        decoding: Decoding | None = None,
        fingerprint: str | None = None,
        batch_size: int = 8,
    ) -> None:
        self.chat = chat
        self.prompt = prompt
        self.decoding = decoding or Decoding()
        self.fingerprint = fingerprint or chat_fingerprint(chat)
        self.batch_size = batch_size
        self.log = RecordLog(cache_file, what="image caption", required=("key", "caption", "raw_caption"))
        self.cached = {record["key"]: record for _, record in self.log.records()}

    def __call__(
        self,
        images: Sequence[Any],
        image_hashes: Sequence[str] | None = None,
        sources: Sequence[str] | None = None,
        show_progress: bool = False,
    ) -> SingleCaptionRun:
        """Captions `images` (paths, encoded bytes, PIL images, `datasets` cells), asking the model only about those
        not cached.

        Args:
            image_hashes: the ids to cache by (e.g. the pipeline rows' `image_hash`); computed from the images (md5
                of the file, or of the pixels) when None.
            sources: how reports name each image; defaults to its path or its position.
        """
        if image_hashes is not None and len(image_hashes) != len(images):
            raise ValueError(f"{len(image_hashes)} image hashes for {len(images)} images; give one per image")
        run = SingleCaptionRun(captions=[None] * len(images))
        settings = decoding_settings(self.decoding)
        for start in tqdm(range(0, len(images), self.batch_size), desc="captions", disable=not show_progress):
            pending: list[tuple[int, str, str, str, PIL.Image.Image]] = []
            for position in range(start, min(start + self.batch_size, len(images))):
                value = images[position]
                source = sources[position] if sources is not None else image_name(value, f"image {position}")
                try:
                    read = read_image(value, source)
                except UnreadableImageError as error:
                    run.unreadable.append(UnreadableImage(error.source, error.reason))
                    logger.warning("cannot read %s: %s", error.source, error.reason)
                    continue
                image_hash = image_hashes[position] if image_hashes is not None else read.image_hash
                key = caption_key(self.fingerprint, self.prompt.version, settings, [image_hash])
                if key in self.cached:
                    raw = self.cached[key]["raw_caption"]
                    run.captions[position] = ImageCaption(source, image_hash, self.cached[key]["caption"], raw, True)
                    run.reused += 1
                else:
                    pending.append((position, key, source, image_hash, read.image))
            if not pending:
                continue
            answers = self.chat.generate(
                [([image], self.prompt.text) for *_, image in pending], decoding=self.decoding, batch_size=len(pending)
            )
            for (position, key, source, image_hash, _), raw in zip(pending, answers, strict=True):
                caption = " ".join(normalize_caption(raw).split())
                record = {
                    "key": key,
                    "image_hash": image_hash,
                    "source": source,
                    "caption": caption,
                    "raw_caption": raw,
                    "prompt_version": self.prompt.version,
                    "model": self.fingerprint,
                    "decoding": settings,
                }
                self.log.append(record)
                self.cached[key] = record
                run.captions[position] = ImageCaption(source, image_hash, caption, raw, False)
                run.generated += 1
        logger.info("single-image captions: %s", run.summary())
        return run


def write_captions_jsonl(run: SingleCaptionRun, path: str | Path, urls: Sequence[str | None] | None = None) -> Path:
    """The official captions jsonl (`image_hash`, `caption`, `url_link`) for every captioned image."""
    lines = []
    for position, caption in enumerate(run.captions):
        if caption is None:
            continue
        url = urls[position] if urls is not None else None
        lines.append(json.dumps({"image_hash": caption.image_hash, "caption": caption.caption, "url_link": url or ""}))
    path = Path(path)
    atomic_write(path, ("\n".join(lines) + "\n" if lines else "").encode("utf-8"))
    return path
