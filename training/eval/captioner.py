"""Short literal captions of pool images by Qwen2.5-VL (the paper's CLIP-T and Qwen-T baselines), cached by image
hash in a JSON-lines file, so both baselines and any rerun share one captioning pass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import PIL.Image

from training.eval.qwen_chat import QwenVLChat


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
            with self.cache_file.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        record = json.loads(line)
                        self.captions[record["image_hash"]] = record["caption"]
                    except (json.JSONDecodeError, KeyError, TypeError) as error:
                        raise ValueError(f"{self.cache_file}, line {number}: not a caption record ({error})") from error

    def __call__(self, images: Sequence[PIL.Image.Image], image_hashes: Sequence[str]) -> list[str]:
        todo = [index for index, image_hash in enumerate(image_hashes) if image_hash not in self.captions]
        if todo:
            answers = self.chat.generate([([images[index]], self.prompt) for index in todo], max_new_tokens=64)
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_file.open("a", encoding="utf-8") as out:
                for index, answer in zip(todo, answers, strict=True):
                    caption = limit_words(answer)
                    self.captions[image_hashes[index]] = caption
                    out.write(json.dumps({"image_hash": image_hashes[index], "caption": caption}) + "\n")
        return [self.captions[image_hash] for image_hash in image_hashes]
