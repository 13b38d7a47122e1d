"""Stages by name, built from a recipe: what `run --stages download,filter,caption,check,embed,handoff,index` runs.

One list of names serves both executors. `download` and `index` are not row stages: the sharded run
(`training.pipeline.run.pipeline_run`) runs them before and after the row stages, so `build_stages` builds only the
others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from training.pipeline.embed_stage import EmbedStage
from training.pipeline.handoff import HandoffStage
from training.pipeline.model_stages import CaptionStage, CheckStage, FilterStage
from training.pipeline.recipe import ModelSettings, PipelineRecipe
from training.pipeline.run.recipe import EmbedSettings
from training.pipeline.stages import Stage


STAGE_NAMES = ("download", "filter", "caption", "check", "embed", "handoff", "index")
AROUND_ROW_STAGES = ("download", "index")  # run by the sharded run before and after the row stages
HANDOFF_FOLDER = "handoff"


def parse_stage_names(text: str) -> list[str]:
    """`"filter,caption"` -> `["filter", "caption"]`, in the pipeline's order and without repeats."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGE_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown stages {unknown or names}; choose from {','.join(STAGE_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"stages repeat: {names}")
    positions = [STAGE_NAMES.index(name) for name in names]
    if positions != sorted(positions):
        raise ValueError(f"stages run in the order {','.join(STAGE_NAMES)}; got {','.join(names)}")
    return names


def _chat_settings(settings: ModelSettings, recipe: PipelineRecipe) -> dict:
    return {
        "model": settings.model, "adapter": settings.adapter, "device": recipe.device, "dtype": recipe.dtype,
        "max_pixels": settings.max_pixels, "batch_size": settings.batch_size,
    }  # fmt: skip


def build_stages(
    names: Sequence[str], recipe: PipelineRecipe, output_dir: str | Path, embed: EmbedSettings | None = None
) -> list[Stage]:
    """The named row stages with the recipe's settings (models are loaded later, in each stage's `setup`);
    `download` and `index` are skipped (see the module docstring); `embed` needs the recipe's `embed` section."""
    stages: list[Stage] = []
    for name in names:
        if name in AROUND_ROW_STAGES:
            continue
        if name == "filter":
            stages.append(FilterStage(**_chat_settings(recipe.filter, recipe), threshold=recipe.filter.threshold))
        elif name == "caption":
            stages.append(
                CaptionStage(
                    **_chat_settings(recipe.caption, recipe),
                    prompt=recipe.caption.prompt,
                    decoding=recipe.caption.decoding,
                    cache_file=str(Path(output_dir) / "caption_cache.jsonl"),
                )
            )
        elif name == "check":
            stages.append(CheckStage(recipe.check.relational_vocabulary))
        elif name == "embed":
            stages.append(_embed_stage(embed))
        elif name == "handoff":
            stages.append(HandoffStage(Path(output_dir) / HANDOFF_FOLDER, recipe.handoff.require_check_ok))
        else:
            raise ValueError(f"unknown stage {name!r}; choose from {STAGE_NAMES}")
    return stages


def _embed_stage(settings: EmbedSettings | None) -> Stage:
    if settings is None or not settings.model:
        raise ValueError("the embed stage needs `embed: {model: <relsim folder or hub id>}` in the recipe")
    return EmbedStage(
        settings.model, device=settings.device, dtype=settings.dtype, embed_batch_size=settings.batch_size,
        trust_remote_code=settings.trust_remote_code,
    )  # fmt: skip
