"""The pipeline's recipes and stage list: the shipped YAML files load, bad keys and orders are refused by name."""

from pathlib import Path

import pytest

from training.pipeline.build import build_stages, parse_stage_names
from training.pipeline.recipe import load_pipeline_recipe, recipe_from_dict


CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


def test_shipped_recipes_load_with_their_models_thresholds_and_decoding():
    tiny = load_pipeline_recipe(CONFIGS / "pipeline-tiny-cpu.yaml")
    large = load_pipeline_recipe(CONFIGS / "pipeline-qwen2.5-vl-7b.yaml")

    assert (tiny.device, tiny.filter.threshold, tiny.filter.batch_size) == ("cpu", 0.5, 32)
    assert large.caption.adapter == "thaoshibe/relsim-anonymous-caption-qwen25vl-lora"
    assert large.caption.decoding == {"max_new_tokens": 128, "do_sample": False}
    assert (large.dtype, large.filter.max_pixels) == ("bfloat16", 448 * 448)


def test_unknown_settings_and_bad_thresholds_are_refused_by_name():
    with pytest.raises(ValueError, match=r"recipe: filter: unknown settings \['treshold'\]"):
        recipe_from_dict({"filter": {"treshold": 0.3}})
    with pytest.raises(ValueError, match=r"filter.threshold is a probability in \[0, 1\], got 2"):
        recipe_from_dict({"filter": {"threshold": 2}})


def test_stage_names_are_checked_and_built_in_order(tmp_path):
    assert parse_stage_names("filter, caption,handoff") == ["filter", "caption", "handoff"]
    with pytest.raises(ValueError, match="unknown stages"):
        parse_stage_names("filter,embedd")
    with pytest.raises(ValueError, match="stages run in the order"):
        parse_stage_names("caption,filter")

    stages = build_stages(["filter", "caption", "check", "handoff"], recipe_from_dict({}), tmp_path)

    assert [stage.name for stage in stages] == ["filter", "caption", "check", "handoff"]
    assert stages[0].chat is None  # nothing is loaded before the runner calls setup()
    assert stages[3].folder == tmp_path / "handoff"
