"""The objective options inside ObjectiveTrainer: GradCache exactness, the queue's masking, training, resuming."""

import re
import shutil
from functools import partial

import pytest
import torch
from helpers import PATTERN_CAPTIONS, pattern_dataset
from peft import get_peft_model
from safetensors.torch import load_file
from transformers import TrainerCallback

from training.caption_text import normalize_caption
from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.trainer.checkpoints import resolve_resume_checkpoint
from training.trainer.collator import RelSimCollator
from training.trainer.data import image_caption_dataset
from training.trainer.lora import relsim_lora_config
from training.trainer.losses import caption_id
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.state_file import objective_state_problem
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.objectives.training_objectives import OBJECTIVE_STATE_FILE


EVERY_OPTION = {
    "intra_image_weight": 0.5,
    "distill_alpha": 0.4,
    "distill_ramp_steps": 2,
    "caption_queue_size": 16,
    "num_prototypes": 3,
}
OTHER_CAPTIONS = ('"one {Object} inside another {Object}"', '"three {Object}s in a row"')


@pytest.fixture
def short_prompt_processor():
    return build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)


def make_trainer(model, processor, train_dataset, caption_encoder, output_dir, eval_dataset=None, **overrides):
    settings = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "max_steps": 10,
        "learning_rate": 3e-4,
        "lr_scheduler_type": "constant",
        "logging_steps": 10,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "seed": 0,
        "disable_tqdm": True,
        **overrides,
    }
    return ObjectiveTrainer(
        model=model,
        args=ObjectiveTrainingArguments(**settings),
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=RelSimCollator(processor),
        processing_class=processor,
        caption_encoder=caption_encoder,
    )


def queue_captions(trainer, captions):
    """Puts `captions` into the trainer's caption queue, as earlier steps would have."""
    normalised = [normalize_caption(caption) for caption in captions]
    ids = [caption_id(caption) for caption in normalised]
    trainer.objectives.queue.enqueue(trainer.caption_encoder(normalised, ids), torch.tensor(ids))


