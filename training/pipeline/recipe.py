"""The pipeline's YAML recipe: which models each stage loads, thresholds, decoding and batch sizes.

    device: cuda
    dtype: bfloat16
    batch_size: 32                   # rows per stage call unless a stage sets its own
    filter:    {model: Qwen/Qwen2.5-VL-7B-Instruct, adapter: runs/filter/final, threshold: 0.5, batch_size: 32}
    caption:   {model: Qwen/Qwen2.5-VL-7B-Instruct, adapter: thaoshibe/relsim-anonymous-caption-qwen25vl-lora,
                decoding: {max_new_tokens: 128, do_sample: false}, batch_size: 16}
    group_caption: {model: Qwen/Qwen2.5-VL-7B-Instruct, decoding: {max_new_tokens: 128}, batch_size: 2}
    check:     {}
    handoff:   {require_check_ok: true}

`training_recipe` fields name the SFT recipes that train the filter and the captioner (`filter train`, `caption
train`), so one file says where every model of the run came from. Unknown keys are refused with their names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from training.recipes import read_recipe


@dataclass
class ModelSettings:
    """A generating Qwen2.5-VL: hub id or folder, optional PEFT LoRA adapter, image budget, batch size."""

    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    adapter: str | None = None
    max_pixels: int = 448 * 448
    batch_size: int | None = None
    training_recipe: str | None = None


@dataclass
class FilterSettings(ModelSettings):
    threshold: float = 0.5


@dataclass
class CaptionSettings(ModelSettings):
    """`prompt`: the captioning prompt's text (unset: the captioner's own; the released adapter wants the official
    wording, see `training.pipeline.captioning.prompts`)."""

    prompt: str | None = None
    decoding: dict[str, Any] = field(default_factory=lambda: {"max_new_tokens": 128, "do_sample": False})


@dataclass
class GroupCaptionSettings(ModelSettings):
    """The frozen group captioner of `group-caption` (the base VLM, no adapter); `batch_size` counts groups."""

    decoding: dict[str, Any] = field(default_factory=lambda: {"max_new_tokens": 128, "do_sample": False})


@dataclass
class CheckSettings:
    """`relational_vocabulary`: extra words never counted as leaks, beside the checker's own list."""

    relational_vocabulary: list[str] = field(default_factory=list)


@dataclass
class HandoffSettings:
    require_check_ok: bool = True


@dataclass
class PipelineRecipe:
    device: str = "auto"
    dtype: str = "float32"
    batch_size: int = 16
    filter: FilterSettings = field(default_factory=FilterSettings)
    caption: CaptionSettings = field(default_factory=CaptionSettings)
    group_caption: GroupCaptionSettings = field(default_factory=GroupCaptionSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    handoff: HandoffSettings = field(default_factory=HandoffSettings)


SECTIONS = {
    "filter": FilterSettings,
    "caption": CaptionSettings,
    "group_caption": GroupCaptionSettings,
    "check": CheckSettings,
    "handoff": HandoffSettings,
}


def build_settings(kind: type, values: Any, where: str) -> Any:
    """A settings dataclass from a recipe section; a key it does not know is an error naming it and the valid ones."""
    if values is None:
        return kind()
    if not isinstance(values, dict):
        raise ValueError(f"{where}: expected a mapping of settings, got {type(values).__name__}")
    known = {spec.name for spec in fields(kind)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; valid: {sorted(known)}")
    return kind(**values)


def recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> PipelineRecipe:
    """A recipe from a parsed mapping; `where` names it in errors."""
    top = {key: value for key, value in values.items() if key not in SECTIONS}
    recipe = build_settings(PipelineRecipe, top, where)
    for name, kind in SECTIONS.items():
        setattr(recipe, name, build_settings(kind, values.get(name), f"{where}: {name}"))
    if recipe.batch_size < 1:
        raise ValueError(f"{where}: batch_size must be at least 1, got {recipe.batch_size}")
    if not 0.0 <= recipe.filter.threshold <= 1.0:
        raise ValueError(f"{where}: filter.threshold is a probability in [0, 1], got {recipe.filter.threshold}")
    return recipe


def load_pipeline_recipe(path: str | Path | None) -> PipelineRecipe:
    """The recipe in `path` (YAML), or the defaults when `path` is None."""
    if path is None:
        return PipelineRecipe()
    return recipe_from_dict(read_recipe(path), str(path))
