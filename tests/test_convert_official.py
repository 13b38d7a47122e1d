"""The converter against an official-format folder made here: base Qwen2.5-VL + PEFT LoRA adapter + tokenizer with
<|query|> + projection_and_config.pt, compared with the official embedding recipe run on the unmerged adapter."""

import shutil

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AddedToken, AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from modeling_relsim import RelSimModel, RelSimProcessor
from modeling_relsim.convert_official import convert_official_checkpoint
from training.trainer.__main__ import main


@pytest.fixture
def official_checkpoint(backbone_dir, tmp_path):
    checkpoint = tmp_path / "official"
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir)
    tokenizer.add_tokens([AddedToken("<|query|>", special=True, normalized=False)], special_tokens=True)
    tokenizer.save_pretrained(checkpoint)
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(backbone_dir)
    adapter = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in adapter.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    adapter.save_pretrained(checkpoint)
    query_token_id = tokenizer.convert_tokens_to_ids("<|query|>")
    extras = {
        "projection": {
            "weight": torch.randn(384, 64, generator=generator) * 0.05,
            "bias": torch.randn(384, generator=generator) * 0.01,
        },
        "query_token_id": query_token_id,
        "hidden_size": 64,
    }
    torch.save(extras, checkpoint / "projection_and_config.pt")
    return checkpoint, adapter.eval(), extras


def official_embeddings(adapter, extras, checkpoint, images):
    """The official recipe: one image per forward, full prompt with the generation turn, output_hidden_states."""
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    image_processor = Qwen2VLImageProcessorPil()
    query_token_id = extras["query_token_id"]
    embeddings = []
    for image in images:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "<|query|>"}]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pixels = image_processor(images=[image], return_tensors="pt")
        image_tokens = int(pixels["image_grid_thw"].prod()) // 4
        input_ids = tokenizer(text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens), return_tensors="pt")[
            "input_ids"
        ]
        image_token_id = adapter.config.image_token_id
        with torch.no_grad():
            hidden = adapter(
                input_ids=input_ids,
                pixel_values=pixels["pixel_values"],
                image_grid_thw=pixels["image_grid_thw"],
                mm_token_type_ids=(input_ids == image_token_id).int(),
                output_hidden_states=True,
            ).hidden_states[-1]
        query_hidden = hidden[0, (input_ids[0] == query_token_id).nonzero()[0, 0]]
        projected = query_hidden @ extras["projection"]["weight"].T + extras["projection"]["bias"]
        embeddings.append(F.normalize(projected, dim=-1))
    return torch.stack(embeddings)


@pytest.fixture
def square_images():
    """448x448 inputs, as the official pipeline feeds them."""
    generator = np.random.default_rng(3)
    return [PIL.Image.fromarray(generator.integers(0, 256, (448, 448, 3), dtype=np.uint8)) for _ in range(2)]


def test_converted_model_matches_the_official_embedding(official_checkpoint, backbone_dir, square_images, tmp_path):
    checkpoint, adapter, extras = official_checkpoint
    output = tmp_path / "converted"
    main(["convert-official", "--checkpoint", str(checkpoint), "--base", str(backbone_dir), "--output", str(output)])
    model = RelSimModel.from_pretrained(output)
    processor = RelSimProcessor.from_pretrained(output)
    assert model.config.instruction is None and model.config.use_system_prompt
    assert processor.settings() == model.config.processor_settings()
    assert processor.render_prompt().endswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><|query|>")
    assert not any("lora" in key for key in load_file(output / "model.safetensors"))
    expected = official_embeddings(adapter, extras, checkpoint, square_images)
    torch.testing.assert_close(model.embed_images(square_images, processor), expected, atol=1e-5, rtol=0)
    base_row = adapter.get_input_embeddings().weight[extras["query_token_id"]]
    torch.testing.assert_close(model.query_embedding.weight, base_row)


def test_adapter_saved_with_transformers_4_names_converts_the_same(official_checkpoint, backbone_dir, tmp_path):
    checkpoint, _, _ = official_checkpoint
    legacy = tmp_path / "legacy"
    shutil.copytree(checkpoint, legacy)
    weights = load_file(legacy / "adapter_model.safetensors")
    renamed = {key.replace("model.language_model.", "model."): tensor for key, tensor in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, legacy / "adapter_model.safetensors", metadata={"format": "pt"})
    new = convert_official_checkpoint(checkpoint, str(backbone_dir), tmp_path / "new")
    old = convert_official_checkpoint(legacy, str(backbone_dir), tmp_path / "old")
    new_weights, old_weights = load_file(new / "model.safetensors"), load_file(old / "model.safetensors")
    assert new_weights.keys() == old_weights.keys()
    for key, tensor in new_weights.items():
        assert torch.equal(old_weights[key], tensor), key


def test_missing_extras_file_is_named(official_checkpoint, backbone_dir, tmp_path):
    checkpoint, _, _ = official_checkpoint
    (checkpoint / "projection_and_config.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"projection_and_config\.pt"):
        convert_official_checkpoint(checkpoint, str(backbone_dir), tmp_path / "out")


def test_query_id_that_disagrees_with_the_tokenizer_is_refused(official_checkpoint, backbone_dir, tmp_path):
    checkpoint, _, extras = official_checkpoint
    torch.save(dict(extras, query_token_id=extras["query_token_id"] - 1), checkpoint / "projection_and_config.pt")
    with pytest.raises(ValueError, match="query token id"):
        convert_official_checkpoint(checkpoint, str(backbone_dir), tmp_path / "out")


def test_adapter_that_does_not_fit_is_refused(official_checkpoint, backbone_dir, tmp_path):
    checkpoint, _, _ = official_checkpoint
    weights = load_file(checkpoint / "adapter_model.safetensors")
    weights = {key.replace("self_attn", "cross_attn"): tensor for key, tensor in weights.items()}
    save_file(weights, checkpoint / "adapter_model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="does not fit"):
        convert_official_checkpoint(checkpoint, str(backbone_dir), tmp_path / "out")
