import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file

from modeling_relsim import RelSimModel
from training.tiny_backbone import build_tiny_model
from training.trainer.lora import relsim_lora_config


def contrastive_loss(model, batch):
    output = model(**batch)
    targets = F.normalize(torch.linspace(-1, 1, 3 * 384).reshape(3, 384).cos(), dim=-1)
    logits = model.logit_scale.exp() * output.image_embeds @ targets.T
    return F.cross_entropy(logits, torch.arange(3))


@pytest.fixture
def lora_model(model):
    peft_model = get_peft_model(model, relsim_lora_config(r=4, lora_alpha=8, lora_dropout=0.0))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return peft_model.eval()


def test_lora_sits_on_language_model_attention_only(lora_model):
    lora_modules = {name.rsplit(".lora_A", 1)[0] for name, _ in lora_model.named_parameters() if ".lora_A" in name}
    assert lora_modules == {
        f"base_model.model.backbone.language_model.layers.{layer}.self_attn.{projection}"
        for layer in (0, 1)
        for projection in ("q_proj", "v_proj")
    }


def test_gradients_reach_exactly_the_trainable_parts(lora_model, processor, images):
    lora_model.train()
    contrastive_loss(lora_model.base_model.model, processor(images)).backward()
    trainable = {name for name, parameter in lora_model.named_parameters() if parameter.requires_grad}
    with_gradient = {name for name, parameter in lora_model.named_parameters() if parameter.grad is not None}
    assert with_gradient == trainable
    assert {
        name.split(".modules_to_save")[0].removeprefix("base_model.model.")
        for name in trainable
        if "modules_to_save" in name
    } == {
        "query_embedding",
        "projection",
        "temperature",
    }
    assert all(".lora_" in name or ".modules_to_save." in name for name in trainable)
    for name, parameter in lora_model.named_parameters():
        if "lora_B" in name or "modules_to_save" in name:
            assert parameter.grad.abs().sum() > 0, name


def test_adapter_round_trip(lora_model, processor, images, tmp_path):
    batch = processor(images)
    with torch.no_grad():
        expected = lora_model(**batch).image_embeds
    lora_model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert any("query_embedding" in key for key in saved) and any("temperature" in key for key in saved)
    reloaded = PeftModel.from_pretrained(build_tiny_model(processor, seed=0), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).image_embeds, expected, atol=1e-6, rtol=0)


def test_merged_model_saves_as_a_plain_relsim_model(lora_model, processor, images, tmp_path):
    batch = processor(images)
    with torch.no_grad():
        expected = lora_model(**batch).image_embeds
        base_embeds = build_tiny_model(processor, seed=0)(**batch).image_embeds
    assert (expected - base_embeds).abs().max() > 1e-3
    merged = lora_model.merge_and_unload()
    assert type(merged) is RelSimModel
    assert not any("lora" in name or "modules_to_save" in name for name, _ in merged.named_parameters())
    merged.save_pretrained(tmp_path)
    assert not any("lora" in key or "modules_to_save" in key for key in load_file(tmp_path / "model.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).image_embeds, expected, atol=1e-5, rtol=0)
        reloaded = RelSimModel.from_pretrained(tmp_path)
        torch.testing.assert_close(reloaded(**batch).image_embeds, expected, atol=1e-5, rtol=0)


def test_bf16_lora_trains_its_small_parts_in_float32(model, processor, images):
    """The backbone in bfloat16, the trainable parts in float32: a 1e-4 step moves the logit scale (about 2.66),
    which a bfloat16 copy could not hold (its steps there are 0.016)."""
    from training.trainer.arguments import ModelArguments
    from training.trainer.model_factory import make_trainable

    trainable = make_trainable(model.to(torch.bfloat16), ModelArguments(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    dtypes = {name: parameter.dtype for name, parameter in trainable.named_parameters() if parameter.requires_grad}
    assert set(dtypes.values()) == {torch.float32}
    assert any("temperature.modules_to_save" in name for name in dtypes)
    frozen = {parameter.dtype for parameter in trainable.parameters() if not parameter.requires_grad}
    assert frozen == {torch.bfloat16}

    logit_scale = trainable.base_model.model.temperature.modules_to_save["default"].logit_scale
    before = logit_scale.detach().item()
    optimizer = torch.optim.SGD([parameter for parameter in trainable.parameters() if parameter.requires_grad], lr=1e-4)
    trainable.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = contrastive_loss(trainable, processor(images))
    loss.backward()
    assert logit_scale.grad is not None and logit_scale.grad.dtype == torch.float32
    optimizer.step()
    after = logit_scale.detach().item()
    assert after == pytest.approx(before - 1e-4 * logit_scale.grad.item(), abs=1e-7)
    assert after != before
    assert torch.tensor(before, dtype=torch.bfloat16) == torch.tensor(after, dtype=torch.bfloat16)
