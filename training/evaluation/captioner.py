"""Short literal captions of pool images by Qwen2.5-VL (the paper's CLIP-T and Qwen-T baselines), cached in a
JSON-lines `RecordLog` (each caption fsynced as it is made; a half-written last line is recovered), so both
baselines and any rerun share one captioning pass. A caption is keyed by content: the captioner's model, weights
fingerprint and prompt, and the sha256 of the decoded pixels, so another captioner or a changed image is captioned
afresh rather than served a stale caption (records without a key, from older versions, are not used).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import PIL.Image

from training.image_ids import pixel_hash
from training.store import RecordLog, model_fingerprint
from training.vlm.chat import QwenVLChat


CAPTION_PROMPT = "Describe this image in one sentence of at most 30 words."
MAX_CAPTION_WORDS = 30


def limit_words(text: str, max_words: int = MAX_CAPTION_WORDS) -> str:
    """The first `max_words` words, whitespace collapsed: the bar holds even when the model runs on."""
    return " ".join(text.split()[:max_words])


class Captioner:
    def __init__(self, chat: QwenVLChat, cache_file: str | Path, prompt: str = CAPTION_PROMPT) -> None:
        self.chat = chat
        self.prompt = prompt
        self.weights = model_fingerprint(chat.model_name_or_path, chat.model)
        self._identity = json.dumps([chat.model_name_or_path, self.weights, prompt])
        self.cache_file = Path(cache_file)
        self.log = RecordLog(self.cache_file, what="caption", required=("image_hash", "caption"))
        self.captions = {record["key"]: record["caption"] for _, record in self.log.records() if "key" in record}

    def _key(self, image: PIL.Image.Image) -> str:
        return hashlib.sha256(f"{self._identity} {pixel_hash(image)}".encode()).hexdigest()

    def __call__(self, images: Sequence[PIL.Image.Image], image_hashes: Sequence[str]) -> list[str]:
        keys = [self._key(image) for image in images]
        todo = [index for index, key in enumerate(keys) if key not in self.captions]
        if todo:
            answers = self.chat.generate([([images[index]], self.prompt) for index in todo], max_new_tokens=64)
            for index, answer in zip(todo, answers, strict=True):
                caption = limit_words(answer)
                self.captions[keys[index]] = caption
                self.log.append({"key": keys[index], "image_hash": image_hashes[index], "caption": caption})
        return [self.captions[key] for key in keys]
