import hashlib
import itertools
import json
import re

import numpy as np
import pytest
from scipy import ndimage

from training.synthetic.attributes import HELD_OUT_COLOURS, HELD_OUT_SHAPES, TRAIN_COLOURS, TRAIN_SHAPES
from training.synthetic.dataset import synthetic_dataset, synthetic_examples, write_official_format
from training.synthetic.families import FAMILIES, FAMILY_NAMES, SEPARATOR_RGB
from training.trainer.data import read_official_captions


EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)  # a pixel touching another by a corner belongs to the same object


def count_objects(mask):
    return ndimage.label(mask, structure=EIGHT_NEIGHBOURS)[1]


def examples_of(family, count=12, split="train", seed=0, size=112):
    return list(synthetic_examples(count, split, seed, size, families=[family]))


def foreground(example):
    pixels = np.asarray(example["image"]).astype(int)
    background = np.asarray(example["image"].getpixel((0, 0)))
    return (np.abs(pixels - background).sum(-1) > 0) & (np.abs(pixels - SEPARATOR_RGB).sum(-1) > 0)


def test_eight_families_with_anonymous_captions():
    assert len(FAMILY_NAMES) >= 8
    for family in FAMILIES.values():
        assert re.search(r"\{Object\}", family.caption), family.name
    assert len({family.caption for family in FAMILIES.values()}) == len(FAMILIES)


def test_same_seed_same_bytes_and_examples_do_not_depend_on_the_count():
    first = list(synthetic_examples(4, "train", seed=7))
    again = list(synthetic_examples(4, "train", seed=7))
    shorter = list(synthetic_examples(2, "train", seed=7))
    other = list(synthetic_examples(4, "train", seed=8))
    for a, b in zip(first, again, strict=True):
        assert a["image"].tobytes() == b["image"].tobytes() and a["metadata"] == b["metadata"]
    for a, b in zip(first, shorter, strict=False):
        assert a["image"].tobytes() == b["image"].tobytes()
    assert sum(a["image"].tobytes() != b["image"].tobytes() for a, b in zip(first, other, strict=True)) == len(first)


def test_mirror_family_is_pixel_symmetric():
    for example in examples_of("mirror_symmetry"):
        pixels = np.asarray(example["image"])
        assert np.array_equal(pixels, pixels[:, ::-1])
        assert foreground(example).any()


def framed(example):
    """The example's foreground inside its drawing frame, panels laid out left to right."""
    left, top, extent = example["metadata"]["frame"]
    mask = foreground(example)[top : top + extent, left : left + extent]
    return mask.T if example["metadata"].get("vertical") else mask


def test_counting_panels_hold_one_two_three_objects():
    examples = examples_of("counting", 20)
    assert {example["metadata"]["vertical"] for example in examples} == {True, False}
    for example in examples:
        mask = framed(example)
        left, right = example["metadata"]["separators"]
        panels = [mask[:, : left - 1], mask[:, left + 1 : right - 1], mask[:, right + 1 :]]
        assert [count_objects(panel) for panel in panels] == [1, 2, 3]


def test_progression_objects_grow_along_the_row():
    for example in examples_of("progression", 20):
        labels, count = ndimage.label(framed(example), structure=EIGHT_NEIGHBOURS)
        assert count == len(example["metadata"]["radii"])
        centres = ndimage.center_of_mass(labels > 0, labels, range(1, count + 1))
        areas = ndimage.sum(labels > 0, labels, range(1, count + 1))
        ordered = [area for _, area in sorted(zip([c[1] for c in centres], areas, strict=True))]
        differences = np.diff(ordered)
        assert (differences > 0).all() or (differences < 0).all()


def test_odd_one_out_has_exactly_one_different_cell():
    for example in examples_of("odd_one_out", 20):
        metadata = example["metadata"]
        left, top, extent = metadata["frame"]
        pixels = np.asarray(example["image"])[top : top + extent, left : left + extent]
        cell, margin, side = metadata["cell"], metadata["margin"], metadata["side"]
        cells = [
            pixels[
                margin + row * cell : margin + (row + 1) * cell, margin + column * cell : margin + (column + 1) * cell
            ]
            for row in range(side)
            for column in range(side)
        ]
        reference = cells[(metadata["odd_index"] + 1) % len(cells)]
        differing = [index for index, crop in enumerate(cells) if not np.array_equal(crop, reference)]
        assert differing == [metadata["odd_index"]]


@pytest.mark.parametrize("family", ["radial", "stacking"])
def test_object_counts_match_the_metadata(family):
    for example in examples_of(family, 20):
        assert count_objects(foreground(example)) == example["metadata"]["count"]


def test_nesting_levels_shrink_around_one_centre():
    for example in examples_of("nesting", 20):
        radii = example["metadata"]["radii"]
        assert len(radii) >= 2 and all(inner < outer for outer, inner in itertools.pairwise(radii))


def test_held_out_attributes_never_reach_training_images():
    train = list(synthetic_examples(30, "train", seed=1))
    held_out = list(synthetic_examples(30, "heldout", seed=1))
    assert {example["shape"] for example in train} == set(TRAIN_SHAPES)
    assert {example["colour"] for example in train} == set(TRAIN_COLOURS)
    assert {example["shape"] for example in held_out} == set(HELD_OUT_SHAPES)
    assert {example["colour"] for example in held_out} == set(HELD_OUT_COLOURS)
    odd_values = {e["metadata"]["odd_value"] for e in train if e["family"] == "odd_one_out"}
    assert odd_values <= set(TRAIN_SHAPES) | set(TRAIN_COLOURS)


def test_dataset_and_official_format_round_trip(tmp_path):
    dataset = synthetic_dataset(2, "heldout", seed=3)
    assert len(dataset) == 2 * len(FAMILY_NAMES)
    assert dataset.features["family"].names == list(FAMILY_NAMES)
    jsonl = write_official_format(dataset, tmp_path, "heldout")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert rows[0]["caption"].startswith('"') and rows[0]["caption"].endswith('"')
    assert rows[0]["image_hash"] == hashlib.md5(rows[0]["url_link"].encode()).hexdigest()
    loaded = read_official_captions(jsonl, tmp_path / "images")
    assert loaded["caption"] == dataset["caption"]
    assert all(loaded["image"])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be one of"):
        next(synthetic_examples(1, "test"))
    with pytest.raises(ValueError, match="unknown families"):
        next(synthetic_examples(1, families=["spiral"]))
