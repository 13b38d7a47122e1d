"""The describers of the conceptual distance: any saved chat model with its prompt. The offline literal describer
is the tiny VLM pretrained on the generator's literal descriptions ("three teal stars in a row, growing, on a cream
background"; `training.vlm.tiny_pretraining`), shipped in training/vlm/pretrained_tiny and rebuilt by
`train_literal_describer` (the same pretraining, one recipe).

The anonymous variant needs no code of its own: it is the pipeline's single-image captioner (for instance the tiny
one `train_synthetic_captioner` writes to `<output_dir>/model`) with its captioning prompt.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.store import adapter_fingerprint, model_fingerprint, tensors_fingerprint
from training.studies.conceptual_distance_runner import Describer
from training.vlm.chat import QwenVLChat
from training.vlm.tiny_pretraining import TINY_PRETRAIN_RECIPE, load_pretraining_recipe, pretrain_tiny_chat


logger = logging.getLogger(__name__)

DESCRIBER_FILE = "describer.json"  # the prompt a saved describer was trained with
PRETRAINING_FILE = "pretraining.json"  # what `pretrain_tiny_chat` writes, with its prompt


def train_literal_describer(
    output_dir: str | Path, recipe: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Describer:
    """The tiny VLM's literal pretraining (`pretrain_tiny_chat`, default recipe tiny-vlm-pretrain-cpu.yaml), saved to
    `output_dir` with `describer.json` (its prompt), so `load_describer(output_dir)` reloads it.

    Returns:
        the trained describer, named "literal".
    """
    recipe = recipe or TINY_PRETRAIN_RECIPE
    trained = pretrain_tiny_chat(output_dir, recipe, overrides)
    prompt = load_pretraining_recipe(recipe, {**(overrides or {}), "output_dir": str(output_dir)})[2].prompt
    output_dir = Path(output_dir)
    (output_dir / DESCRIBER_FILE).write_text(json.dumps({"prompt": prompt, "name": "literal"}) + "\n")
    trained.model_name_or_path = str(output_dir)
    return Describer(trained, prompt, "literal")


def load_describer(
    model_name_or_path: str,
    prompt: str | None = None,
    name: str = "describer",
    max_pixels: int = 448 * 448,
    device: str = "cpu",
    dtype=None,
    adapter: str | None = None,
) -> Describer:
    """A saved chat (folder or hub id, optionally with a LoRA `adapter` merged in) and its prompt: `prompt`, else
    the one in the folder's `describer.json` (written by `train_literal_describer`).

    Raises:
        ValueError: no prompt was given and the folder has no `describer.json`.
    """
    import torch

    if prompt is None:
        folder = Path(model_name_or_path)
        saved = next((folder / name for name in (DESCRIBER_FILE, PRETRAINING_FILE) if (folder / name).is_file()), None)
        if saved is None:
            raise ValueError(f"{model_name_or_path} has no {DESCRIBER_FILE}: give the describer's prompt")
        prompt = json.loads(saved.read_text(encoding="utf-8"))["prompt"]
    chat = QwenVLChat.from_pretrained(
        model_name_or_path, device=device, dtype=dtype or torch.float32, max_pixels=max_pixels, adapter=adapter
    )
    fingerprint = None
    if adapter:
        base = model_fingerprint(model_name_or_path, chat.model)
        adapter_id = adapter_fingerprint(adapter)
        fingerprint = f"{base}+{adapter_id}" if adapter_id else None  # None: the merged tensors are fingerprinted
        if fingerprint is None:
            fingerprint = tensors_fingerprint(chat.model.state_dict().items())
    return Describer(chat, prompt, name, fingerprint)
