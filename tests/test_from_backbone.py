import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration

from modeling_relsim import RelSimModel, RelSimProcessor
from modeling_relsim.modeling_relsim import unpad_pixel_values


NEW_KEYS = ["projection.bias", "projection.weight", "query_embedding.weight", "temperature.logit_scale"]


@pytest.fixture
def backbone_processor(backbone_dir):
    return RelSimProcessor.from_pretrained(backbone_dir, image_size=112, crop="none")


def test_reports_exactly_the_new_parameters(backbone_dir, backbone_processor):
    model, info = RelSimModel.from_backbone(backbone_dir, processor=backbone_processor, output_loading_info=True)
    assert info == {
        "newly_initialized_keys": NEW_KEYS,
        "missing_keys": [],
        "unexpected_keys": ["lm_head.weight"],
        "mismatched_keys": [],
    }
    assert not hasattr(model.backbone, "lm_head")
    assert model.config.query_token_id == backbone_processor.query_token_id
    assert model.config.processor_settings() == backbone_processor.settings()


def test_backbone_weights_are_the_checkpoint(backbone_dir, backbone_processor):
    """The folder holds the hub's key layout (`model.layers.*`, `visual.*`, `lm_head`), as Qwen2.5-VL-7B does."""
    model = RelSimModel.from_backbone(backbone_dir, processor=backbone_processor)
    saved = load_file(backbone_dir / "model.safetensors")
    backbone_state = model.backbone.state_dict()
    assert len(backbone_state) == len(saved) - 1
    for key, tensor in backbone_state.items():
        hub_key = key.replace("language_model.", "model.", 1) if key.startswith("language_model.") else key
        assert torch.equal(tensor, saved[hub_key]), key


@pytest.mark.parametrize("side", ["left", "right"])
def test_reproduces_the_backbone_hidden_states(backbone_dir, backbone_processor, images, side):
    """With the query vector set to the vocabulary row, the read-out is the official output_hidden_states path."""
    model = RelSimModel.from_backbone(backbone_dir, processor=backbone_processor)
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(backbone_dir).eval()
    query_token_id = backbone_processor.query_token_id
    batch = backbone_processor(images, padding_side=side)
    image_token_id = model.config.backbone_config.image_token_id
    with torch.no_grad():
        model.query_embedding.weight.copy_(full.get_input_embeddings().weight[query_token_id])
        reference = full(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=unpad_pixel_values(batch["pixel_values"], batch["image_grid_thw"]),
            image_grid_thw=batch["image_grid_thw"],
            mm_token_type_ids=(batch["input_ids"] == image_token_id).int(),
            output_hidden_states=True,
        ).hidden_states[-1]
        query_positions = (batch["input_ids"] == query_token_id).int().argmax(-1)
        expected = reference[torch.arange(3), query_positions]
        torch.testing.assert_close(model(**batch).query_hidden_states, expected, atol=1e-5, rtol=0)


def test_building_twice_gives_the_same_model(backbone_dir, backbone_processor):
    first = RelSimModel.from_backbone(backbone_dir, processor=backbone_processor)
    second = RelSimModel.from_backbone(backbone_dir, processor=backbone_processor)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_query_token_id_comes_from_the_backbone_tokenizer(backbone_dir, backbone_processor):
    model = RelSimModel.from_backbone(backbone_dir, image_size=112, crop="none", projection_dim=32)
    assert model.config.query_token_id == backbone_processor.query_token_id
    assert model.projection.out_features == 32
    model.check_processor(backbone_processor)


def test_conflicting_settings_are_refused(backbone_dir, backbone_processor):
    with pytest.raises(ValueError, match="instruction=None disagrees"):
        RelSimModel.from_backbone(backbone_dir, processor=backbone_processor, instruction=None)


def test_an_incomplete_checkpoint_fails_loudly(backbone_dir, backbone_processor, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(backbone_dir, broken)
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"stay random.*layers\.1\.mlp\.up_proj"):
        RelSimModel.from_backbone(broken, processor=backbone_processor)
