import itertools

import numpy as np
import pytest
from scipy import ndimage

from training.synthetic.attributes import BACKGROUNDS, HELD_OUT_COLOURS, HELD_OUT_SHAPES, TRAIN_COLOURS, TRAIN_SHAPES
from training.synthetic.negatives import NEGATIVE_KINDS, is_unstructured, negative_examples


EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def negatives_of(kind, count=30, split="train", seed=0, size=112):
    return list(negative_examples(count, split, seed, size, kinds=[kind]))


def objects_in_pixels(example):
    """Centres, pixel extents and mean colours of the objects, found from the pixels alone (not the metadata)."""
    pixels = np.asarray(example["image"]).astype(int)
    background = np.asarray(BACKGROUNDS[example["background"]])
    mask = np.abs(pixels - background).sum(-1) > 120  # far above the background texture (at most ~20 levels a channel)
    labels, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
    indices = range(1, count + 1)
    centres = np.array(ndimage.center_of_mass(mask, labels, indices)).reshape(-1, 2)[:, ::-1]  # (x, y)
    # extent, not area: an outline covers fewer pixels than a solid object of the same size
    extents = np.array(
        [max(rows.stop - rows.start, cols.stop - cols.start) for rows, cols in ndimage.find_objects(labels)]
    )
    colours = [tuple(pixels[labels == index].mean(0).round()) for index in indices]
    return mask, centres, extents, colours


def test_kinds_take_turns_and_same_seed_gives_same_bytes():
    first = list(negative_examples(9, "train", seed=4))
    again = list(negative_examples(9, "train", seed=4))
    shorter = list(negative_examples(5, "train", seed=4))
    other = list(negative_examples(9, "train", seed=5))
    assert [example["kind"] for example in first] == list(NEGATIVE_KINDS) * 3
    assert [example["index"] for example in first] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for a, b in zip(first, again, strict=True):
        assert a["image"].tobytes() == b["image"].tobytes() and a["metadata"] == b["metadata"]
    for a, b in zip(first, shorter, strict=False):
        assert a["image"].tobytes() == b["image"].tobytes()
    assert all(a["image"].tobytes() != b["image"].tobytes() for a, b in zip(first, other, strict=True))


def test_held_out_attributes_appear_only_in_heldout_negatives():
    def attributes(split):
        examples = list(negative_examples(60, split, seed=2))
        objects = [item for example in examples for item in example["metadata"]["objects"]]
        return {item["shape"] for item in objects}, {item["colour"] for item in objects}

    assert attributes("train") == (set(TRAIN_SHAPES), set(TRAIN_COLOURS))
    assert attributes("heldout") == (set(HELD_OUT_SHAPES), set(HELD_OUT_COLOURS))


def test_plain_object_is_one_object_of_its_named_colour():
    for example in negatives_of("plain_object", 20, split="heldout"):
        _, _, extents, colours = objects_in_pixels(example)
        assert len(extents) == 1 and extents[0] > 0.2 * 112
        assert np.abs(np.array(colours[0]) - HELD_OUT_COLOURS[example["colour"]]).max() <= 8


def test_empty_background_is_textured_but_has_no_object():
    for example in negatives_of("empty_background", 10):
        pixels = np.asarray(example["image"]).astype(int)
        mask, *_ = objects_in_pixels(example)
        assert not mask.any() and example["metadata"]["objects"] == []
        assert pixels.std(axis=(0, 1)).min() > 1.5  # not a flat colour


def test_scatter_has_no_order_a_relation_family_has():
    examples = negatives_of("scatter", 40) + negatives_of("scatter", 40, split="heldout")
    spread = []
    for example in examples:
        mask, centres, extents, colours = objects_in_pixels(example)
        objects = example["metadata"]["objects"]
        assert 3 <= len(extents) == len(objects) <= 6  # separate objects: nothing nested, nothing touching
        # mixed looks: at least two colours in the pixels and no (shape, colour) repeated
        assert len({colour for colour in colours}) >= 2
        assert len({(item["shape"], item["colour"]) for item in objects}) == len(objects)
        # random sizes: the largest object spans clearly more pixels than the smallest, whatever their shapes
        assert extents.max() / extents.min() > 1.1
        # no row, column, tower or grid: no two centres share a column or a line of pixels
        for first, second in itertools.combinations(centres, 2):
            assert np.abs(first - second).min() > 2
        # not on a line (row, progression, stacking) and, from four objects on, not on a ring (radial, mosaic)
        eigenvalues = np.linalg.eigvalsh(np.cov(centres.T))
        spread.append(np.sqrt(eigenvalues[0] / eigenvalues[1]))
        if len(centres) >= 4:
            distances = np.linalg.norm(centres - centres.mean(0), axis=1)
            assert distances.std() / distances.mean() > 0.08
        # no mirror symmetry: most foreground pixels meet background once flipped either way
        for flipped in (mask[:, ::-1], mask[::-1, :]):
            assert (mask & flipped).sum() < 0.5 * mask.sum()
    assert min(spread) > 0.08


def test_unstructured_rejects_each_family_layout():
    def layout(points, radii=None, shapes=("circle", "star", "heart", "cross"), colours=("red", "blue", "teal")):
        radii = radii or [5.0 + 3 * index for index in range(len(points))]
        return [
            {"shape": shapes[i % len(shapes)], "colour": colours[i % len(colours)], "x": x, "y": y, "radius": r}
            for i, ((x, y), r) in enumerate(zip(points, radii, strict=True))
        ]

    loose = [(20.0, 30.0), (80.0, 45.0), (45.0, 90.0)]
    assert is_unstructured(layout(loose), 112)
    row = [(20.0, 56.0), (50.0, 58.0), (85.0, 60.0)]
    assert not is_unstructured(layout(row), 112)  # progression / stacking
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False) + 0.3
    ring = [(56 + 35 * np.cos(angle), 56 + 35 * np.sin(angle)) for angle in angles]
    assert not is_unstructured(layout(ring), 112)  # radial
    grid = [(30.0, 30.0), (80.0, 30.0), (30.0, 80.0), (80.0, 80.0)]
    assert not is_unstructured(layout(grid), 112)  # odd one out
    assert not is_unstructured(layout(loose, radii=[8.0, 8.5, 9.0]), 112)  # one size
    assert not is_unstructured(layout(loose, shapes=("star",)), 112)  # one shape
    assert not is_unstructured(layout(loose, shapes=("star", "cross"), colours=("red", "blue")), 112)  # a repeat


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="split must be one of"):
        next(negative_examples(1, "test"))
    with pytest.raises(ValueError, match="unknown negative kinds"):
        next(negative_examples(1, kinds=["spiral"]))
