import io
import json
import logging

import datasets
import pytest
import torch
from helpers import PATTERN_CAPTIONS, embed_in_clean_process, pattern_dataset
from peft import get_peft_model
from transformers import Trainer

from modeling_relsim import RelSimModel
from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.trainer.arguments import RelSimTrainingArguments
from training.trainer.collator import RelSimCollator
from training.trainer.data import image_caption_dataset
from training.trainer.lora import relsim_lora_config
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.trainer import RelSimTrainer


@pytest.fixture
def short_prompt_processor():
    """No system turn and no instruction: the tiny model learns fastest when the image dominates the prompt."""
    return build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)


@pytest.fixture(scope="module")
def patterns():
    return image_caption_dataset(pattern_dataset(256, seed=0))


def make_trainer(model, processor, train_dataset, caption_encoder, output_dir, eval_dataset=None, **overrides):
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 16,
        "max_steps": 10,
        "learning_rate": 3e-4,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 10,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        **overrides,
    }
    return RelSimTrainer(
        model=model,
        args=RelSimTrainingArguments(**settings),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=RelSimCollator(processor),
        processing_class=processor,
        caption_encoder=caption_encoder,
    )


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def test_a_tiny_model_learns_the_patterns(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0)
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path, max_steps=120)
    trainer.train()
    losses, accuracies = logged(trainer, "loss"), logged(trainer, "accuracy")
    assert len(losses) == 12
    assert losses[-1] < 0.5 * losses[0]
    assert accuracies[-1] > accuracies[0] + 0.3
    assert all(value == pytest.approx(0.07, abs=0.01) for value in logged(trainer, "temperature"))


def test_evaluation_reports_loss_accuracy_and_recall(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0)
    held_out = image_caption_dataset(pattern_dataset(40, seed=1))
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path, eval_dataset=held_out)
    metrics = trainer.evaluate()
    assert {
        "eval_loss",
        "eval_accuracy",
        "eval_recall@1",
        "eval_recall@5",
        "eval_logit_scale",
        "eval_temperature",
    } <= set(metrics)
    assert metrics["eval_recall@5"] == 1.0  # four distinct captions: every caption is in the top 5
    assert 0.0 <= metrics["eval_recall@1"] <= 1.0
    assert metrics["eval_logit_scale"] == pytest.approx(model.logit_scale.item(), abs=1e-5)


def _gradients(model):
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters() if parameter.grad is not None}


@pytest.mark.parametrize("symmetric", [False, True])
def test_grad_cache_gives_the_full_batch_gradients(aspect_processor, images, caption_encoder, tmp_path, symmetric):
    examples = [
        {"image": image, "caption": PATTERN_CAPTIONS[index % 3]}
        for index, image in enumerate(images * 3)  # nine images of three shapes, three captions shared three times
    ]
    batch = RelSimCollator(aspect_processor)(examples)
    gradients = {}
    for micro_batch_size, accumulation_steps in ((None, 1), (2, 1), (2, 4)):
        model = build_tiny_model(aspect_processor, seed=0)
        trainer = make_trainer(
            model,
            aspect_processor,
            None,
            caption_encoder,
            tmp_path,
            contrastive_micro_batch_size=micro_batch_size,
            symmetric_loss=symmetric,
        )
        trainer.current_gradient_accumulation_steps = accumulation_steps
        loss = trainer.training_step(model, dict(batch))
        gradients[micro_batch_size, accumulation_steps] = (loss, _gradients(model))
    (full_loss, full), (cached_loss, cached) = gradients[None, 1], gradients[2, 1]
    assert cached_loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    assert full.keys() == cached.keys()
    assert "temperature.logit_scale" in full and "backbone.visual.patch_embed.proj.weight" in full
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-6, rtol=1e-4, msg=name)
    # the stock training_step divides the loss by the accumulation steps; the replays receive that scale
    accumulated_loss, accumulated = gradients[2, 4]
    assert accumulated_loss.item() == pytest.approx(full_loss.item() / 4, abs=1e-6)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name] / 4, atol=1e-6, rtol=1e-4, msg=name)


def test_the_trainer_keeps_transformers_training_step():
    assert "training_step" not in RelSimTrainer.__dict__
    assert RelSimTrainer.training_step is Trainer.training_step


def test_grad_cache_replays_run_under_the_runs_autocast(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0)
    forwards = []
    model.backbone.language_model.register_forward_hook(
        lambda module, args, output: forwards.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))
    )
    trainer = make_trainer(
        model,
        short_prompt_processor,
        patterns,
        caption_encoder,
        tmp_path,
        max_steps=1,
        per_device_train_batch_size=8,
        contrastive_micro_batch_size=4,
        bf16=True,
    )
    trainer.train()
    # two micro-batches: embedded without a graph, then replayed with one during backward, all in bf16 autocast
    assert forwards == [(False, True), (False, True), (True, True), (True, True)]


