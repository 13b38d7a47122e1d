"""The tuned vision-encoder baselines: tiny CLIP/DINOv2 train under RelSimTrainer, export, reload and embed."""

import pytest
import torch
from evaluation_helpers import save_tiny_clip, save_tiny_dinov2
from helpers import PATTERN_CAPTIONS, pattern_dataset
from transformers import CLIPModel, Dinov2Model

from training.evaluation.methods.base import embed_image_list
from training.evaluation.methods.build import MethodOptions, build_method
from training.evaluation.methods.tuned_encoder import TunedEncoderMethod
from training.trainer.arguments import ModelArguments, RelSimTrainingArguments
from training.trainer.collator import ImageEncoderCollator, build_collator
from training.trainer.data import image_caption_dataset
from training.trainer.image_encoder import image_encoder_of
from training.trainer.model_factory import build_processor_and_model
from training.trainer.trainer import RelSimTrainer
from training.tuned_encoders import TunedImageEncoder, build_tiny_encoder


@pytest.fixture(scope="module")
def patterns():
    return image_caption_dataset(pattern_dataset(128, seed=0))


def make_trainer(model, image_processor, train_dataset, caption_encoder, output_dir, **overrides):
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 16,
        "max_steps": 12,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 3,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **overrides,
    }
    return RelSimTrainer(
        model=model,
        args=RelSimTrainingArguments(**settings),
        train_dataset=train_dataset,
        data_collator=build_collator(image_processor),
        processing_class=image_processor,
        caption_encoder=caption_encoder,
    )


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_a_tiny_tuned_encoder_learns_exports_and_embeds_the_same_after_loading(
    kind, patterns, caption_encoder, tmp_path
):
    image_processor, model = build_tiny_encoder(kind, seed=0)
    trainer = make_trainer(model, image_processor, patterns, caption_encoder, tmp_path)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and losses[-1] < losses[0] - 0.1, losses

    folder = trainer.export_model(tmp_path / "final")
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {path.name for path in folder.iterdir()}
    images = pattern_dataset(10, seed=1)["image"]
    in_memory = TunedEncoderMethod("trained", model=trainer.model, image_processor=image_processor)
    loaded = build_method(f"tuned-{'dino' if kind == 'dinov2' else kind}", MethodOptions(model=str(folder)))
    expected = embed_image_list(in_memory, images, batch_size=4)
    torch.testing.assert_close(embed_image_list(loaded, images, batch_size=4), expected, atol=1e-5, rtol=0)
    assert expected.shape == (10, 384)
    torch.testing.assert_close(expected.norm(dim=-1), torch.ones(10))
    reloaded = TunedImageEncoder.from_pretrained(folder)
    torch.testing.assert_close(reloaded.logit_scale, trainer.model.logit_scale)


def test_the_wrong_tuned_method_name_is_refused(tmp_path):
    _, model = build_tiny_encoder("dinov2")
    model.save_pretrained(tmp_path)
    build_tiny_encoder("dinov2")[0].save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="holds a tuned-dino model; use --method tuned-dino"):
        build_method("tuned-clip", MethodOptions(model=str(tmp_path)))


def test_from_encoder_keeps_clip_image_features_and_dino_cls_tokens(tmp_path, images):
    """Every pretrained weight loads: before training, the pooled feature is what CLIP-I and DINO compare."""
    clip_folder, dino_folder = save_tiny_clip(tmp_path / "clip"), save_tiny_dinov2(tmp_path / "dino")
    clip = TunedImageEncoder.from_encoder(str(clip_folder), projection_dim=8)
    pixels = torch.randn(2, 3, 32, 32)
    reference = CLIPModel.from_pretrained(clip_folder).get_image_features(pixel_values=pixels)
    reference = getattr(reference, "pooler_output", reference)
    torch.testing.assert_close(clip.get_encoder_features(pixels), reference)
    dino = TunedImageEncoder.from_encoder(str(dino_folder), projection_dim=8)
    pixels = torch.randn(2, 3, 28, 28)
    reference = Dinov2Model.from_pretrained(dino_folder)(pixel_values=pixels).last_hidden_state[:, 0]
    torch.testing.assert_close(dino.get_encoder_features(pixels), reference)
    assert dino.get_image_features(pixel_values=pixels).shape == (2, 8)
    # two builds around the same encoder get the same new projection (seeded)
    again = TunedImageEncoder.from_encoder(str(dino_folder), projection_dim=8)
    torch.testing.assert_close(again.projection.weight, dino.projection.weight)


