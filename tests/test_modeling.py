import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModel

from modeling_relsim import RelSimModel
from modeling_relsim.modeling_relsim import multimodal_position_ids, unpad_pixel_values
from training.tiny_backbone import build_tiny_model


def test_embeddings_are_unit_vectors(model, processor, images):
    output = model(**processor(images))
    assert output.image_embeds.shape == (3, 384)
    assert output.query_hidden_states.shape == (3, 64)
    torch.testing.assert_close(output.image_embeds.norm(dim=-1), torch.ones(3), atol=1e-6, rtol=0)
    similarity = output.image_embeds @ output.image_embeds.T
    assert similarity[~torch.eye(3, dtype=torch.bool)].max() < 0.999


def test_tuple_output(model, processor, images):
    batch = processor(images)
    image_embeds, query_hidden_states, logit_scale = model(**batch, return_dict=False)
    torch.testing.assert_close(image_embeds, model(**batch).image_embeds)
    assert query_hidden_states.shape == (3, 64)
    assert logit_scale is model.temperature.logit_scale


@pytest.mark.parametrize("side", ["left", "right"])
def test_same_embedding_alone_and_in_a_padded_batch(aspect_processor, images, side):
    model = build_tiny_model(aspect_processor)
    batch = aspect_processor(images, padding_side=side)
    assert batch["attention_mask"].sum(-1).unique().numel() == 3
    with torch.no_grad():
        together = model(**batch).image_embeds
        alone = torch.cat([model(**aspect_processor([image])).image_embeds for image in images])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_a_batch_slices_per_sample(aspect_processor, images):
    model = build_tiny_model(aspect_processor)
    batch = aspect_processor(images)
    with torch.no_grad():
        full = model(**batch).image_embeds
        tail = model(**{key: value[1:] for key, value in batch.items()}).image_embeds
    torch.testing.assert_close(tail, full[1:], atol=1e-5, rtol=0)


def test_flat_pixel_layout_gives_the_same_embeddings(model, processor, images):
    batch = processor(images)
    flat = dict(batch, pixel_values=unpad_pixel_values(batch["pixel_values"], batch["image_grid_thw"]))
    assert flat["pixel_values"].dim() == 2
    with torch.no_grad():
        torch.testing.assert_close(model(**flat).image_embeds, model(**batch).image_embeds)


