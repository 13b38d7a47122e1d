"""SFT of the generating Qwen2.5-VL: answer-only labels, TRL training, weighted rows, saved results."""

import pytest
import torch

from tests.conftest import random_image
from training.vlm.chat import QwenVLChat
from training.vlm.chat_model import ChatModelArguments
from training.vlm.sft_data import IGNORE_INDEX, ChatSFTCollator
from training.vlm.sft_training import (
    ChatProcessor,
    VLMSFTArguments,
    WeightedSFTTrainer,
    as_sft_dataset,
    load_recipe,
    train_chat_sft,
)
from training.vlm.tiny import build_tiny_chat, save_tiny_chat


PROMPT = "Is the image bright?"


def bright_dark_rows(count: int = 8) -> list[dict]:
    """Bright images answered "Yes", dark ones "No": learnable in a few steps."""
    rows = []
    for index in range(count):
        bright = index % 2 == 0
        image = random_image(56 + 8 * (index % 3), 64, index).point(lambda v, b=bright: v // 4 + (190 if b else 0))
        rows.append({"images": [image], "prompt": PROMPT, "answer": "Yes" if bright else "No"})
    return rows


def sft_arguments(output_dir, **settings) -> VLMSFTArguments:
    defaults = dict(
        output_dir=str(output_dir),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        save_strategy="no",
        use_lora=False,
        seed=0,
    )
    return VLMSFTArguments(**{**defaults, **settings})


def labelled_loss(chat: QwenVLChat, rows: list[dict]) -> float:
    with torch.no_grad():
        return chat.model(**ChatSFTCollator(chat)(rows)).loss.item()


def test_collator_masks_everything_but_the_answer_and_its_turn_end():
    chat = build_tiny_chat()
    rows = bright_dark_rows(3)
    rows[1]["answer"] = "No, it is dark."
    batch = ChatSFTCollator(chat)(rows)
    decoded = [chat.tokenizer.decode(labels[labels != IGNORE_INDEX]) for labels in batch["labels"]]
    assert decoded == ["Yes<|im_end|>", "No, it is dark.<|im_end|>", "Yes<|im_end|>"]
    # the prompt is the inference prompt, token for token, and the batch is right padded
    inference = chat.build_batch([(row["images"], row["prompt"]) for row in rows])
    for index in range(3):
        prompt_ids = inference["input_ids"][index][inference["attention_mask"][index].bool()]
        assert torch.equal(batch["input_ids"][index, : len(prompt_ids)], prompt_ids)
        length = int(batch["attention_mask"][index].sum())
        assert batch["attention_mask"][index, :length].all() and not batch["attention_mask"][index, length:].any()
    assert torch.equal(batch["pixel_values"], inference["pixel_values"])
    assert batch["mm_token_type_ids"].sum().item() == inference["mm_token_type_ids"].sum().item()
    assert "weights" not in batch


def test_collator_names_the_row_that_lacks_a_field():
    with pytest.raises(ValueError, match=r"SFT row 1 lacks \['answer'\]"):
        ChatSFTCollator(build_tiny_chat())([bright_dark_rows(1)[0], {"images": [], "prompt": "x"}])


def test_row_weights_scale_the_loss_like_repeated_rows(tmp_path):
    chat = build_tiny_chat(seed=1)
    rows = bright_dark_rows(2)
    rows[1]["answer"] = "No, it is dark."  # rows of different token counts: weights act per token
    trainer = WeightedSFTTrainer(
        model=chat.model,
        args=sft_arguments(tmp_path / "run"),
        data_collator=ChatSFTCollator(chat),
        train_dataset=as_sft_dataset(rows, "train"),
        processing_class=ChatProcessor(chat.image_processor, chat.tokenizer),
    )
    collate = ChatSFTCollator(chat)
    with torch.no_grad():
        weighted = trainer.compute_loss(trainer.model, collate([{**rows[0], "weight": 2.0}, rows[1]]))
        repeated = trainer.compute_loss(trainer.model, collate([rows[0], rows[0], rows[1]]))
        zero = trainer.compute_loss(trainer.model, collate([{**rows[0], "weight": 0.0}, rows[1]]))
        alone = trainer.compute_loss(trainer.model, collate([rows[1]]))
    torch.testing.assert_close(weighted, repeated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(zero, alone, atol=1e-5, rtol=1e-5)


def test_a_few_full_sft_steps_make_the_loss_fall_and_save_a_loadable_model(tmp_path):
    chat = build_tiny_chat(seed=0)
    rows = bright_dark_rows(8)
    before = labelled_loss(chat, rows)
    trained = train_chat_sft(chat, rows, sft_arguments(tmp_path / "full"))
    after = labelled_loss(trained, rows)
    assert after < 0.75 * before  # measured: 6.21 -> 3.91
    assert not trained.model.training
    reloaded = QwenVLChat.from_pretrained(str(tmp_path / "full"), max_pixels=chat.max_pixels)
    conversations = [(row["images"], row["prompt"]) for row in rows[:3]]
    torch.testing.assert_close(
        reloaded.answer_probabilities(conversations), trained.answer_probabilities(conversations), atol=1e-5, rtol=0
    )


def test_lora_sft_saves_an_adapter_that_reloads_onto_the_base(tmp_path):
    base_dir = save_tiny_chat(tmp_path / "base", seed=2)
    chat = QwenVLChat.from_pretrained(str(base_dir), max_pixels=112 * 112)
    rows = bright_dark_rows(8)
    before = labelled_loss(chat, rows)
    trained = train_chat_sft(chat, rows, sft_arguments(tmp_path / "lora", use_lora=True, max_steps=4))
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert labelled_loss(trained, rows) < before
    reloaded = QwenVLChat.from_pretrained(str(base_dir), max_pixels=112 * 112, adapter=str(tmp_path / "lora"))
    conversations = [(row["images"], row["prompt"]) for row in rows[:3]]
    torch.testing.assert_close(
        reloaded.answer_probabilities(conversations), trained.answer_probabilities(conversations), atol=1e-5, rtol=0
    )


def test_a_recipe_loads_into_the_argument_classes_and_refuses_unknown_keys(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tiny_model: true\nuse_lora: false\nlearning_rate: 1.0e-3\noutput_dir: runs/x\nbf16: false\n")
    model_arguments, sft = load_recipe(recipe, (ChatModelArguments, VLMSFTArguments), {"max_steps": 7})
    assert model_arguments.tiny_model and not sft.use_lora
    assert (sft.learning_rate, sft.max_steps, sft.remove_unused_columns) == (1e-3, 7, False)
    assert sft.dataset_kwargs == {"skip_prepare_dataset": True}
    recipe.write_text("tiny_model: true\nlearning_rat: 1.0\n")
    with pytest.raises(ValueError, match=r"\['learning_rat'\] are not fields"):
        load_recipe(recipe, (ChatModelArguments, VLMSFTArguments))
