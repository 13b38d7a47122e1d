import json
import math

import pytest
from transformers import AutoConfig, Qwen2_5_VLConfig

from modeling_relsim import RelSimConfig
from modeling_relsim.configuration_relsim import DEFAULT_INSTRUCTION


def test_defaults_follow_the_paper():
    config = RelSimConfig()
    assert isinstance(config.backbone_config, Qwen2_5_VLConfig)
    assert config.projection_dim == 384
    assert config.query_token == "<|query|>"
    assert config.query_token_id is None
    assert config.instruction == DEFAULT_INSTRUCTION
    assert config.use_system_prompt is True
    assert config.image_size == 448
    assert config.crop == "center"
    assert config.logit_scale_init == pytest.approx(math.log(1 / 0.07))
    assert config.logit_scale_max == pytest.approx(math.log(100))
    assert config.text_encoder == "sentence-transformers/all-MiniLM-L6-v2"


def test_round_trip_keeps_backbone_and_fields(tmp_path, model):
    config = model.config
    config.instruction = None
    config.crop = "none"
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "relsim"
    assert saved["backbone_config"]["model_type"] == "qwen2_5_vl"

    reloaded = RelSimConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.backbone_config.text_config.hidden_size == 64
    assert reloaded.backbone_config.vision_config.window_size == 56
    assert reloaded.instruction is None and reloaded.crop == "none"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), RelSimConfig)


def test_attention_implementation_reaches_the_backbone(model):
    config = model.config
    config._attn_implementation = "eager"
    assert config.backbone_config.text_config._attn_implementation == "eager"
    assert config.backbone_config.vision_config._attn_implementation == "eager"


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("crop", "square", ValueError),
        ("projection_dim", 0, ValueError),
        ("image_size", -1, ValueError),
        ("logit_scale_init", 10.0, ValueError),
        ("backbone_config", 3, TypeError),
    ],
)
def test_invalid_values_are_rejected_by_name(field, value, error):
    with pytest.raises(error, match=field):
        RelSimConfig(**{field: value})


def test_processor_settings_lists_what_the_processor_shares():
    config = RelSimConfig(instruction=None, image_size=224, crop="none", use_system_prompt=False)
    assert config.processor_settings() == {
        "query_token": "<|query|>",
        "instruction": None,
        "use_system_prompt": False,
        "image_size": 224,
        "crop": "none",
    }