def logged(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


@pytest.mark.parametrize("symmetric", [False, True])
def test_grad_cache_gives_the_full_batch_gradients_with_every_objective(
    aspect_processor, images, caption_encoder, tmp_path, symmetric
):
    examples = [{"image": image, "caption": PATTERN_CAPTIONS[index % 3]} for index, image in enumerate(images * 3)]
    batch = RelSimCollator(aspect_processor)(examples)
    results = {}
    for micro_batch_size, accumulation_steps in ((None, 1), (2, 1), (2, 4)):
        model = build_tiny_model(aspect_processor, seed=0)
        trainer = make_trainer(model, aspect_processor, None, caption_encoder, tmp_path, symmetric_loss=symmetric,
                               contrastive_micro_batch_size=micro_batch_size, **EVERY_OPTION)  # fmt: skip
        # the state of a run some steps in: a queue holding two other captions and a copy of a batch caption, an
        # EMA teacher that differs from the model, alpha half ramped up
        queue_captions(trainer, [*OTHER_CAPTIONS, PATTERN_CAPTIONS[0]])
        generator = torch.Generator().manual_seed(1)
        for weight in trainer.objectives.teacher.weights.values():
            weight.add_(0.05 * torch.randn(weight.shape, generator=generator))
        trainer.state.global_step = 1
        trainer.current_gradient_accumulation_steps = accumulation_steps
        loss = trainer.training_step(model, dict(batch))
        gradients = {name: parameter.grad.clone() for name, parameter in model.named_parameters()}
        gradients["prototypes"] = trainer.objectives.prototypes.prototypes.grad.clone()
        results[micro_batch_size, accumulation_steps] = (loss, gradients, trainer._batch_metrics["train"])
    (full_loss, full, metrics), (cached_loss, cached, _) = results[None, 1], results[2, 1]
    assert metrics["distill_alpha"] == pytest.approx([0.2])
    assert metrics["loss_intra_image"][0] > 0 and metrics["loss_prototype"][0] > 0
    assert full["prototypes"].abs().sum() > 0
    assert cached_loss.item() == pytest.approx(full_loss.item(), abs=1e-6)
    for name in full:
        torch.testing.assert_close(cached[name], full[name], atol=1e-6, rtol=1e-4, msg=name)
    accumulated_loss, accumulated, _ = results[2, 4]
    assert accumulated_loss.item() == pytest.approx(full_loss.item() / 4, abs=1e-6)
    for name in full:
        torch.testing.assert_close(accumulated[name], full[name] / 4, atol=1e-6, rtol=1e-4, msg=name)


def test_a_batch_is_never_its_own_queued_negative(aspect_processor, images, caption_encoder, tmp_path):
    collator = RelSimCollator(aspect_processor)
    first = collator(
        [{"image": image, "caption": PATTERN_CAPTIONS[index % 3]} for index, image in enumerate(images * 3)]
    )
    # the second batch keeps two of the first batch's captions and drops the third
    second = collator([{"image": image, "caption": PATTERN_CAPTIONS[index % 2]} for index, image in enumerate(images)])
    queued_model, plain_model = build_tiny_model(aspect_processor, seed=0), build_tiny_model(aspect_processor, seed=0)
    queued = make_trainer(queued_model, aspect_processor, None, caption_encoder, tmp_path, caption_queue_size=32)
    plain = make_trainer(plain_model, aspect_processor, None, caption_encoder, tmp_path)
    for trainer in (queued, plain):
        trainer.current_gradient_accumulation_steps = 1

    queued.training_step(queued_model, dict(first))
    _, queue_ids = queued.objectives.queue.contents()
    assert queue_ids.tolist() == first["caption_ids"].tolist()  # queued after the loss, all nine rows
    # the same batch again: every queued caption is one of its own, so none is a negative
    again = queued.training_step(queued_model, dict(first))
    assert again.item() == pytest.approx(plain.training_step(plain_model, dict(first)).item(), abs=1e-6)
    # the third caption is absent from the second batch: its queued copy is one more negative
    with_queue = queued.training_step(queued_model, dict(second))
    without = plain.training_step(plain_model, dict(second))
    assert with_queue.item() > without.item() + 1e-4
    assert queued._batch_metrics["train"]["caption_queue_fill"] == [0.0, 9 / 32, 18 / 32]


def test_a_tiny_model_learns_with_every_objective(short_prompt_processor, caption_encoder, tmp_path):
    patterns = image_caption_dataset(pattern_dataset(64, seed=0))
    held_out = image_caption_dataset(pattern_dataset(16, seed=1))
    model = build_tiny_model(short_prompt_processor, seed=0)
    options = {**EVERY_OPTION, "distill_ramp_steps": None, "num_prototypes": 4, "symmetric_loss": True}
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path, eval_dataset=held_out,
                           max_steps=24, logging_steps=8, learning_rate=1e-3, **options)  # fmt: skip
    initial_prototypes = trainer.objectives.prototypes.prototypes.detach().clone()
    # initialised from the four training captions: each prototype is one caption's embedding
    captions = [normalize_caption(caption) for caption in PATTERN_CAPTIONS]
    caption_embeds = caption_encoder(captions, [caption_id(caption) for caption in captions])
    assert sorted((initial_prototypes @ caption_embeds.T).argmax(-1).tolist()) == [0, 1, 2, 3]
    trainer.train()
    losses = logged(trainer, "loss")
    assert len(losses) == 3 and losses[-1] < 0.9 * losses[0]
    assert logged(trainer, "loss_contrastive")[-1] < logged(trainer, "loss_contrastive")[0]
    assert logged(trainer, "distill_alpha")[-1] == pytest.approx(0.4)  # one epoch (8 steps) of ramp is over
    assert logged(trainer, "caption_queue_fill")[-1] == 1.0
    assert all(1.0 <= value <= 4.0 for value in logged(trainer, "prototype_perplexity"))
    assert not torch.equal(trainer.objectives.prototypes.prototypes.detach(), initial_prototypes)  # trained
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_prototype_nmi"] <= 1.0 and 1.0 <= metrics["eval_prototype_perplexity"] <= 4.0
    assert "eval_loss_intra_image" not in metrics  # evaluation keeps the plain loss


class RecordClippedGradients(TrainerCallback):
    """What the optimizer steps with: the norm over every gradient (model and prototypes), after clipping."""

    def __init__(self, objectives):
        self.objectives = objectives
        self.total_norms, self.prototype_norms = [], []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        prototypes = self.objectives.prototypes.prototypes.grad
        gradients = [parameter.grad for parameter in model.parameters() if parameter.grad is not None]
        self.total_norms.append(
            float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in [*gradients, prototypes]])))
        )
        self.prototype_norms.append(float(prototypes.norm()))


@pytest.mark.parametrize("micro_batch_size", [None, 2])
def test_max_grad_norm_clips_the_prototypes_with_the_model(short_prompt_processor, caption_encoder, tmp_path,
                                                           micro_batch_size):  # fmt: skip
    patterns = image_caption_dataset(pattern_dataset(24, seed=0))
    model = build_tiny_model(short_prompt_processor, seed=0)
    trainer = make_trainer(model, short_prompt_processor, patterns, caption_encoder, tmp_path, max_steps=3,
                           logging_steps=1, max_grad_norm=1e-3, contrastive_micro_batch_size=micro_batch_size,
                           **EVERY_OPTION)  # fmt: skip
    recorder = RecordClippedGradients(trainer.objectives)
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.total_norms) == 3
    for total, prototypes in zip(recorder.total_norms, recorder.prototype_norms, strict=True):
        assert total <= 1e-3 + 1e-6  # the prototypes' gradient counts in the clipped norm ...
        assert total >= 0.99e-3 and prototypes > 1e-5  # ... which was above the limit, the prototypes' share real
    assert all(norm > 1e-3 for norm in logged(trainer, "grad_norm"))  # the logged norm is the one before clipping


