import math

import pytest
import torch
import torch.nn.functional as F

from training.trainer.losses import caption_id, relational_info_nce
from training.trainer.trainer import LogitScaleClampCallback


def unit(*values):
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


def test_image_to_text_matches_a_hand_computation():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(0.6, 0.8)])
    # ids 5 and 3: the unique captions sort as [3, 5], so image 0's positive is column 1
    result = relational_info_nce(image_embeds, caption_embeds, torch.tensor([5, 3]), torch.tensor(math.log(2.0)))
    # image 0 logits [2*0.6, 2*1.0] -> log(1 + e^-0.8); image 1 logits [2*0.8, 2*0.0] -> log(1 + e^-1.6)
    expected = (math.log1p(math.exp(-0.8)) + math.log1p(math.exp(-1.6))) / 2
    assert result.loss.item() == pytest.approx(expected, abs=1e-6)
    assert result.accuracy.item() == 1.0
    assert result.text_to_image is None


def test_symmetric_loss_matches_a_hand_computation():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(0.8, 0.6), unit(0.0, 1.0)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(1.0, 0.0), unit(0.0, 1.0)])
    result = relational_info_nce(
        image_embeds, caption_embeds, torch.tensor([1, 1, 2]), torch.tensor(0.0), symmetric=True
    )
    # image -> text, scale 1, columns [caption 1, caption 2]
    image_losses = [
        -math.log(math.e**1.0 / (math.e**1.0 + math.e**0.0)),
        -math.log(math.e**0.8 / (math.e**0.8 + math.e**0.6)),
        -math.log(math.e**1.0 / (math.e**1.0 + math.e**0.0)),
    ]
    # text -> image: caption 1 has two positives (uniform target), caption 2 one
    caption_one = [1.0, 0.8, 0.0]
    log_z = math.log(sum(math.exp(value) for value in caption_one))
    caption_one_loss = -0.5 * ((1.0 - log_z) + (0.8 - log_z))
    caption_two = [0.0, 0.6, 1.0]
    caption_two_loss = -(1.0 - math.log(sum(math.exp(value) for value in caption_two)))
    expected = (sum(image_losses) / 3 + (caption_one_loss + caption_two_loss) / 2) / 2
    assert result.loss.item() == pytest.approx(expected, abs=1e-6)
    assert result.image_to_text.item() == pytest.approx(sum(image_losses) / 3, abs=1e-6)


def test_identical_captions_are_not_negatives_of_each_other():
    shared, other = unit(1.0, 0.0, 0.0), unit(0.0, 1.0, 0.0)
    caption_embeds = torch.stack([shared, shared, other])
    image_embeds = caption_embeds.clone().requires_grad_()
    logit_scale = torch.tensor(math.log(100.0))
    result = relational_info_nce(image_embeds, caption_embeds, torch.tensor([7, 7, 9]), logit_scale)
    assert result.loss.item() < 1e-6
    # scoring against every sample's caption (the official code) counts the twin caption as a negative
    official = F.cross_entropy(logit_scale.exp() * image_embeds @ caption_embeds.T, torch.arange(3))
    assert official.item() > 2 * math.log(2) / 3 - 1e-3
    result.loss.backward()
    assert image_embeds.grad.abs().max().item() < 1e-6


def test_temperature_receives_gradient():
    image_embeds = torch.stack([unit(1.0, 0.2), unit(0.1, 1.0)])
    logit_scale = torch.tensor(1.0, requires_grad=True)
    result = relational_info_nce(
        image_embeds, torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)]), torch.tensor([1, 2]), logit_scale
    )
    result.loss.backward()
    assert logit_scale.grad is not None and logit_scale.grad.item() < 0  # sharper is better when every match is right


def test_accuracy_counts_wrong_matches():
    image_embeds = torch.stack([unit(1.0, 0.0), unit(1.0, 0.1)])
    caption_embeds = torch.stack([unit(1.0, 0.0), unit(0.0, 1.0)])
    result = relational_info_nce(image_embeds, caption_embeds, torch.tensor([1, 2]), torch.tensor(0.0))
    assert result.accuracy.item() == 0.5


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="same samples"):
        relational_info_nce(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, dtype=torch.long), torch.tensor(0.0))


def test_caption_ids_are_stable_and_distinct():
    assert caption_id("a {Object} inside a larger {Object}") == caption_id("a {Object} inside a larger {Object}")
    assert caption_id("a") != caption_id("b")
    # a fixed value: ids must agree across processes (unlike Python's salted hash()) and fit in an int64
    assert caption_id("arrange {Object}s from smallest to largest") == 1473252466809841989
    assert 0 <= caption_id("x") < 2**63


def test_clamp_keeps_the_temperature_in_range(model):
    clamp = LogitScaleClampCallback(maximum=math.log(100.0))
    with torch.no_grad():
        model.temperature.logit_scale.fill_(10.0)
    clamp.on_optimizer_step(None, None, None, model=model)
    assert model.logit_scale.item() == pytest.approx(math.log(100.0))
    with torch.no_grad():
        model.temperature.logit_scale.fill_(-1.0)
    clamp.on_optimizer_step(None, None, None, model=model)
    assert model.logit_scale.item() == 0.0
