"""PEFT LoRA adapters of a Qwen2.5-VL merged into its weights: the official relsim release (`convert_official`) and
the released captioner (`training.vlm.adapters`) alike, with one rule for adapters saved by transformers 4.x.

Like `convert_official`, a maintainer's tool (it needs peft): no remote-code file imports it, so it never travels
with a saved model.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file
from transformers import Qwen2_5_VLForConditionalGeneration


# transformers 4.x saved Qwen2.5-VL as `model.layers.*` / `visual.*`; 5.x nests both under `model.`.
_LEGACY_ADAPTER_KEYS = (
    (re.compile(r"^base_model\.model\.model\.(?!language_model\.|visual\.)"), "base_model.model.model.language_model."),
    (re.compile(r"^base_model\.model\.visual\."), "base_model.model.model.visual."),
)


def load_adapter_state_dict(checkpoint_dir: Path) -> dict[str, torch.Tensor]:
    """The adapter's tensors with transformers-4.x key names moved to the 5.x layout."""
    safetensors_path = checkpoint_dir / "adapter_model.safetensors"
    bin_path = checkpoint_dir / "adapter_model.bin"
    if safetensors_path.is_file():
        state_dict = load_file(safetensors_path)
    elif bin_path.is_file():
        state_dict = torch.load(bin_path, map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{checkpoint_dir} holds no adapter_model.safetensors or adapter_model.bin")
    return remap_legacy_adapter_keys(state_dict)


def remap_legacy_adapter_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """PEFT adapter keys of a Qwen2.5-VL saved by transformers 4.x (`base_model.model.model.layers.*`,
    `base_model.model.visual.*`) moved to the 5.x layout (`...model.language_model.*`, `...model.visual.*`); keys
    already in the 5.x layout pass unchanged."""
    remapped = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in _LEGACY_ADAPTER_KEYS:
            key = pattern.sub(replacement, key)
        remapped[key] = tensor
    return remapped


def merge_adapter(
    model: Qwen2_5_VLForConditionalGeneration, checkpoint_dir: Path, base: str
) -> Qwen2_5_VLForConditionalGeneration:
    """`model` + the PEFT LoRA in `checkpoint_dir` (4.x keys remapped), merged into its weights; raises unless every
    adapter tensor found its place. `base` names the model in the error."""
    peft_model = get_peft_model(model, LoraConfig.from_pretrained(checkpoint_dir))
    adapter_state = load_adapter_state_dict(checkpoint_dir)
    result = set_peft_model_state_dict(peft_model, adapter_state)
    expected = {key for key in peft_model.state_dict() if ".lora_" in key}
    missing = sorted(key for key in result.missing_keys if key in expected)
    if result.unexpected_keys or missing:
        raise ValueError(
            f"the adapter in {checkpoint_dir} does not fit {base}: unexpected {sorted(result.unexpected_keys)[:5]}, "
            f"missing {missing[:5]}"
        )
    return peft_model.merge_and_unload()