def test_grad_cache_with_lora_runs_the_frozen_vision_tower_once_per_micro_batch(
    aspect_processor, images, caption_encoder, tmp_path
):
    examples = [{"image": image, "caption": PATTERN_CAPTIONS[index % 3]} for index, image in enumerate(images * 3)]
    batch = RelSimCollator(aspect_processor)(examples)
    results = {}
    for micro_batch_size in (None, 2):
        # no LoRA dropout: micro-batches draw other dropout masks than the full batch
        lora = relsim_lora_config(r=4, lora_alpha=8, lora_dropout=0.0)
        model = get_peft_model(build_tiny_model(aspect_processor, seed=0), lora)
        visual = model.get_base_model().backbone.visual
        calls = []
        visual.register_forward_hook(lambda module, args, output, calls=calls: calls.append(1))
        trainer = make_trainer(model, aspect_processor, None, caption_encoder, tmp_path,
                               contrastive_micro_batch_size=micro_batch_size)  # fmt: skip
        trainer.current_gradient_accumulation_steps = 1
        loss = trainer.training_step(model, dict(batch))
        results[micro_batch_size] = (loss, _gradients(model), len(calls))
    (full_loss, full, full_calls), (cached_loss, cached, cached_calls) = results[None], results[2]
    assert (full_calls, cached_calls) == (1, 5)  # five micro-batches, the tower not run again in the replay
    assert cached_loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    assert full.keys() == cached.keys() and not any("visual" in name for name in full)
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-6, rtol=1e-4, msg=name)


def test_resume_continues_the_loss_curve_exactly(short_prompt_processor, patterns, caption_encoder, tmp_path):
    def lora_model():
        return get_peft_model(build_tiny_model(short_prompt_processor, seed=0), relsim_lora_config(r=4, lora_alpha=8))

    settings = {"max_steps": 8, "logging_steps": 1, "save_strategy": "steps", "save_steps": 4, "learning_rate": 1e-3}
    first = make_trainer(lora_model(), short_prompt_processor, patterns, caption_encoder, tmp_path / "a", **settings)
    first.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"
    assert {"adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= {
        path.name for path in checkpoint.iterdir()
    }
    second = make_trainer(lora_model(), short_prompt_processor, patterns, caption_encoder, tmp_path / "b", **settings)
    second.train(resume_from_checkpoint=str(checkpoint))
    saved_history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in saved_history if "loss" in entry] == [1, 2, 3, 4]
    # the resumed history is the checkpoint's four entries followed by steps 5-8 computed again
    new_entries = [entry for entry in second.state.log_history if "loss" in entry and entry["step"] > 4]
    assert [entry["step"] for entry in new_entries] == [5, 6, 7, 8]
    assert logged(second, "loss") == pytest.approx(logged(first, "loss"), abs=1e-6)
    assert logged(second, "logit_scale") == pytest.approx(logged(first, "logit_scale"), abs=1e-6)
    assert logged(first, "loss")[4:] != logged(first, "loss")[:4]


def test_unreadable_images_are_skipped_counted_and_reported(short_prompt_processor, caption_encoder, tmp_path):
    clean = pattern_dataset(30, seed=2)
    rows = {"image": [], "caption": []}
    for index, example in enumerate(clean):
        buffer = io.BytesIO()
        example["image"].save(buffer, "PNG")
        content = buffer.getvalue()
        rows["image"].append({"bytes": content[:50] if index in (3, 17) else content, "path": f"image-{index}.png"})
        rows["caption"].append(example["caption"])
    features = datasets.Features({"image": datasets.Image(decode=False), "caption": datasets.Value("string")})
    dataset = datasets.Dataset.from_dict(rows, features=features)
    model = build_tiny_model(short_prompt_processor, seed=0)
    trainer = make_trainer(
        model, short_prompt_processor, dataset, caption_encoder, tmp_path, max_steps=4, max_unreadable_fraction=0.1
    )
    trainer.train()
    report = [json.loads(line) for line in (tmp_path / "unreadable_images.jsonl").read_text().splitlines()]
    assert [(row["split"], row["source"]) for row in report] == [("train", "image-17.png"), ("train", "image-3.png")]
    assert all(row["occurrences"] >= 1 and "truncated" in row["reason"] for row in report)

    strict = make_trainer(
        build_tiny_model(short_prompt_processor, seed=0),
        short_prompt_processor,
        dataset,
        caption_encoder,
        tmp_path / "strict",
        max_steps=4,
        max_unreadable_fraction=0.05,
    )
    with pytest.raises(RuntimeError, match=r"2 distinct training images are unreadable.*unreadable_images\.jsonl"):
        strict.train()
    assert (tmp_path / "strict" / "unreadable_images.jsonl").is_file()


