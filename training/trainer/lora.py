"""The paper's LoRA recipe for relsim: adapters on the language model's attention, the new heads trained in full."""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig

from modeling_relsim.modeling_relsim import NEW_MODULES


def relsim_lora_config(
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
) -> LoraConfig:
    """LoRA on the language model only (the vision tower's attention is `qkv`, never matched) plus the query vector,
    projection and temperature as fully trained modules saved with the adapter."""
    names = "|".join(target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=rf"backbone\.language_model\.layers\.\d+\..*\.({names})",
        modules_to_save=list(NEW_MODULES),
    )
