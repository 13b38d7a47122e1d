"""PEFT LoRA adapters for the generating Qwen2.5-VL, from a folder or the Hub, merged into the weights.

The merge itself (and the key remapping for adapters saved by transformers 4.x) is `modeling_relsim.lora_adapters`,
shared with the official relsim converter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import Qwen2_5_VLForConditionalGeneration

from modeling_relsim.lora_adapters import merge_adapter
from training.errors import loading_model


logger = logging.getLogger(__name__)

ADAPTER_FILES = ["adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"]


def resolve_adapter(adapter: str) -> Path:
    """A local adapter folder as is; a hub id downloaded (adapter files only) or found in the local cache."""
    folder = Path(adapter)
    if folder.is_dir():
        if not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no adapter_config.json; is it a PEFT LoRA adapter folder?")
        return folder
    from huggingface_hub import snapshot_download

    with loading_model(adapter, "the LoRA adapter", "adapter"):
        return Path(snapshot_download(adapter, allow_patterns=ADAPTER_FILES))


def merge_lora_adapter(
    model: Qwen2_5_VLForConditionalGeneration, adapter: str, base: str = "the base model"
) -> Qwen2_5_VLForConditionalGeneration:
    """`model` with the LoRA `adapter` (folder or hub id) merged in; raises unless every adapter tensor fits."""
    folder = resolve_adapter(adapter)
    merged = merge_adapter(model, folder, base)
    logger.info("merged the LoRA adapter %s into %s", adapter, base)
    return merged
