"""Teacher-forced answer log-likelihoods of the chat wrapper, and sampled answers as the token ids that were drawn."""

import pytest
import torch

from tests.conftest import random_image
from training.vlm.decoding import Decoding
from training.vlm.tiny import build_tiny_chat


PROMPT = "Describe this image."


@pytest.fixture(scope="module")
def chat():
    return build_tiny_chat(seed=1)


@pytest.fixture(scope="module")
def conversations():
    """Images of different shapes, so prompts differ in length and a batch is padded."""
    sizes = [(64, 64), (40, 120), (112, 56), (90, 90)]
    return [([random_image(height, width, seed)], PROMPT) for seed, (height, width) in enumerate(sizes)]


def plain_log_likelihood(chat, conversation, answer_ids: list[int]) -> float:
    """One unpadded forward over prompt + answer, full logits, log-softmax gathered at the answer's tokens."""
    batch = chat.build_batch([conversation])
    prompt_length = batch["input_ids"].shape[1]
    input_ids = torch.cat([batch["input_ids"], torch.tensor([answer_ids])], dim=1)
    inputs = {
        **batch,
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == chat.image_token_id).int(),
    }
    with torch.no_grad():
        logits = chat.model(**inputs).logits[0]
    log_probabilities = logits[prompt_length - 1 : prompt_length - 1 + len(answer_ids)].log_softmax(-1)
    return log_probabilities.gather(-1, torch.tensor(answer_ids)[:, None]).sum().item()


def test_log_likelihoods_equal_a_plain_forward_gathered_log_softmax(chat, conversations):
    words = ["three red squares", "a ring", "Yes", "one two three four five six"]
    answer_ids = [chat.tokenizer(word, add_special_tokens=False)["input_ids"] for word in words]
    assert len({len(ids) for ids in answer_ids}) > 2  # answers of different lengths: padded differently
    scores = chat.sequence_log_likelihoods(conversations, words, batch_size=4)
    expected = [plain_log_likelihood(chat, c, ids) for c, ids in zip(conversations, answer_ids, strict=True)]
    assert scores.dtype == torch.float32 and scores.shape == (4,)
    torch.testing.assert_close(scores, torch.tensor(expected), atol=1e-5, rtol=0)
    assert (scores < 0).all()


def test_log_likelihoods_do_not_depend_on_batching_or_padding(chat, conversations):
    answers = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14], []]
    by_one = chat.sequence_log_likelihoods(conversations, answers, batch_size=1)
    by_two = chat.sequence_log_likelihoods(conversations, answers, batch_size=2)
    by_four = chat.sequence_log_likelihoods(conversations, answers, batch_size=4)
    torch.testing.assert_close(by_two, by_one, atol=1e-5, rtol=0)
    torch.testing.assert_close(by_four, by_one, atol=1e-5, rtol=0)
    assert by_one[3].item() == 0.0  # nothing to explain costs nothing
    # a different image changes the score: the image is really read
    swapped = chat.sequence_log_likelihoods([conversations[1], conversations[0]], answers[:2], batch_size=2)
    assert (swapped - by_one[:2]).abs().max() > 1e-4


def test_text_answers_with_end_turn_score_the_turn_end_too(chat, conversations):
    text = "two blue circles"
    ids = chat.tokenizer(text, add_special_tokens=False)["input_ids"]
    with_end = chat.sequence_log_likelihoods(conversations[:1], [text], end_turn=True)
    as_ids = chat.sequence_log_likelihoods(conversations[:1], [[*ids, chat.turn_end_id]])
    torch.testing.assert_close(with_end, as_ids, atol=1e-6, rtol=0)
    assert with_end.item() < chat.sequence_log_likelihoods(conversations[:1], [text]).item()


def test_log_likelihoods_refuse_mismatched_answers(chat, conversations):
    with pytest.raises(ValueError, match="3 answers for 4 conversations"):
        chat.sequence_log_likelihoods(conversations, ["a", "b", "c"])


def test_sampled_token_ids_are_the_drawn_answer_and_stop_at_its_end(chat, conversations):
    decoding = Decoding(max_new_tokens=8, do_sample=True, seed=3)
    ids = chat.generate_token_ids(conversations, decoding, batch_size=4)
    texts = chat.generate(conversations, decoding=decoding, batch_size=4)
    assert [chat.tokenizer.decode(row, skip_special_tokens=True) for row in ids] == texts
    stops = chat.stop_token_ids()
    for row in ids:
        assert 1 <= len(row) <= 8
        assert not any(token in stops for token in row[:-1])  # only the last token may end the answer
    assert ids == chat.generate_token_ids(conversations, decoding, batch_size=4)  # seeded: repeats


def test_answers_never_hold_an_image_slot(chat, conversations, monkeypatch):
    with pytest.raises(ValueError, match="answer 1 holds vision placeholder tokens"):
        chat.sequence_log_likelihoods(conversations[:2], [[5], [6, chat.image_token_id]])
    seen = {}
    original = chat.model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(chat.model, "generate", spy)
    chat.generate_token_ids(conversations[:1], Decoding(max_new_tokens=2, do_sample=True, seed=0))
    assert chat.image_token_id in seen["suppress_tokens"]  # a random model would otherwise draw image pads