@pytest.fixture(scope="module")
def every_option_run(tmp_path_factory, caption_encoder):
    """A LoRA run with every option, 6 steps, checkpoints at steps 3 and 6; and how to build the same run again."""
    work = tmp_path_factory.mktemp("objectives")
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    patterns = image_caption_dataset(pattern_dataset(64, seed=0))

    def lora_model():
        return get_peft_model(build_tiny_model(processor, seed=0), relsim_lora_config(r=4, lora_alpha=8))

    def trainer(output_dir, **overrides):
        settings = {**RESUMED_RUN, **overrides}
        return make_trainer(lora_model(), processor, patterns, caption_encoder, output_dir, **settings)

    first = trainer(work / "a")
    first.train()
    return first, trainer, work


RESUMED_RUN = {
    **EVERY_OPTION,
    "max_steps": 6,
    "logging_steps": 1,
    "save_strategy": "steps",
    "save_steps": 3,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 4,
}


class RecordRestoredState(TrainerCallback):
    """The objective state at the start of (resumed) training."""

    def __init__(self, objectives):
        self.objectives, self.state = objectives, {}

    def on_train_begin(self, args, state, control, **kwargs):
        self.state = {name: value.detach().clone() for name, value in self.objectives.state().items()}


def test_resume_with_every_objective_continues_exactly(every_option_run):
    first, make, work = every_option_run
    checkpoint = work / "a" / "checkpoint-3"
    assert (checkpoint / OBJECTIVE_STATE_FILE).is_file()
    assert all(name.startswith("base_model.") for name in first.objectives.teacher.weights)  # LoRA, query, ...
    second = make(work / "b")
    recorder = RecordRestoredState(second.objectives)
    second.add_callback(recorder)
    second.train(resume_from_checkpoint=str(checkpoint))
    # the queue, EMA weights and prototypes the first run had at step 3
    saved = load_file(str(checkpoint / OBJECTIVE_STATE_FILE))
    assert recorder.state.keys() == saved.keys() and {"queue.ids", "prototypes.prototypes"} <= saved.keys()
    assert any(name.startswith("ema.") for name in saved) and int(saved["queue.filled"]) == 12
    for name, value in saved.items():
        torch.testing.assert_close(recorder.state[name], value, atol=1e-7, rtol=0, msg=name)
    assert logged(second, "loss") == pytest.approx(logged(first, "loss"), abs=1e-6)
    assert logged(second, "loss_prototype") == pytest.approx(logged(first, "loss_prototype"), abs=1e-6)
    for name, value in first.objectives.state().items():
        torch.testing.assert_close(second.objectives.state()[name], value, atol=1e-7, rtol=0, msg=name)


def test_resume_refuses_a_checkpoint_without_its_objective_state(every_option_run, tmp_path):
    _, make, work = every_option_run
    run = tmp_path / "run"
    shutil.copytree(work / "a", run)
    (run / "checkpoint-6" / OBJECTIVE_STATE_FILE).unlink()
    options = ObjectiveTrainingArguments(output_dir=str(run), use_cpu=True, report_to=[], **EVERY_OPTION)
    state_problem = partial(objective_state_problem, arguments=options)
    with pytest.raises(FileNotFoundError) as raised:
        resolve_resume_checkpoint(str(run / "checkpoint-6"), run, state_problem=state_problem)
    assert "checkpoint-6 is not a complete checkpoint: objective_state.safetensors is missing" in str(raised.value)
    assert f"the run's last complete checkpoint is {run / 'checkpoint-3'}" in str(raised.value)
    assert resolve_resume_checkpoint("last", run, state_problem=state_problem) == str(run / "checkpoint-3")
    # the Trainer's own resume (the Python API) refuses it too, before touching the model
    with pytest.raises(FileNotFoundError, match=r"objective_state\.safetensors is missing"):
        make(tmp_path / "b").train(resume_from_checkpoint=str(run / "checkpoint-6"))


def test_resume_refuses_another_prototype_count_naming_the_field(every_option_run, tmp_path):
    _, make, work = every_option_run
    checkpoint = work / "a" / "checkpoint-3"
    options = {**EVERY_OPTION, "num_prototypes": 4}
    arguments = ObjectiveTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **options)
    message = "prototypes.prototypes has shape (3, 384), but this run has num_prototypes=4"
    with pytest.raises(FileNotFoundError, match=re.escape(f"objective_state.safetensors: {message}")):
        resolve_resume_checkpoint(
            str(checkpoint), work / "a", state_problem=partial(objective_state_problem, arguments=arguments)
        )
    resumed = make(tmp_path / "b", num_prototypes=4)
    with pytest.raises(ValueError, match=re.escape(message)):
        resumed.train(resume_from_checkpoint=str(checkpoint))
