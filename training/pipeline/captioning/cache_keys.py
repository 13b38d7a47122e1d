"""What a cached caption is keyed by: the weights that wrote it, the prompt version, the decoding settings and the
ids of the images it was written for. A change to any of them asks the model again; nothing else does."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from training.store import model_fingerprint
from training.vlm.chat import QwenVLChat


def chat_fingerprint(chat: QwenVLChat) -> str:
    """The fingerprint of the weights a chat was loaded from: its folder's files or hub commit; for a model built in
    memory (the tiny one), its tensors.

    An adapter merged in at load time, or training in place, leaves `model_name_or_path` naming the base weights:
    then the caller adds the adapter's fingerprint (`single.load_captioner`, `single.train_single_captioner`).
    """
    return model_fingerprint(chat.model_name_or_path, chat.model)


def decoding_settings(decoding: Any) -> dict[str, Any]:
    """The decoding settings as a plain dict (a `Decoding` dataclass or a mapping), for keys and records."""
    if dataclasses.is_dataclass(decoding):
        return dataclasses.asdict(decoding)
    return dict(decoding)


def caption_key(fingerprint: str, prompt_version: str, decoding: Any, image_hashes: Sequence[str]) -> str:
    """sha256 over the weights fingerprint, prompt version, decoding settings and image ids (in prompt order: the
    same images in another order are another prompt)."""
    parts = [fingerprint, prompt_version, decoding_settings(decoding), list(image_hashes)]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode("utf-8")).hexdigest()
