"""The objective options extend four private Trainer steps; a transformers that renamed, re-shaped or stopped calling
one is found before training (each broken internal named) instead of leaving relsim's override as dead code."""

import pytest
from helpers import pattern_dataset
from test_objectives_training import EVERY_OPTION, make_trainer
from test_trainer import make_trainer as make_papers_trainer
from transformers import Trainer

import training.trainer.objectives.trainer as objective_trainer_module
from training.tiny_backbone import build_tiny_model, build_tiny_processor
from training.trainer.data import image_caption_dataset
from training.trainer.objectives.trainer import ObjectiveTrainer
from training.trainer.trainer import RelSimTrainer
from training.trainer.trainer_hooks import EXTENDED_STEPS, trainer_step_mismatches


class NoClipStep(Trainer):
    _clip_grad_norm = None


class ReshapedGradNormStep(Trainer):
    def _get_grad_norm(self, module, norm=None):
        return norm


class NeverCalledSteps:
    """Has every step with the right parameters, but no training loop that calls them."""

    def _clip_grad_norm(self, model): ...

    def _get_grad_norm(self, model, grad_norm=None): ...

    def _save_checkpoint(self, model, trial): ...

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None): ...


def test_only_the_options_trainer_extends_private_trainer_steps():
    assert [name for name in EXTENDED_STEPS if name in vars(RelSimTrainer)] == []
    assert [name for name in EXTENDED_STEPS if name in vars(ObjectiveTrainer)] == list(EXTENDED_STEPS)


def test_the_installed_trainer_has_every_step_the_options_extend():
    assert trainer_step_mismatches(Trainer) == []


@pytest.mark.parametrize(
    ("trainer_class", "expected"),
    [
        (NoClipStep, ["NoClipStep has no _clip_grad_norm"]),
        (
            ReshapedGradNormStep,
            [
                "ReshapedGradNormStep._get_grad_norm takes ('module', 'norm'), relsim's override expects "
                "('model', 'grad_norm')"
            ],
        ),
        (NeverCalledSteps, [f"NeverCalledSteps no longer calls {name}" for name in EXTENDED_STEPS]),
    ],
)
def test_each_broken_internal_is_named(trainer_class, expected):
    assert trainer_step_mismatches(trainer_class) == expected


def test_the_options_are_refused_on_a_changed_trainer_and_the_papers_method_still_builds(
    caption_encoder, tmp_path, monkeypatch
):
    processor = build_tiny_processor(image_size=112, instruction=None, use_system_prompt=False)
    monkeypatch.setattr(objective_trainer_module, "trainer_step_mismatches", lambda: ["Trainer has no _clip_grad_norm"])
    patterns = image_caption_dataset(pattern_dataset(8, seed=0))
    model = build_tiny_model(processor, seed=0)
    with pytest.raises(RuntimeError, match=r"changed: Trainer has no _clip_grad_norm\. Train without them"):
        make_trainer(model, processor, patterns, caption_encoder, tmp_path, **EVERY_OPTION)
    without_options = make_trainer(model, processor, patterns, caption_encoder, tmp_path)
    assert not without_options.objectives.active
    papers = make_papers_trainer(model, processor, patterns, caption_encoder, tmp_path)
    assert type(papers).__name__ == "RelSimTrainer" and not hasattr(papers, "objectives")
