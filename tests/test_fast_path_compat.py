"""The guard of the vision fast path: a transformers whose internals differ gets transformers' own vision code and one
warning, and gives the reference path's embeddings; an intact one gets the fast path and no warning."""

import logging

import pytest
import torch
import transformers
import transformers.vision_utils
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.utils import logging as transformers_logging

import modeling_relsim.vision_layout as vision_layout
from modeling_relsim import RelSimModel
from modeling_relsim.fast_path_compat import fast_path_mismatches
from training.tiny_backbone import build_tiny_model


@pytest.fixture
def fast_path_warnings(caplog):
    """The records of the fast-path warning from here on; `warning_once`'s memory of earlier tests is cleared."""
    transformers_logging.warning_once.cache_clear()
    caplog.set_level(logging.WARNING, logger="modeling_relsim")

    def records():
        return [record for record in caplog.records if "vision fast path" in record.getMessage()]

    return records


@pytest.fixture
def layout_calls(monkeypatch):
    """Every `VisionLayout.from_grid` call: the host layout is computed only on the fast path."""
    calls = []
    original = vision_layout.VisionLayout.from_grid.__func__

    def recorded(cls, visual, grid_thw):
        calls.append(grid_thw)
        return original(cls, visual, grid_thw)

    monkeypatch.setattr(vision_layout.VisionLayout, "from_grid", classmethod(recorded))
    return calls


def reference_embeddings(processor, batch):
    """The embeddings of transformers' own vision code, from an intact build."""
    model = build_tiny_model(processor, seed=0)
    model.set_vision_attention("reference")
    with torch.no_grad():
        return model(**batch).image_embeds


def rotary_with_a_new_argument(monkeypatch):
    original = modeling_qwen2_5_vl.apply_rotary_pos_emb_vision

    def apply_rotary_pos_emb_vision(q, k, cos, sin, unsqueeze_dim=-2):
        return original(q, k, cos, sin)

    monkeypatch.setattr(modeling_qwen2_5_vl, "apply_rotary_pos_emb_vision", apply_rotary_pos_emb_vision)
    return "apply_rotary_pos_emb_vision takes (q, k, cos, sin, unsqueeze_dim) instead of (q, k, cos, sin)"


def attention_with_a_new_argument(monkeypatch):
    attention_class = modeling_qwen2_5_vl.Qwen2_5_VLVisionAttention
    original = attention_class.forward

    def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, attention_mask=None, **kw):
        return original(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kw)

    monkeypatch.setattr(attention_class, "forward", forward)
    return "Qwen2_5_VLVisionAttention.forward has new arguments ['attention_mask']"


def window_helper_removed(monkeypatch):
    monkeypatch.delattr(transformers.vision_utils, "get_vision_window_index")
    return "transformers.vision_utils.get_vision_window_index is missing"


def position_helper_that_ignores_precomputed_values(monkeypatch):
    original = transformers.vision_utils.get_vision_position_ids

    def get_vision_position_ids(grid_thw, spatial_merge_size, include_temporal=False, kwargs=None):
        return original(grid_thw, spatial_merge_size, include_temporal)

    monkeypatch.setattr(transformers.vision_utils, "get_vision_position_ids", get_vision_position_ids)
    return "get_vision_position_ids does not hand back and pop the precomputed ['position_ids']"


def vision_utils_not_importable(monkeypatch):
    monkeypatch.setattr(vision_layout, "vision_utils", None)
    return "transformers.vision_utils.get_vision_attention_seqlens is missing"


@pytest.mark.parametrize(
    "break_internal",
    [
        rotary_with_a_new_argument,
        attention_with_a_new_argument,
        window_helper_removed,
        position_helper_that_ignores_precomputed_values,
        vision_utils_not_importable,
    ],
)
def test_changed_internals_fall_back_to_the_reference_path_with_one_warning(
    break_internal, processor, aspect_processor, images, monkeypatch, fast_path_warnings, layout_calls, tmp_path
):
    batch = aspect_processor(images)  # three shapes: ragged windows and padding
    expected = reference_embeddings(aspect_processor, batch)
    layout_calls.clear()
    difference = break_internal(monkeypatch)

    model = build_tiny_model(aspect_processor, seed=0)
    assert difference in model.vision_fast_path_mismatches
    assert not model.uses_vision_fast_path
    assert model.config.vision_attention == "batched"  # the user's choice is kept for a transformers that fits
    assert type(model.backbone.visual.blocks[0].attn) is modeling_qwen2_5_vl.Qwen2_5_VLVisionAttention
    with torch.no_grad():
        fallback = model(**batch).image_embeds
    torch.testing.assert_close(fallback, expected, atol=0, rtol=0)
    assert layout_calls == []

    # asking for the batched path again, or reloading, keeps the reference path and says nothing more
    model.set_vision_attention("batched")
    assert type(model.backbone.visual.blocks[0].attn) is modeling_qwen2_5_vl.Qwen2_5_VLVisionAttention
    model.save_pretrained(tmp_path)
    assert not RelSimModel.from_pretrained(tmp_path).uses_vision_fast_path
    [warning] = fast_path_warnings()
    assert warning.levelno == logging.WARNING
    assert f"does not fit transformers {transformers.__version__}: " in warning.getMessage()
    assert difference in warning.getMessage()
    assert "transformers' own attention and layout code" in warning.getMessage()


def test_a_missing_rotary_helper_loads_the_reference_classes(processor, monkeypatch, fast_path_warnings):
    """Before the guard, building the model raised AttributeError at the class swap."""
    monkeypatch.delattr(modeling_qwen2_5_vl, "apply_rotary_pos_emb_vision")
    model = build_tiny_model(processor, seed=0)
    assert model.vision_fast_path_mismatches == [
        "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl has no apply_rotary_pos_emb_vision"
    ]
    assert type(model.backbone.visual.blocks[0].attn) is modeling_qwen2_5_vl.Qwen2_5_VLVisionAttention
    assert len(fast_path_warnings()) == 1


def test_intact_transformers_runs_the_fast_path_without_warning(
    processor, images, fast_path_warnings, layout_calls, tmp_path
):
    model = build_tiny_model(processor, seed=0)
    assert fast_path_mismatches(model.backbone.visual) == []
    assert model.uses_vision_fast_path
    assert type(model.backbone.visual.blocks[0].attn).__name__ == "BatchedQwen2_5_VLVisionAttention"
    with torch.no_grad():
        model(**processor(images))
    assert len(layout_calls) == 1
    model.save_pretrained(tmp_path)
    assert RelSimModel.from_pretrained(tmp_path).uses_vision_fast_path  # built on `meta`, then loaded
    assert fast_path_warnings() == []


def test_reference_mode_leaves_the_layout_to_the_tower(model, processor, images, layout_calls):
    model.set_vision_attention("reference")
    assert not model.uses_vision_fast_path and model.vision_fast_path_mismatches == []
    with torch.no_grad():
        model(**processor(images))
    assert layout_calls == []
    with pytest.raises(ValueError, match="vision_attention must be one of"):
        model.set_vision_attention("fast")