@pytest.mark.parametrize("trainable_layers", [None, 0])
def test_grad_cache_gives_the_full_batch_gradients_for_a_tuned_encoder(
    patterns, caption_encoder, tmp_path, trainable_layers
):
    """Also when the encoder is frozen and GradCache feeds the projection precomputed features."""
    examples = [{"image": patterns[index]["image"], "caption": PATTERN_CAPTIONS[index % 3]} for index in range(9)]
    image_processor = build_tiny_encoder("clip")[0]
    batch = ImageEncoderCollator(image_processor)(examples)
    gradients = {}
    for micro_batch_size in (None, 2):
        model = build_tiny_encoder("clip", seed=0)[1]
        model.train_last_layers(trainable_layers)
        trainer = make_trainer(
            model, image_processor, None, caption_encoder, tmp_path, contrastive_micro_batch_size=micro_batch_size
        )
        trainer.current_gradient_accumulation_steps = 1
        loss = trainer.training_step(model, dict(batch))
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        gradients[micro_batch_size] = loss, grads
    (full_loss, full), (cached_loss, cached) = gradients[None], gradients[2]
    assert cached_loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    assert full.keys() == cached.keys()
    assert "temperature.logit_scale" in full and "projection.weight" in full
    assert ("encoder.vision_model.embeddings.patch_embedding.weight" in full) == (trainable_layers is None)
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-6, rtol=1e-4, msg=name)


def test_train_last_layers_trains_the_top_blocks_and_the_heads_only():
    model = build_tiny_encoder("dinov2")[1]
    model.train_last_layers(1)
    trainable = {
        name.split(".")[1] + "." + name.split(".")[2]
        for name, p in model.named_parameters()
        if p.requires_grad and name.startswith("encoder.")
    }
    assert trainable == {"encoder.layer", "layernorm.weight", "layernorm.bias"}
    assert all(p.requires_grad for name, p in model.named_parameters() if name.startswith("encoder.encoder.layer.1."))
    assert not any(p.requires_grad for name, p in model.named_parameters() if ".layer.0." in name)
    assert model.projection.weight.requires_grad and model.logit_scale.requires_grad
    with pytest.raises(ValueError, match="has 2 layers; cannot train the last 3"):
        model.train_last_layers(3)


def test_the_recipe_fields_build_a_tiny_encoder_and_refuse_lora():
    processor, model = build_processor_and_model(ModelArguments(tiny_image_encoder="dinov2", use_lora=False))
    assert isinstance(model, TunedImageEncoder) and model.config.projection_dim == 384
    assert isinstance(build_collator(processor), ImageEncoderCollator)
    with pytest.raises(ValueError, match="set use_lora: false for an image encoder"):
        ModelArguments(tiny_image_encoder="clip")
    with pytest.raises(ValueError, match="tiny_image_encoder must be clip or dinov2"):
        ModelArguments(tiny_image_encoder="vit", use_lora=False)


def test_the_trainer_names_what_a_model_lacks():
    with pytest.raises(TypeError, match="Linear lacks logit_scale, get_image_features, save_pretrained, config"):
        image_encoder_of(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("kind", ["clip", "dinov2"])
def test_the_relations_recipes_train_on_the_seen_relations_of_the_compositional_world(kind):
    from training.synthetic.relations import relation_split
    from training.trainer.data import load_training_data
    from training.trainer.train import parse_arguments

    recipe = f"training/configs/tuned-{kind}-relations-tiny-cpu.yaml"
    model_arguments, data_arguments, _ = parse_arguments(["--config", recipe])
    assert model_arguments.tiny_image_encoder == kind and data_arguments.synthetic_world == "relations"
    small = ["--synthetic_num_per_family", "1", "--synthetic_eval_num_per_family", "1"]
    _, data_arguments, _ = parse_arguments(["--config", recipe, *small])
    train, held_out = load_training_data(data_arguments, seed=0)
    seen = {relation.caption for relation in relation_split("train")}
    assert len(train) == 305 and set(train["caption"]) == seen
    assert len(held_out) == 407  # held-out looks of every relation, the unseen ones included