@pytest.mark.parametrize("side", ["left", "right"])
def test_positions_match_transformers_rope_index(aspect_processor, images, side):
    model = build_tiny_model(aspect_processor)
    batch = aspect_processor(images, padding_side=side)
    image_token_id = model.config.backbone_config.image_token_id
    ours = multimodal_position_ids(
        batch["input_ids"], batch["attention_mask"], batch["image_grid_thw"], image_token_id, 2
    )
    reference, _ = model.backbone.get_rope_index(
        batch["input_ids"],
        mm_token_type_ids=(batch["input_ids"] == image_token_id).int(),
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    attended = batch["attention_mask"].bool()
    assert torch.equal(ours[:, attended], reference[:, attended])


def test_missing_query_token_names_the_sample(model, processor, images):
    batch = processor(images)
    query = batch["input_ids"] == processor.query_token_id
    batch["input_ids"][1][query[1]] = processor.tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(ValueError, match="sample 1 holds 0 query tokens"):
        model(**batch)


def test_two_query_tokens_name_the_sample(model, processor, images):
    batch = processor(images)
    batch["input_ids"][0, 0] = processor.query_token_id
    with pytest.raises(ValueError, match="sample 0 holds 2 query tokens"):
        model(**batch)


def test_masked_query_token_is_not_counted(model, processor, images):
    batch = processor(images, padding_side="right")
    batch["attention_mask"][2, -1] = 0
    with pytest.raises(ValueError, match="sample 2 holds 0 query tokens"):
        model(**batch)


def test_unset_query_token_id_is_explained(model, processor, images):
    model.config.query_token_id = None
    with pytest.raises(ValueError, match="query_token_id is not set"):
        model(**processor(images))


def test_images_that_do_not_fit_the_tokens_are_refused(model, processor, images):
    batch = processor(images)
    batch["pixel_values"], batch["image_grid_thw"] = batch["pixel_values"][:2], batch["image_grid_thw"][:2]
    with pytest.raises(ValueError, match="48 image tokens but the images give 32 features"):
        model(**batch)


def test_embed_images_batches_and_matches_the_forward(model, processor, images, capfd):
    with torch.no_grad():
        expected = model(**processor(images)).image_embeds
    for batch_size in (1, 2, 5):
        embeddings = model.embed_images(images, processor, batch_size=batch_size)
        assert embeddings.dtype == torch.float32 and embeddings.device.type == "cpu"
        torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    capfd.readouterr()
    with_workers = model.embed_images(images * 2, processor, batch_size=2, num_workers=2, show_progress=True)
    torch.testing.assert_close(with_workers, torch.cat([expected, expected]), atol=1e-5, rtol=0)
    assert "embedding images" in capfd.readouterr().err
    assert not model.training


def test_embed_images_refuses_a_mismatched_processor(model, processor, images):
    processor.instruction = None
    with pytest.raises(ValueError, match="instruction"):
        model.embed_images(images, processor)
    with pytest.raises(ValueError, match="no images"):
        model.embed_images([], processor)


def test_save_and_reload_round_trip(model, processor, images, tmp_path):
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert not any("lm_head" in key for key in weights)
    assert {"query_embedding.weight", "projection.weight", "projection.bias", "temperature.logit_scale"} <= set(weights)
    assert {path.name for path in tmp_path.glob("*.py")} == {
        "configuration_relsim.py",
        "fast_path_compat.py",
        "image_batches.py",
        "image_decoding.py",
        "modeling_relsim.py",
        "processing_relsim.py",
        "vision_attention.py",
        "vision_layout.py",
    }
    batch = processor(images)
    with torch.no_grad():
        expected = model(**batch).image_embeds
        for reloaded in (RelSimModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
            assert isinstance(reloaded, RelSimModel)
            torch.testing.assert_close(reloaded(**batch).image_embeds, expected, atol=1e-6, rtol=0)


def test_new_parameters_are_initialised_by_seed(processor):
    first, second = build_tiny_model(processor, seed=0), build_tiny_model(processor, seed=1)
    for name in ("query_embedding.weight", "projection.weight", "projection.bias", "temperature.logit_scale"):
        torch.testing.assert_close(first.get_parameter(name), second.get_parameter(name), atol=0, rtol=0)
    assert first.query_embedding.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert first.logit_scale.item() == pytest.approx(2.6593, abs=1e-4)
    assert not torch.equal(
        first.backbone.visual.blocks[0].attn.qkv.weight, second.backbone.visual.blocks[0].attn.qkv.weight
    )


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementations_agree(model, processor, images, tmp_path, implementation):
    model.save_pretrained(tmp_path)
    loaded = RelSimModel.from_pretrained(tmp_path, attn_implementation=implementation)
    assert loaded.config.backbone_config.text_config._attn_implementation == implementation
    assert loaded.config.backbone_config.vision_config._attn_implementation == implementation
    batch = processor(images)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).image_embeds, model(**batch).image_embeds, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_stays_close_to_float32(model, processor, images, tmp_path, dtype):
    model.save_pretrained(tmp_path)
    half = RelSimModel.from_pretrained(tmp_path, dtype=dtype)
    assert {parameter.dtype for parameter in half.parameters()} == {dtype}
    batch = processor(images)
    with torch.no_grad():
        embeds = half(**batch).image_embeds
        reference = model(**batch).image_embeds
    assert embeds.dtype == dtype
    assert F.cosine_similarity(embeds.float(), reference, dim=-1).min() > 0.99


def test_device_map_loading_respects_no_split_modules(model, processor, images, tmp_path):
    model.save_pretrained(tmp_path)
    placed = RelSimModel.from_pretrained(tmp_path, device_map="auto")
    assert {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"} <= set(placed._no_split_modules)
    assert {parameter.device.type for parameter in placed.parameters()} == {"cpu"}
    batch = processor(images)
    with torch.no_grad():
        torch.testing.assert_close(placed(**batch).image_embeds, model(**batch).image_embeds, atol=1e-6, rtol=0)


def _parameter_gradients(model, batch):
    model.zero_grad()
    output = model(**batch)
    targets = F.normalize(torch.linspace(-1, 1, 3 * 384).reshape(3, 384).sin(), dim=-1)
    logits = model.logit_scale.exp() * output.image_embeds @ targets.T
    F.cross_entropy(logits, torch.arange(3)).backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


def test_gradient_checkpointing_is_non_reentrant_and_exact(model, processor, images):
    batch = processor(images)
    model.train()
    plain = _parameter_gradients(model, batch)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    layer = model.backbone.language_model.layers[0]
    assert layer.gradient_checkpointing and layer._gradient_checkpointing_func.keywords["use_reentrant"] is False
    checkpointed = _parameter_gradients(model, batch)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_precomputed_vision_features_give_the_same_embeddings(model, processor, images):
    batch = processor(images)
    with torch.no_grad():
        features = model.get_vision_features(batch["pixel_values"], batch["image_grid_thw"])
        direct = model(**batch).image_embeds
        reused = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       image_grid_thw=batch["image_grid_thw"], image_features=features).image_embeds  # fmt: skip
    assert features.shape == (int((batch["input_ids"] == model.config.backbone_config.image_token_id).sum()), 64)
    torch.testing.assert_close(reused, direct, atol=0, rtol=0)
