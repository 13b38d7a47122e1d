"""The tiny VLM's literal pretraining (the offline base model) and the output layer's own learning rate."""

import json

import pytest
import torch

from tests.test_vlm_sft import bright_dark_rows, sft_arguments
from training.synthetic.families import FAMILIES
from training.vlm.chat import QwenVLChat
from training.vlm.chat_model import ChatModelArguments
from training.vlm.sft_data import ChatSFTCollator
from training.vlm.sft_training import WeightedSFTTrainer, train_chat_sft
from training.vlm.tiny import PRETRAINED_TINY_CHAT, build_tiny_chat, load_pretrained_tiny_chat
from training.vlm.tiny_pretraining import (
    LiteralPretrainingArguments,
    literal_rows,
    pretrain_tiny_chat,
    tiny_vocabulary,
    word_tokens,
)


def test_word_tokens_give_each_word_bare_and_after_a_space_once():
    assert word_tokens(["a {Object} grows", "a ring"]) == [
        "a",
        " a",
        "{Object}",
        " {Object}",
        "grows",
        " grows",
        "ring",
        " ring",
    ]


def test_the_vocabulary_spells_descriptions_captions_and_answers_as_whole_words():
    chat = build_tiny_chat(tiny_vocabulary(), seed=0)
    rows = literal_rows(LiteralPretrainingArguments(synthetic_num_per_family=1, synthetic_negatives=3))
    assert len(rows) == len(FAMILIES) + 3
    for text in [row["answer"] for row in rows] + [family.caption for family in FAMILIES.values()]:
        assert len(chat.tokenizer.tokenize(text)) == len(text.split()), text
    assert [len(chat.tokenizer.tokenize(answer)) for answer in ("Yes", "No")] == [1, 1]
    assert all(row["prompt"] == "Describe the image." and len(row["images"]) == 1 for row in rows)


def test_literal_pretraining_trains_saves_and_reloads(tmp_path):
    overrides = {
        "max_steps": 3, "per_device_train_batch_size": 4, "synthetic_num_per_family": 1, "synthetic_negatives": 4,
        "logging_steps": 1, "synthetic_image_size": 56, "max_pixels": 56 * 56,
    }  # fmt: skip
    trained = pretrain_tiny_chat(tmp_path / "base", overrides=overrides)
    summary = json.loads((tmp_path / "base" / "pretraining.json").read_text())
    assert summary["rows"] == len(FAMILIES) + 4 and summary["max_steps"] == 3
    reloaded = QwenVLChat.from_pretrained(str(tmp_path / "base"), max_pixels=56 * 56)
    rows = literal_rows(
        LiteralPretrainingArguments(synthetic_num_per_family=1, synthetic_negatives=0, synthetic_image_size=56)
    )
    batch = ChatSFTCollator(reloaded)(rows[:3])
    with torch.no_grad():
        torch.testing.assert_close(reloaded.model(**batch).logits, trained.model(**batch).logits, atol=1e-5, rtol=0)


def test_the_shipped_pretrained_tiny_chat_loads_and_describes_in_words():
    chat = load_pretrained_tiny_chat()
    summary = json.loads((PRETRAINED_TINY_CHAT / "pretraining.json").read_text())
    assert summary["max_steps"] >= 1000
    rows = literal_rows(LiteralPretrainingArguments(synthetic_num_per_family=1, synthetic_negatives=0))
    with torch.no_grad():
        loss = chat.model(**ChatSFTCollator(chat)(rows)).loss.item()
    untrained = build_tiny_chat(tiny_vocabulary(), seed=0)
    with torch.no_grad():
        untrained_loss = untrained.model(**ChatSFTCollator(untrained)(rows)).loss.item()
    assert loss < 0.25 * untrained_loss  # it has learnt to describe training images


def test_chat_arguments_refuse_two_tiny_models_and_load_the_pretrained_one():
    with pytest.raises(ValueError, match=r"tiny_model .* tiny_pretrained"):
        ChatModelArguments(tiny_model=True, tiny_pretrained=True)
    chat = ChatModelArguments(tiny_pretrained=True, max_pixels=56 * 56).load_chat()
    assert chat.max_pixels == 56 * 56 and len(chat.tokenizer.tokenize("Yes")) == 1


def test_the_output_layer_gets_its_own_learning_rate(tmp_path, monkeypatch):
    seen = {}

    def capture(self, *args, **kwargs):
        seen["groups"] = [(len(group["params"]), group["lr"]) for group in self.optimizer.param_groups]
        seen["head"] = {id(p) for p in self.model.lm_head.parameters()}
        seen["last"] = {id(p) for p in self.optimizer.param_groups[-1]["params"]}
        raise KeyboardInterrupt  # stop before any step

    monkeypatch.setattr(WeightedSFTTrainer, "training_step", capture)
    chat = build_tiny_chat(seed=0)
    arguments = sft_arguments(tmp_path / "run", learning_rate=1e-3, lm_head_learning_rate_multiplier=30.0)
    with pytest.raises(KeyboardInterrupt):
        train_chat_sft(chat, bright_dark_rows(4), arguments)
    assert seen["last"] == seen["head"]
    *others, (_, head_lr) = seen["groups"]
    assert all(head_lr == pytest.approx(30.0 * lr) for _, lr in others)
    assert sum(count for count, _ in seen["groups"]) == sum(1 for p in chat.model.parameters() if p.requires_grad)


def test_a_non_positive_head_multiplier_is_refused(tmp_path):
    with pytest.raises(ValueError, match="lm_head_learning_rate_multiplier"):
        sft_arguments(tmp_path, lm_head_learning_rate_multiplier=0.0)
