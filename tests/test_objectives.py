import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from training.trainer.losses import relational_info_nce
from training.trainer.objectives.arguments import ObjectiveTrainingArguments
from training.trainer.objectives.caption_queue import CaptionQueue, queued_negatives
from training.trainer.objectives.contrastive import queued_distilled_info_nce
from training.trainer.objectives.intra_image import intra_image_contrastive
from training.trainer.objectives.momentum import DistillationTargets, MomentumTeacher, ramped_alpha
from training.trainer.objectives.prototypes import (
    assignment_nmi,
    kmeans_centres,
    prototype_alignment_loss,
    sinkhorn,
    usage_perplexity,
)
from training.trainer.objectives.state_file import objective_state_problem
from training.trainer.objectives.training_objectives import OBJECTIVE_STATE_FILE, TrainingObjectives


def unit(*values):
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


def log_sum_exp(*values):
    return math.log(sum(math.exp(value) for value in values))


# -- intra-modal image-image term --------------------------------------------------------------------------------------


def test_intra_image_term_matches_a_hand_computation():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.6, 0.8), unit(0.0, 1.0)])
    loss = intra_image_contrastive(image_embeds, torch.tensor([1, 1, 2]), torch.tensor(0.0))
    # anchor 0: positive image 1 (cos .6) against image 2 (cos 0); anchor 1: positive image 0 (.6) against image 2
    # (.8); image 2 has no other image of its caption and is no anchor; never an image against itself
    anchor_0 = -(0.6 - log_sum_exp(0.6, 0.0))
    anchor_1 = -(0.6 - log_sum_exp(0.6, 0.8))
    assert loss.item() == pytest.approx((anchor_0 + anchor_1) / 2, abs=1e-6)


def test_intra_image_term_is_zero_without_shared_captions():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.6, 0.8)]).requires_grad_()
    loss = intra_image_contrastive(image_embeds, torch.tensor([1, 2]), torch.tensor(2.0))
    loss.backward()
    assert loss.item() == 0.0
    assert image_embeds.grad.abs().max().item() == 0.0


# -- caption queue -----------------------------------------------------------------------------------------------------


def test_queue_drops_the_batch_captions_and_keeps_one_row_per_caption():
    queue_embeds = torch.arange(10, dtype=torch.float32).reshape(5, 2)
    queue_ids = torch.tensor([5, 7, 5, 9, 3])
    negatives = queued_negatives(queue_embeds, queue_ids, torch.tensor([3, 4]))
    # id 3 is in the batch; id 5 is queued twice and counts once (its first row)
    torch.testing.assert_close(negatives, queue_embeds[[0, 1, 3]])