def test_fixed_temperature_stays_fixed(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0)
    initial = model.logit_scale.item()
    trainer = make_trainer(
        model, short_prompt_processor, patterns, caption_encoder, tmp_path, max_steps=3, fixed_logit_scale=3.0
    )
    trainer.train()
    assert not model.temperature.logit_scale.requires_grad
    assert model.logit_scale.item() == initial
    assert logged(trainer, "logit_scale") == [3.0]


def test_no_weight_decay_on_temperature_and_query(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0)
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path)
    names = trainer.get_decay_parameter_names(model)
    assert "projection.weight" in names
    assert "temperature.logit_scale" not in names and "query_embedding.weight" not in names
    assert "projection.bias" not in names


def test_the_papers_trainer_refuses_objective_options_instead_of_dropping_them(
    short_prompt_processor, caption_encoder, tmp_path
):
    model = build_tiny_model(short_prompt_processor, seed=0)
    settings = {"output_dir": str(tmp_path), "use_cpu": True, "report_to": []}
    options = ObjectiveTrainingArguments(**settings, distill_alpha=0.4, num_prototypes=3, sinkhorn_iterations=5)
    with pytest.raises(ValueError, match=r"^RelSimTrainer trains the paper's method, which has no distill_alpha, "
                       r"num_prototypes: train these options with ObjectiveTrainer"):  # fmt: skip
        RelSimTrainer(model=model, args=options, caption_encoder=caption_encoder)
    # options off: the paper's trainer takes the options' arguments as they are
    assert RelSimTrainer(model=model, args=ObjectiveTrainingArguments(**settings), caption_encoder=caption_encoder)
    with pytest.raises(TypeError, match=r"ObjectiveTrainer needs ObjectiveTrainingArguments .*, got RelSimTrainingArg"):
        ObjectiveTrainer(model=model, args=RelSimTrainingArguments(**settings), caption_encoder=caption_encoder)


def test_text_encoder_size_must_match_the_projection(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = build_tiny_model(short_prompt_processor, seed=0, projection_dim=32)
    with pytest.raises(ValueError, match="384-d embeddings but the model projects to 32"):
        make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path)


def test_export_loads_through_remote_code(short_prompt_processor, patterns, caption_encoder, tmp_path):
    model = get_peft_model(build_tiny_model(short_prompt_processor, seed=0), relsim_lora_config(r=4, lora_alpha=8))
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path / "run", max_steps=3)
    trainer.train()
    trainer.model.eval()
    image_paths = []
    for index in range(3):
        image_paths.append(tmp_path / f"query-{index}.png")
        patterns.cast_column("image", datasets.Image())[index]["image"].save(image_paths[-1])
    with torch.no_grad():
        expected = trainer.model.base_model.model.embed_images(
            [str(path) for path in image_paths], short_prompt_processor
        )
    exported = trainer.export_model()
    assert exported == tmp_path / "run" / "final"
    assert isinstance(trainer.model, RelSimModel)
    embeddings, _ = embed_in_clean_process(exported, image_paths, tmp_path)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)


def test_warm_up_longer_than_training_is_announced(short_prompt_processor, patterns, caption_encoder, tmp_path, caplog):
    model = build_tiny_model(short_prompt_processor, seed=0)
    settings = {"max_steps": 60, "lr_scheduler_type": "cosine", "learning_rate": 1e-4}
    trainer = make_trainer(
        model, short_prompt_processor, patterns, caption_encoder, tmp_path, **settings, warmup_steps=100
    )
    with caplog.at_level(logging.WARNING, logger="training.trainer.trainer"):
        trainer.create_optimizer_and_scheduler(num_training_steps=60)
    assert "warm-up lasts 100 steps but training only 60" in caplog.text
    assert trainer.lr_scheduler.get_last_lr()[0] == 0.0  # the schedule is the Trainer's, unchanged
    for warmup_steps in (0.1, 59):  # a fraction of training, or a warm-up that ends before training does
        caplog.clear()
        trainer = make_trainer(
            model, short_prompt_processor, patterns, caption_encoder, tmp_path, **settings, warmup_steps=warmup_steps
        )
        with caplog.at_level(logging.WARNING, logger="training.trainer.trainer"):
            trainer.create_optimizer_and_scheduler(num_training_steps=60)
        assert "warm-up" not in caplog.text
