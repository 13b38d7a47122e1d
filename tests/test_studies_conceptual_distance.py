"""Conceptual distance by description length: the arithmetic on hand-made scores, the runner on the tiny chat (cache
resume after a kill), the literal describer's training rows and tokens."""

import json

import pytest

from tests.conftest import random_image
from training.studies.conceptual_distance import area_under_curve, pair_distance
from training.studies.conceptual_distance_cache import DESCRIPTIONS_FILE, SCORES_FILE
from training.studies.conceptual_distance_runner import ConceptualDistance, Describer, DistanceSettings
from training.vlm.tiny import build_tiny_chat


# log p(h | image) for two descriptions of each image at each length: {(image, length): [(own, other), ...]}
HAND_SCORES = {
    ("A", 2): [(-1.0, -3.0), (-2.0, -2.5)],  # gaps 2, 0.5 -> mean 1.25
    ("B", 2): [(-1.0, -2.0), (-1.0, -1.0)],  # gaps 1, 0 -> mean 0.5
    ("A", 4): [(-4.0, -8.0), (-5.0, -7.0)],  # gaps 4, 2 -> mean 3
    ("B", 4): [(-2.0, -3.0), (-3.0, -6.0)],  # gaps 1, 3 -> mean 2
}


def fake_describe(image, length):
    return [(image, length, sample) for sample in range(2)]


def fake_score(description, image):
    own_image, length, sample = description
    own, other = HAND_SCORES[(own_image, length)][sample]
    return own if image == own_image else other


def test_distance_curve_and_area_on_hand_made_scores():
    distance = pair_distance("A", "B", [2, 4], fake_describe, fake_score)
    assert distance.halves == ((1.25, 0.5), (3.0, 2.0))
    assert distance.curve == (0.875, 2.5)
    assert distance.area == pytest.approx((0.875 + 2.5) / 2 * (4 - 2))  # 3.375
    swapped = pair_distance("B", "A", [2, 4], fake_describe, fake_score)
    assert swapped.curve == distance.curve and swapped.area == distance.area  # symmetric by construction


def test_area_is_the_trapezoid_rule_and_lengths_must_increase():
    assert area_under_curve([8, 16, 32], [1.0, 2.0, 4.0]) == pytest.approx(8 * 1.5 + 16 * 3.0)
    assert area_under_curve([8], [1.5]) == 1.5
    with pytest.raises(ValueError, match="strictly increasing"):
        pair_distance("A", "B", [4, 2], fake_describe, fake_score)


SETTINGS = DistanceSettings(lengths=(3, 6), num_samples=3, seed=5, batch_size=8)


@pytest.fixture(scope="module")
def describer():
    return Describer(build_tiny_chat(seed=2), "Describe this image.", "tiny")


@pytest.fixture(scope="module")
def pairs():
    a, b, c = (random_image(64, 64, seed) for seed in (20, 21, 22))
    return [(a, b), (b, c)]


def keys_of(path):
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def test_distances_follow_the_definition_on_the_chat_scores(tmp_path, describer, pairs):
    run = ConceptualDistance(describer, tmp_path, SETTINGS)(pairs[:1])
    (distance,) = run.distances
    assert run.sampled == 2 * 2 * 3 and run.scored == 2 * 2 * 3 * 2  # 2 images, 2 lengths, 3 samples, 2 scorings
    records = [json.loads(line) for line in (tmp_path / DESCRIPTIONS_FILE).read_text().splitlines()]
    a_hash, b_hash = run.image_hashes[0]
    images = dict(zip((a_hash, b_hash), pairs[0], strict=True))
    chat = describer.chat
    for position, length in enumerate(SETTINGS.lengths):
        halves = []
        for own, other in ((a_hash, b_hash), (b_hash, a_hash)):
            drawn = [r["token_ids"] for r in records if r["image_hash"] == own and r["length"] == length]
            assert len(drawn) == 3 and all(1 <= len(ids) <= length for ids in drawn)
            mine = chat.sequence_log_likelihoods([([images[own]], describer.prompt)] * 3, drawn)
            theirs = chat.sequence_log_likelihoods([([images[other]], describer.prompt)] * 3, drawn)
            halves.append((mine - theirs).mean().item())
        assert distance.curve[position] == pytest.approx(0.5 * sum(halves), abs=1e-5)
    assert len({tuple(r["token_ids"]) for r in records if r["length"] == 6}) > 2  # temperature 1: samples differ