def test_queued_negatives_enter_the_loss_but_not_a_queued_copy_of_the_positive():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    # queue: a copy of image 0's own caption (id 1), a new caption id 3 twice, and image 1's caption (id 2)
    queue = (torch.stack([unit(1.0, 0.0), unit(0.6, 0.8), unit(0.6, 0.8), unit(0.0, 1.0)]), torch.tensor([1, 3, 3, 2]))
    result = queued_distilled_info_nce(image_embeds, caption_embeds, torch.tensor([1, 2]), torch.tensor(0.0),
                                       queued_captions=queue)  # fmt: skip
    # columns: caption 1, caption 2, queued caption 3 (once)
    image_0 = -(1.0 - log_sum_exp(1.0, 0.0, 0.6))
    image_1 = -(1.0 - log_sum_exp(0.0, 1.0, 0.8))
    assert result.loss.item() == pytest.approx((image_0 + image_1) / 2, abs=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_without_queue_or_teacher_the_options_loss_is_the_papers_loss(symmetric):
    generator = torch.Generator().manual_seed(0)
    image_embeds = torch.nn.functional.normalize(torch.randn(5, 3, generator=generator), dim=-1).requires_grad_()
    caption_embeds = torch.nn.functional.normalize(torch.randn(5, 3, generator=generator), dim=-1)
    ids, logit_scale = torch.tensor([4, 1, 4, 2, 1]), torch.tensor(1.5, requires_grad=True)
    paper = relational_info_nce(image_embeds, caption_embeds, ids, logit_scale, symmetric=symmetric)
    paper_gradients = torch.autograd.grad(paper.loss, (image_embeds, logit_scale))
    options = queued_distilled_info_nce(image_embeds, caption_embeds, ids, logit_scale, symmetric=symmetric)
    option_gradients = torch.autograd.grad(options.loss, (image_embeds, logit_scale))
    assert options.loss.item() == paper.loss.item() and options.accuracy.item() == paper.accuracy.item()
    for option_gradient, paper_gradient in zip(option_gradients, paper_gradients, strict=True):
        assert torch.equal(option_gradient, paper_gradient)


def test_queue_is_a_ring_buffer_of_the_latest_rows():
    queue = CaptionQueue(size=4, dimension=1)
    queue.enqueue(torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([1, 2, 3]))
    assert (queue.pointer, queue.filled, queue.fill_fraction) == (3, 3, 0.75)
    assert queue.contents()[1].tolist() == [1, 2, 3]
    queue.enqueue(torch.tensor([[4.0], [5.0]]), torch.tensor([4, 5]))
    assert (queue.pointer, queue.filled) == (1, 4)
    assert queue.ids.tolist() == [5, 2, 3, 4] and queue.embeds[:, 0].tolist() == [5.0, 2.0, 3.0, 4.0]
    queue.enqueue(torch.arange(6.0)[:, None], torch.arange(10, 16))  # more rows than the queue: the last four stay
    assert sorted(queue.ids.tolist()) == [12, 13, 14, 15]


# -- momentum distillation ---------------------------------------------------------------------------------------------


def test_distillation_mixes_teacher_softmax_into_the_targets():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    caption_embeds = image_embeds.clone()
    teacher = DistillationTargets(torch.stack([unit(0.6, 0.8), unit(0.8, 0.6)]), torch.tensor(math.log(2.0)), 0.4)
    result = queued_distilled_info_nce(image_embeds, caption_embeds, torch.tensor([1, 2]), torch.tensor(0.0),
                                             distillation=teacher)  # fmt: skip

    def image_loss(student, teacher_logits, positive):
        soft = [math.exp(value - log_sum_exp(*teacher_logits)) for value in teacher_logits]
        targets = [0.4 * soft[k] + 0.6 * (k == positive) for k in range(2)]
        return -sum(target * (logit - log_sum_exp(*student)) for target, logit in zip(targets, student, strict=True))

    expected = (image_loss([1.0, 0.0], [1.2, 1.6], 0) + image_loss([0.0, 1.0], [1.6, 1.2], 1)) / 2
    assert result.loss.item() == pytest.approx(expected, abs=1e-6)
    # with the teacher agreeing less with the hard targets, the loss is higher than the hard one
    plain = relational_info_nce(image_embeds, caption_embeds, torch.tensor([1, 2]), torch.tensor(0.0))
    assert result.loss.item() > plain.loss.item()


def test_distillation_with_alpha_zero_is_the_hard_loss():
    image_embeds = torch.stack([unit(1.0, 0.2), unit(0.3, 1.0), unit(1.0, 1.0)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0), unit(1.0, 0.0)])
    ids = torch.tensor([1, 2, 1])
    teacher = DistillationTargets(caption_embeds.flip(0), torch.tensor(1.0), 0.0)
    plain = relational_info_nce(image_embeds, caption_embeds, ids, torch.tensor(1.0), symmetric=True)
    zero = queued_distilled_info_nce(image_embeds, caption_embeds, ids, torch.tensor(1.0), symmetric=True,
                                     distillation=teacher)  # fmt: skip
    assert zero.loss.item() == plain.loss.item()


