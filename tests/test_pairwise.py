"""Pairwise relational scores: `RelSimModel.similarity`, the official-style one-call helper, and the check of the
official README's example table (run here on the tiny model, against which the official numbers must fail)."""

import pytest
import torch
from conftest import random_image

from training.search.official_example import OFFICIAL_SCORES, REFERENCE_IMAGE, program
from training.search.pairwise import native_resolution_image, preprocess, relsim


@pytest.fixture
def model_dir(model, processor, tmp_path):
    folder = tmp_path / "relsim-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_model_similarity_is_the_cosine_of_each_pair(model, processor, images):
    embeddings = model.embed_images(images, processor)
    scores = model.similarity(images, images[::-1], processor, batch_size=2)
    assert scores.shape == (3,)
    expected = torch.stack(
        [embeddings[0] @ embeddings[2], embeddings[1] @ embeddings[1], embeddings[2] @ embeddings[0]]
    )
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    assert float(scores[1]) == pytest.approx(1.0, abs=1e-6)  # an image against itself
    assert float(scores[0]) == pytest.approx(float(scores[2]), abs=1e-6)  # symmetric
    assert abs(float(scores[0])) < 0.999  # two different images are not scored as one


def test_one_image_on_a_side_is_compared_with_every_image_of_the_other(model, processor, images):
    embeddings = model.embed_images(images, processor)
    scores = model.similarity(images[0], images, processor)
    torch.testing.assert_close(scores, embeddings @ embeddings[0], rtol=0, atol=1e-6)


def test_unequal_sides_are_refused_naming_both_lengths(model, processor, images):
    with pytest.raises(ValueError, match="got 3 and 2 images"):
        model.similarity(images, images[:2], processor)


def test_the_one_call_helper_scores_a_pair_as_the_model_does(model, processor, images, model_dir):
    scorer, prepare = relsim(pretrained=True, checkpoint_dir=model_dir, device="cpu")
    score = scorer(prepare(images[0]), prepare(images[1]))
    assert isinstance(score, float)
    assert score == pytest.approx(float(model.similarity(images[0], images[1], processor)[0]), abs=1e-5)
    paired = scorer(prepare(images), prepare(images[::-1]))
    torch.testing.assert_close(paired, model.similarity(images, images[::-1], processor), rtol=0, atol=1e-5)


def test_the_helper_refuses_untrained_weights_and_unconverted_official_checkpoints(tmp_path):
    with pytest.raises(ValueError, match=r"relsim\(pretrained=False\) is not supported"):
        relsim(pretrained=False, checkpoint_dir=tmp_path)
    (tmp_path / "projection_and_config.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"convert it first: python -m training\.trainer convert-official"):
        relsim(pretrained=True, checkpoint_dir=tmp_path)


def test_native_resolution_rounds_each_side_to_the_patch_grid(processor):
    # 28-pixel grid (patch 14, merge 2): 100 -> 112 rows, 150 -> 140 columns; 64 -> 56 on both sides
    assert native_resolution_image(random_image(100, 150, 0), processor).size == (140, 112)
    assert native_resolution_image(random_image(64, 64, 1), processor).size == (56, 56)
    assert preprocess(random_image(64, 64, 1).convert("L")).mode == "RGB"


def test_native_resolution_scores_the_whole_image_not_the_crop(model, processor, model_dir):
    square = random_image(112, 112, 3)  # already on the grid and of the model's size: both routes see the same pixels
    wide = random_image(112, 224, 4)  # the model's centre crop keeps its middle half only
    model_scorer, _ = relsim(pretrained=True, checkpoint_dir=model_dir, device="cpu")
    native_scorer, _ = relsim(pretrained=True, checkpoint_dir=model_dir, device="cpu", resolution="native")
    torch.testing.assert_close(native_scorer.embed(square), model_scorer.embed(square), rtol=0, atol=1e-6)
    native_wide, cropped_wide = native_scorer.embed(wide), model_scorer.embed(wide)
    assert float(native_wide[0] @ cropped_wide[0]) < 0.9999


def test_official_example_prints_our_scores_beside_the_table(model_dir, tmp_path, capsys):
    images_dir = tmp_path / "anonymous_caption"
    images_dir.mkdir()
    for seed, name in enumerate([REFERENCE_IMAGE, *(name for name, _ in OFFICIAL_SCORES)]):
        random_image(60 + 7 * seed, 80, seed).save(images_dir / name, format="JPEG")
    arguments = ["--checkpoint", str(model_dir), "--images", str(images_dir), "--device", "cpu"]

    assert program([*arguments, "--tolerance", "2"]) == 0  # cosines lie in [-1, 1]: within 2 of anything
    table = capsys.readouterr().out.splitlines()
    scorer, _ = relsim(pretrained=True, checkpoint_dir=model_dir, device="cpu", resolution="native")
    for line, (name, official) in zip(table[1:], OFFICIAL_SCORES, strict=True):
        ours = scorer(str(images_dir / REFERENCE_IMAGE), str(images_dir / name))
        assert line.split(" | ")[:3] == [f"{name:<16}", f"{official:8.3f}", f"{ours:6.3f}"]

    assert program([*arguments, "--tolerance", "0.001"]) == 1  # a random tiny model does not reproduce them
    assert capsys.readouterr().out.count("| NO") >= 5


def test_official_example_names_the_missing_images(tmp_path, capsys):
    (tmp_path / REFERENCE_IMAGE).write_bytes(b"")
    assert program(["--checkpoint", str(tmp_path), "--images", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "lacks mam2.jpg, mam5.jpg, mam3.jpg, bo2.jpg, mam4.jpg, bo.jpg" in error and error.count("\n") == 1