def test_a_killed_run_resumes_without_duplicates_and_gives_the_same_result(tmp_path, describer, pairs, monkeypatch):
    reference = ConceptualDistance(describer, tmp_path / "reference", SETTINGS)(pairs)

    calls = {"sample": 0, "score": 0}
    original_generate, original_score = describer.chat.generate_token_ids, describer.chat.sequence_log_likelihoods

    def generate_then_die(*args, **kwargs):
        calls["sample"] += 1
        if calls["sample"] > 3:
            raise KeyboardInterrupt
        return original_generate(*args, **kwargs)

    monkeypatch.setattr(describer.chat, "generate_token_ids", generate_then_die)
    with pytest.raises(KeyboardInterrupt):
        ConceptualDistance(describer, tmp_path / "resumed", SETTINGS)(pairs)
    monkeypatch.setattr(describer.chat, "generate_token_ids", original_generate)

    def score_then_die(*args, **kwargs):
        calls["score"] += 1
        if calls["score"] > 2:
            raise KeyboardInterrupt
        return original_score(*args, **kwargs)

    monkeypatch.setattr(describer.chat, "sequence_log_likelihoods", score_then_die)
    with pytest.raises(KeyboardInterrupt):
        ConceptualDistance(describer, tmp_path / "resumed", SETTINGS)(pairs)
    monkeypatch.setattr(describer.chat, "sequence_log_likelihoods", original_score)
    scores_file = tmp_path / "resumed" / SCORES_FILE
    written = len(keys_of(scores_file))
    assert written == 2 * 8  # two batches of 8 made it to disk
    with scores_file.open("ab") as out:  # and the kill landed in the middle of writing a record
        out.write(b'{"key": "half-writ')

    resumed = ConceptualDistance(describer, tmp_path / "resumed", SETTINGS)(pairs)
    assert resumed.sampled == 0  # every description was on disk after the second run
    assert resumed.scored == reference.scored - written
    for got, expected in zip(resumed.distances, reference.distances, strict=True):
        assert got.curve == pytest.approx(expected.curve, abs=1e-5) and got.area == pytest.approx(
            expected.area, abs=1e-4
        )
    for name in (DESCRIPTIONS_FILE, SCORES_FILE):
        keys = keys_of(tmp_path / "resumed" / name)
        assert len(keys) == len(set(keys)) == len(keys_of(tmp_path / "reference" / name))
    again = ConceptualDistance(describer, tmp_path / "resumed", SETTINGS)(pairs)
    assert (again.sampled, again.scored) == (0, 0)
    assert [d.curve for d in again.distances] == [d.curve for d in resumed.distances]


def test_another_prompt_or_seed_is_another_cache_entry(tmp_path, describer, pairs):
    ConceptualDistance(describer, tmp_path, SETTINGS)(pairs[:1])
    other_seed = ConceptualDistance(describer, tmp_path, DistanceSettings((3, 6), 3, seed=6))(pairs[:1])
    other_prompt = Describer(describer.chat, "Say what you see.", "tiny", describer.fingerprint)
    prompted = ConceptualDistance(other_prompt, tmp_path, SETTINGS)(pairs[:1])
    assert other_seed.sampled == prompted.sampled == 12


def test_the_shipped_pretrained_tiny_chat_is_a_literal_describer_with_its_prompt():
    from training.studies.conceptual_distance_describers import load_describer
    from training.vlm.tiny import PRETRAINED_TINY_CHAT

    describer = load_describer(str(PRETRAINED_TINY_CHAT), name="literal", max_pixels=12544)
    assert describer.prompt == "Describe the image."
    assert describer.fingerprint != Describer(build_tiny_chat(seed=0), "x").fingerprint
