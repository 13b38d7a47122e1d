"""The generating Qwen2.5-VL chat: answer probabilities, batched and sampled generation, adapters."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from tests.conftest import random_image
from training.vlm.chat import QwenVLChat
from training.vlm.decoding import Decoding
from training.vlm.tiny import add_word_tokens, build_tiny_chat, save_tiny_chat


QUESTION = "Is this image relational?"


@pytest.fixture(scope="module")
def chat():
    return build_tiny_chat(seed=0)


@pytest.fixture(scope="module")
def conversations():
    """Images of different shapes, so the prompts differ in length and a batch is left padded."""
    sizes = [(64, 64), (40, 120), (112, 56), (90, 90)]
    return [([random_image(height, width, seed)], QUESTION) for seed, (height, width) in enumerate(sizes)]


def test_tiny_chat_writes_each_answer_as_one_token(chat):
    assert [len(chat.tokenizer(word, add_special_tokens=False)["input_ids"]) for word in ("Yes", "No")] == [1, 1]


def test_answer_probabilities_equal_a_softmax_over_the_answer_logits_of_a_plain_forward(chat, conversations):
    probabilities = chat.answer_probabilities(conversations, batch_size=3)
    yes_id, no_id = (chat.tokenizer.convert_tokens_to_ids(word) for word in ("Yes", "No"))
    expected = []
    with torch.no_grad():
        for conversation in conversations:  # one at a time: no padding at all
            logits = chat.model(**chat.build_batch([conversation])).logits[0, -1]
            expected.append(logits[[yes_id, no_id]].softmax(-1))
    assert probabilities.dtype == torch.float32 and probabilities.shape == (4, 2)
    torch.testing.assert_close(probabilities, torch.stack(expected), atol=1e-5, rtol=0)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(4))


def test_answer_probabilities_refuse_answers_that_share_a_first_token(chat, conversations):
    with pytest.raises(ValueError, match="share a first token"):
        chat.answer_probabilities(conversations, answers=("Yes", "Yesterday"))


def test_batched_greedy_generation_equals_one_by_one(chat, conversations):
    batched = chat.generate(conversations, max_new_tokens=6, batch_size=4)
    one_by_one = [chat.generate([conversation], max_new_tokens=6)[0] for conversation in conversations]
    assert batched == one_by_one
    assert len(set(batched)) > 1  # the images lead to different answers: the comparison can fail


def test_seeded_sampling_repeats_and_differs_across_seeds_and_temperature(chat, conversations):
    conversations = conversations[:2]

    def sample(**settings):
        return chat.generate(conversations, decoding=Decoding(max_new_tokens=5, do_sample=True, **settings))

    global_state = torch.random.get_rng_state()
    first = sample(seed=1)
    assert torch.equal(torch.random.get_rng_state(), global_state)  # seeding leaves the caller's random state alone
    assert sample(seed=1) == first
    assert sample(seed=2) != first
    assert sample(seed=1, temperature=0.05) != first
    greedy = chat.generate(conversations, max_new_tokens=5)
    assert sample(seed=1, temperature=1e-4) == greedy  # a near-zero temperature is greedy


def test_decoding_refuses_settings_that_cannot_sample():
    with pytest.raises(ValueError, match="temperature"):
        Decoding(do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        Decoding(top_p=1.5)


def _legacy_key(key: str) -> str:
    """How transformers 4.x named Qwen2.5-VL's modules in a saved adapter."""
    return key.replace("base_model.model.model.language_model.", "base_model.model.model.").replace(
        "base_model.model.model.visual.", "base_model.model.visual."
    )


def test_an_adapter_saved_with_transformers_4_keys_loads_and_equals_the_adapted_model(tmp_path, conversations):
    base_dir = save_tiny_chat(tmp_path / "base", seed=3)
    reference = QwenVLChat.from_pretrained(str(base_dir), max_pixels=112 * 112)
    adapted = get_peft_model(reference.model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in adapted.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # LoRA starts at zero: make it change the logits
    adapter_dir = tmp_path / "adapter"
    adapted.save_pretrained(adapter_dir)
    state = load_file(adapter_dir / "adapter_model.safetensors")
    legacy = {_legacy_key(key): tensor for key, tensor in state.items()}
    assert any(key.startswith("base_model.model.model.layers.") for key in legacy)
    save_file(legacy, adapter_dir / "adapter_model.safetensors")
    batch = reference.build_batch(conversations)
    with torch.no_grad():
        expected = adapted(**batch).logits
        base_logits = QwenVLChat.from_pretrained(str(base_dir)).model(**batch).logits

    loaded = QwenVLChat.from_pretrained(str(base_dir), max_pixels=112 * 112, adapter=str(adapter_dir))
    with torch.no_grad():
        logits = loaded.model(**batch).logits
    assert (expected - base_logits).abs().max() > 1e-2
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["r"] == 4


def test_a_missing_adapter_folder_is_named(tmp_path):
    base_dir = save_tiny_chat(tmp_path / "base")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty holds no adapter_config\.json"):
        QwenVLChat.from_pretrained(str(base_dir), adapter=str(tmp_path / "empty"))


def test_a_saved_tiny_chat_reloads_with_the_same_answers(tmp_path, chat, conversations):
    reloaded = QwenVLChat.from_pretrained(str(save_tiny_chat(tmp_path / "tiny", seed=0)), max_pixels=112 * 112)
    torch.testing.assert_close(
        reloaded.answer_probabilities(conversations), chat.answer_probabilities(conversations), atol=1e-6, rtol=0
    )


def test_added_words_become_single_tokens_with_embedding_rows_and_are_added_once():
    chat = build_tiny_chat()
    rows = chat.model.get_input_embeddings().num_embeddings
    words = [f"zq{number}" for number in range(80)]  # more than the spare rows: the embeddings must grow
    assert add_word_tokens(chat, [*words, " zq0", "zq0"]) == 81
    assert [len(chat.tokenizer.tokenize(word)) for word in (*words, " zq0")] == [1] * 81
    grown = chat.model.get_input_embeddings().num_embeddings
    assert grown >= len(chat.tokenizer) > rows and grown % 64 == 0
    assert chat.model.get_output_embeddings().weight.shape[0] == grown
    assert add_word_tokens(chat, words) == 0
    with torch.no_grad():
        logits = chat.model(input_ids=torch.tensor([chat.tokenizer.convert_tokens_to_ids(words[:3])])).logits
    assert logits.shape == (1, 3, grown)
