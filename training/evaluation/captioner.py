"""Short literal captions of pool images by Qwen2.5-VL (the paper's CLIP-T and Qwen-T baselines), cached by image
hash in a JSON-lines file, so both baselines and any rerun share one captioning pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import PIL.Image

from training.evaluation.qwen_chat import QwenVLChat
from training.evaluation.records import append_record, iter_objects


CAPTION_PROMPT = "Describe this image in one sentence of at most 30 words."
MAX_CAPTION_WORDS = 30


def limit_words(text: str, max_words: int = MAX_CAPTION_WORDS) -> str:
    """The first `max_words` words, whitespace collapsed: the bar holds even when the model runs on."""
    return " ".join(text.split()[:max_words])


class Captioner:
    def __init__(self, chat: QwenVLChat, cache_file: str | Path, prompt: str = CAPTION_PROMPT) -> None:
        self.chat = chat
        self.prompt = prompt
        self.cache_file = Path(cache_file)
        self.captions: dict[str, str] = {}
        if self.cache_file.is_file():
            for _, record in iter_objects(self.cache_file, "caption", required=("image_hash", "caption")):
                self.captions[record["image_hash"]] = record["caption"]

    def __call__(self, images: Sequence[PIL.Image.Image], image_hashes: Sequence[str]) -> list[str]:
        todo = [index for index, image_hash in enumerate(image_hashes) if image_hash not in self.captions]
        if todo:
            answers = self.chat.generate([([images[index]], self.prompt) for index in todo], max_new_tokens=64)
            for index, answer in zip(todo, answers, strict=True):
                caption = limit_words(answer)
                self.captions[image_hashes[index]] = caption
                append_record({"image_hash": image_hashes[index], "caption": caption}, self.cache_file)
        return [self.captions[image_hash] for image_hash in image_hashes]