def test_distillation_applies_to_text_to_image_when_symmetric():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    caption_embeds = image_embeds.clone()
    teacher = DistillationTargets(torch.stack([unit(0.6, 0.8), unit(0.8, 0.6)]), torch.tensor(0.0), 0.5)
    result = queued_distilled_info_nce(image_embeds, caption_embeds, torch.tensor([1, 2]), torch.tensor(0.0),
                                       symmetric=True, distillation=teacher)  # fmt: skip
    # caption 1 over images [1, 0] (student) with teacher logits [.6, .8]; caption 2 mirrored
    soft = [math.exp(value - log_sum_exp(0.6, 0.8)) for value in (0.6, 0.8)]
    targets = [0.5 * soft[0] + 0.5, 0.5 * soft[1]]
    caption_loss = -(targets[0] * (1.0 - log_sum_exp(1.0, 0.0)) + targets[1] * (0.0 - log_sum_exp(1.0, 0.0)))
    assert result.text_to_image.item() == pytest.approx(caption_loss, abs=1e-6)


def test_alpha_ramps_linearly_from_zero():
    assert [ramped_alpha(0.4, step, 10) for step in (0, 5, 10, 20)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    with pytest.raises(ValueError, match="distill_ramp_steps must be positive"):
        ramped_alpha(0.4, 1, 0)


class TwoWeights(torch.nn.Module):
    """A stand-in model: one trainable weight, one frozen, an output like RelSimModel's."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0]))
        self.frozen = torch.nn.Parameter(torch.tensor([10.0]), requires_grad=False)
        self.dropout = torch.nn.Dropout(0.5)

    def forward(self, pixels):
        embeds = self.dropout(pixels * self.weight + self.frozen)
        return SimpleNamespace(image_embeds=embeds, logit_scale=self.weight.sum())


def test_ema_update_arithmetic():
    model = TwoWeights()
    teacher = MomentumTeacher(model, momentum=0.9)
    assert set(teacher.weights) == {"weight"}  # only the trainable parts are copied
    with torch.no_grad():
        model.weight.fill_(3.0)
    teacher.update(model)
    assert teacher.weights["weight"].item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    with torch.no_grad():
        model.weight.fill_(0.0)
    teacher.update(model)
    assert teacher.weights["weight"].item() == pytest.approx(0.9 * 1.2)


def test_teacher_runs_the_ema_weights_in_eval_mode_and_leaves_the_model_alone():
    model = TwoWeights()
    teacher = MomentumTeacher(model, momentum=0.5)
    teacher.weights["weight"].fill_(2.0)
    model.train()
    embeds, logit_scale = teacher.embed(model, [{"pixels": torch.tensor([[1.0], [2.0]])}, {"pixels": torch.ones(1, 1)}])
    # no dropout (eval mode): 2 * pixels + 10
    assert embeds[:, 0].tolist() == [12.0, 14.0, 12.0]
    assert logit_scale.item() == 2.0
    assert model.weight.item() == 1.0 and model.training


# -- prototypes --------------------------------------------------------------------------------------------------------


def test_sinkhorn_rows_sum_to_one_and_columns_to_samples_per_prototype():
    scores = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    balanced = sinkhorn(scores, iterations=200, epsilon=0.5)
    torch.testing.assert_close(balanced.sum(1), torch.ones(6))
    torch.testing.assert_close(balanced.sum(0), torch.full((3,), 2.0), atol=1e-4, rtol=0)
    few = sinkhorn(scores, iterations=1, epsilon=0.5)
    torch.testing.assert_close(few.sum(1), torch.ones(6))  # the last normalisation is exact after any round
    torch.testing.assert_close(sinkhorn(torch.zeros(4, 2), 3, 0.05), torch.full((4, 2), 0.5))
    assert torch.isfinite(sinkhorn(scores * 100, iterations=3, epsilon=0.01)).all()


def test_prototype_loss_matches_a_hand_computation():
    prototypes = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)]).requires_grad_()
    image_embeds = torch.stack([unit(0.6, 0.8), unit(1.0, 0.0)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    result = prototype_alignment_loss(image_embeds, caption_embeds, prototypes, 0.5, iterations=3, epsilon=1.0)
    # exp(scores) = [[e, 1], [1, e]] is already balanced: targets [[a, 1-a], [1-a, a]] with a = e / (e + 1)
    a = math.e / (math.e + 1)
    image_0 = -(a * (1.2 - log_sum_exp(1.2, 1.6)) + (1 - a) * (1.6 - log_sum_exp(1.2, 1.6)))
    image_1 = -((1 - a) * (2.0 - log_sum_exp(2.0, 0.0)) + a * (0.0 - log_sum_exp(2.0, 0.0)))
    assert result.loss.item() == pytest.approx((image_0 + image_1) / 2, abs=1e-6)
    assert result.assignments.tolist() == [1, 0]
    result.loss.backward()
    assert prototypes.grad.abs().sum().item() > 0


def test_usage_perplexity_and_nmi():
    assert usage_perplexity(torch.tensor([0, 0, 1, 1])) == pytest.approx(2.0)
    assert usage_perplexity(torch.tensor([3, 3, 3])) == pytest.approx(1.0)
    assert usage_perplexity(torch.tensor([0, 1, 2, 2])) == pytest.approx(2**1.5)
    assert assignment_nmi(torch.tensor([7, 7, 9, 9]), torch.tensor([1, 1, 0, 0])) == pytest.approx(1.0)
    assert assignment_nmi(torch.tensor([7, 7, 9, 9]), torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-9)


def test_kmeans_centres_find_the_clusters_and_need_enough_captions():
    points = torch.stack([unit(1.0, 0.1), unit(1.0, -0.1), unit(0.1, 1.0), unit(-0.1, 1.0)])
    centres = kmeans_centres(points, 2, seed=0)
    assert sorted(centres.argmax(-1).tolist()) == [0, 1]
    torch.testing.assert_close(centres.norm(dim=-1), torch.ones(2))
    assert (centres.abs().min(-1).values < 1e-6).all()  # each centre is the mean of a symmetric pair
    with pytest.raises(ValueError, match="num_prototypes=3 but only 2 distinct captions"):
        kmeans_centres(torch.stack([points[0], points[0], points[2]]), 3, seed=0)


# -- the options' state ------------------------------------------------------------------------------------------------


def arguments(tmp_path, **overrides):
    return ObjectiveTrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **overrides)


def test_every_option_is_off_by_default(tmp_path):
    objectives = TrainingObjectives(arguments(tmp_path), TwoWeights(), 2, torch.device("cpu"))
    assert not objectives.active and objectives.parameters() == [] and objectives.state() == {}
    assert objectives.save(tmp_path / "checkpoint-1") is None


def test_objective_state_round_trips_through_a_checkpoint_file(tmp_path):
    options = {"distill_alpha": 0.4, "caption_queue_size": 4, "num_prototypes": 2}
    first = TrainingObjectives(arguments(tmp_path, **options), TwoWeights(), 2, torch.device("cpu"))
    first.initialize_prototypes(torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)]), seed=0)
    first.after_training_loss(torch.stack([unit(1.0, 1.0)]), torch.tensor([42]))
    first.teacher.weights["weight"].fill_(7.0)
    first.save(tmp_path / "checkpoint-3")
    assert (tmp_path / "checkpoint-3" / OBJECTIVE_STATE_FILE).is_file()

    second = TrainingObjectives(arguments(tmp_path, **options), TwoWeights(), 2, torch.device("cpu"))
    second.load(tmp_path / "checkpoint-3")
    assert bool(second.prototypes.initialized)
    torch.testing.assert_close(second.prototypes.prototypes, first.prototypes.prototypes)
    assert (second.queue.filled, second.queue.pointer, second.queue.ids[0].item()) == (1, 1, 42)
    assert second.teacher.weights["weight"].item() == 7.0

    other = TrainingObjectives(arguments(tmp_path, caption_queue_size=4), TwoWeights(), 2, torch.device("cpu"))
    with pytest.raises(ValueError, match="holds prototypes state, but this run has that option off"):
        other.load(tmp_path / "checkpoint-3")
    (tmp_path / "checkpoint-4").mkdir()
    with pytest.raises(FileNotFoundError, match=r"objective_state\.safetensors is missing"):
        second.load(tmp_path / "checkpoint-4")


def saved_state(tmp_path, **options):
    """A checkpoint folder holding the objective state of a run with `options`."""
    objectives = TrainingObjectives(arguments(tmp_path, **options), TwoWeights(), 2, torch.device("cpu"))
    if objectives.prototypes is not None:
        centres = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0), unit(1.0, 1.0)])
        objectives.initialize_prototypes(centres[: options["num_prototypes"]], seed=0)
    objectives.save(tmp_path / "checkpoint-3")
    return tmp_path / "checkpoint-3"


@pytest.mark.parametrize(
    ("saved", "resuming", "message"),
    [
        ({"num_prototypes": 2}, {"num_prototypes": 3}, "prototypes.prototypes has shape (2, 2), but this run has num_"
         "prototypes=3"),
        ({"caption_queue_size": 4}, {"caption_queue_size": 8}, "queue.embeds has shape (4, 2), but this run has "
         "caption_queue_size=8"),
        ({"num_prototypes": 2}, {"num_prototypes": 2, "distill_alpha": 0.4}, "has no ema state, but this run has "
         "that option on (distill_alpha=0.4)"),
        ({"caption_queue_size": 4}, {"intra_image_weight": 0.5}, "holds queue state, but this run has that option "
         "off (caption_queue_size=0)"),
    ],
)  # fmt: skip
def test_objective_state_of_other_options_is_refused_naming_the_file_and_field(tmp_path, saved, resuming, message):
    checkpoint = saved_state(tmp_path, **saved)
    options = arguments(tmp_path, **resuming)
    problem = objective_state_problem(checkpoint, options)
    assert problem.startswith(OBJECTIVE_STATE_FILE) and message in problem
    resumed = TrainingObjectives(options, TwoWeights(), 2, torch.device("cpu"))
    with pytest.raises(ValueError, match=re.escape(message)):
        resumed.load(checkpoint)


def test_objective_state_of_the_same_options_passes_the_check(tmp_path):
    options = {"num_prototypes": 3, "caption_queue_size": 4, "distill_alpha": 0.4}
    assert objective_state_problem(saved_state(tmp_path, **options), arguments(tmp_path, **options)) is None
    assert objective_state_problem(tmp_path / "checkpoint-9", arguments(tmp_path)) is None  # no option, no file


def test_a_missing_or_damaged_objective_state_is_named(tmp_path):
    checkpoint = saved_state(tmp_path, num_prototypes=2)
    options = arguments(tmp_path, num_prototypes=2)
    (checkpoint / OBJECTIVE_STATE_FILE).write_bytes((checkpoint / OBJECTIVE_STATE_FILE).read_bytes()[:40])
    assert objective_state_problem(checkpoint, options).startswith(f"{OBJECTIVE_STATE_FILE} is damaged")
    (checkpoint / OBJECTIVE_STATE_FILE).unlink()
    problem = objective_state_problem(checkpoint, options)
    assert problem.startswith(f"{OBJECTIVE_STATE_FILE} is missing, but this run's num_prototypes keep state in it")


def test_a_prototype_dimension_of_another_model_is_refused_naming_the_tensor(tmp_path):
    checkpoint = saved_state(tmp_path, num_prototypes=2)
    wider = TrainingObjectives(arguments(tmp_path, num_prototypes=2), TwoWeights(), 3, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"prototypes\.prototypes has shape \(2, 2\), but this run's is \(2, 3\)"):
        wider.load(checkpoint)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("distill_alpha", 1.5, "distill_alpha must be in"),
        ("ema_momentum", 1.0, "ema_momentum must be in"),
        ("caption_queue_size", -1, "caption_queue_size must not be negative"),
        ("num_prototypes", 1, "num_prototypes must be 0"),
        ("sinkhorn_iterations", 0, "sinkhorn_iterations, prototype_temperature"),
        ("distill_ramp_steps", 0, "distill_ramp_steps must be a positive"),
    ],
)
def test_bad_option_values_are_refused(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        arguments(tmp_path, **{field: value})
