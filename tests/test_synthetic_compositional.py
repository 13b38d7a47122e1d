import json
import re

import numpy as np
import pytest
from scipy import ndimage

from training.synthetic.attributes import COLOURS, HELD_OUT_COLOURS, HELD_OUT_SHAPES, SHAPES
from training.synthetic.drawing import NESTING_RATIOS, ODD_TURN, TURN_STEP
from training.synthetic.factors import (
    ALL_COMBINATIONS,
    FACTORS,
    FAMILY_RELATIONS,
    VALID_RELATIONS,
    Relation,
    check_valid,
    invalid_reason,
)
from training.synthetic.families import FAMILIES, FAMILY_NAMES, SEPARATOR_RGB
from training.synthetic.relations import (
    SPLIT_FILE,
    held_out_relations,
    relation_dataset,
    relation_examples,
    relation_split,
)
from training.synthetic.shapes import object_mask


EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


@pytest.fixture(scope="module")
def drawn():
    """Two examples of every valid relation: one with training looks, one with held-out looks."""
    return [
        *relation_examples(1, "train", relations="all", seed=5),
        *relation_examples(1, "heldout", relations="all", seed=5),
    ]


def region(example):
    """The drawing's pixels inside its frame, before mirroring (the half that holds `objects`)."""
    left, top, _ = example["metadata"]["frame"]
    width, height = example["metadata"]["region"]
    return np.asarray(example["image"]).astype(int)[top : top + height, left : left + width]


def foreground(pixels, background):
    return (np.abs(pixels - background).sum(-1) > 0) & (np.abs(pixels - SEPARATOR_RGB).sum(-1) > 0)


def measure(example):
    """Per top-level object (level 0): the pixel component with most pixels inside its radius (nested copies: the
    outer ring, not the core), its commonest colour and its area with holes filled (stripes, outlines and nested
    rings count as the whole shape); `distance`: its centroid's from the object's centre."""
    pixels = region(example)
    background = np.asarray(example["image"].getpixel((0, 0)))
    labels, count = ndimage.label(foreground(pixels, background), structure=EIGHT_NEIGHBOURS)
    centroids = ndimage.center_of_mass(labels > 0, labels, range(1, count + 1))
    found = []
    for item in example["metadata"]["objects"]:
        if item["level"]:
            continue
        x, y = item["centre"]
        rows, columns = np.ogrid[: labels.shape[0], : labels.shape[1]]
        disk = np.hypot(rows - y, columns - x) <= item["radius"]
        label = int(np.argmax(np.bincount(labels[disk], minlength=count + 1)[1:])) + 1
        distance = np.hypot(centroids[label - 1][0] - y, centroids[label - 1][1] - x)
        component = labels == label
        colours, counts = np.unique(pixels[component], axis=0, return_counts=True)
        found.append(
            {"label": label, "distance": distance, "area": int(ndimage.binary_fill_holes(component).sum())}
            | {"mask": component}
            | {"colour": colours[np.argmax(counts)].tolist(), "item": item}
        )
    return found, count


def per_slot(found, key):
    slots = {}
    for entry in found:
        slots.setdefault(entry["item"]["slot"], entry[key])
    return [slots[slot] for slot in sorted(slots)]


def best_template(entry, candidates, example):
    """Which (shape, angle) re-drawn at the object's place covers its pixels best (intersection over union);
    nested copies are drawn as the ring their next level leaves."""
    item, metadata = entry["item"], example["metadata"]
    size, texture, centre = tuple(metadata["region"]), metadata["texture"], tuple(item["centre"])

    def overlap(shape, angle):
        mask = object_mask(size, shape, centre, item["radius"], texture, angle)
        if metadata["levels"] > 1:
            mask = mask & ~object_mask(size, shape, centre, item["radius"] * NESTING_RATIOS[1], texture, angle)
        return (mask & entry["mask"]).sum() / (mask | entry["mask"]).sum()

    return max(candidates, key=lambda candidate: overlap(*candidate))


def test_every_valid_relation_draws_objects_that_match_their_metadata(drawn):
    assert len(drawn) == 2 * len(VALID_RELATIONS)
    for example in drawn:
        metadata, name = example["metadata"], example["relation"]
        found, components = measure(example)
        levels = metadata["levels"]
        # nested solid copies alternate with the ground: two levels are one ring, three a ring around a core
        assert components == len(found) * ((levels + 1) // 2), name
        assert len({entry["label"] for entry in found}) == len(found), name
        for entry in found:
            item = entry["item"]
            # a heart's or an arrow's pixels sit off the centre it is drawn around
            assert entry["distance"] < 0.3 * item["radius"] + 1, name
            assert entry["colour"] == item["rgb"], name
            # the shape's area matches the radius: a disk of that radius at most, a star's or an arrow's at least
            assert 0.25 * np.pi * item["radius"] ** 2 < entry["area"] <= 1.2 * np.pi * (item["radius"] + 1) ** 2, name


def slot_values(example, key):
    found, _ = measure(example)
    return per_slot(found, key), found


@pytest.mark.parametrize(
    ("change", "key", "sign"),
    [("growing", "area", 1), ("shrinking", "area", -1), ("darker", "colour", -1)],
)
def test_changes_run_step_by_step_in_the_pixels(drawn, change, key, sign):
    checked = 0
    for example in drawn:
        if example["change"] != change or example["exception"] != "none":
            continue
        values, _ = slot_values(example, key)
        if key == "colour":
            values = [sum(colour) for colour in values]
        assert (sign * np.diff(values) > 0).all(), example["relation"]
        checked += 1
    assert checked >= 20


def test_turning_objects_turn_by_one_step_each_and_the_pixels_show_it(drawn):
    checked = 0
    for example in drawn:
        if example["change"] != "turning":
            continue
        found, _ = measure(example)
        angles = per_slot(found, "item")
        assert [item["angle"] for item in angles] == [TURN_STEP * slot for slot in sorted({a["slot"] for a in angles})]
        shapes = {entry["item"]["shape"] for entry in found}
        candidates = [(shape, TURN_STEP * step) for shape in shapes for step in range(5)]
        for entry in found:
            best = best_template(entry, candidates, example)
            assert best == (entry["item"]["shape"], entry["item"]["angle"]), example["relation"]
        checked += 1
    assert checked >= 20


def odd_ones(values):
    """Indices whose value differs from the most common one."""
    common = max(values, key=values.count)
    return [index for index, value in enumerate(values) if value != common]


def test_exceptions_single_out_exactly_one_slot_in_the_pixels(drawn):
    checked = {"colour": 0, "size": 0, "missing": 0, "shape": 0, "orientation": 0}
    for example in drawn:
        exception, metadata = example["exception"], example["metadata"]
        if exception not in checked or example["change"] not in ("none", "growing", "turning"):
            continue
        found, _ = measure(example)
        slots = sorted({entry["item"]["slot"] for entry in found})
        odd = metadata["odd_slot"]
        assert metadata["slots"] >= 3, example["relation"]  # one odd object needs two ordinary ones at least
        if exception == "missing":
            assert slots == [slot for slot in range(metadata["slots"]) if slot != odd], example["relation"]
            x, y = metadata["centres"][odd]
            assert not any(np.hypot(e["item"]["centre"][0] - x, e["item"]["centre"][1] - y) < 2 for e in found)
        elif exception == "colour":
            assert [slots[i] for i in odd_ones([tuple(c) for c in per_slot(found, "colour")])] == [odd]
        elif exception == "size" and example["change"] == "none":
            areas = per_slot(found, "area")
            others = [area for slot, area in zip(slots, areas, strict=True) if slot != odd]
            assert areas[slots.index(odd)] < 0.8 * min(others) or areas[slots.index(odd)] > 1.5 * max(others)
        elif exception in ("shape", "orientation"):
            items = [entry["item"] for entry in found]
            candidates = {(item["shape"], item["angle"]) for item in items}
            candidates |= {(item["shape"], ODD_TURN) for item in items} if exception == "orientation" else set()
            for entry in found:
                best = best_template(entry, candidates, example)
                assert best == (entry["item"]["shape"], entry["item"]["angle"]), example["relation"]
            key = "shape" if exception == "shape" else "angle"
            assert odd_ones([item[key] for item in per_slot(found, "item")]) == [slots.index(odd)]
        else:
            continue
        checked[exception] += 1
    assert min(checked.values()) >= 10, checked


def test_panels_count_one_two_three_when_one_more_each_step(drawn):
    checked = 0
    for example in drawn:
        if example["change"] != "one_more":
            continue
        metadata = example["metadata"]
        pixels = region(example)
        mask = foreground(pixels, np.asarray(example["image"].getpixel((0, 0))))
        left, right = metadata["separators"]
        panels = [mask[:, : left - 1], mask[:, left + 1 : right - 1], mask[:, right + 1 :]]
        per_object = (2 if example["structure"] == "pairs" else 1) * ((metadata["levels"] + 1) // 2)
        expected = [step * per_object for step in (1, 2, 3)]
        if example["exception"] == "none":
            counts = [ndimage.label(panel, structure=EIGHT_NEIGHBOURS)[1] for panel in panels]
            assert counts == expected, example["relation"]
        checked += 1
    assert checked == 2 * 5


def test_mirrored_relations_are_pixel_symmetric_and_pairs_are_side_by_side(drawn):
    mirrored = pairs = 0
    for example in drawn:
        pixels = np.asarray(example["image"])
        left, top, extent = example["metadata"]["frame"]
        framed = pixels[top : top + extent, left : left + extent]
        if example["structure"] == "mirror_left_right":
            assert np.array_equal(pixels[:, left : left + extent], pixels[:, left : left + extent][:, ::-1])
            mirrored += 1
        elif example["structure"] == "mirror_top_bottom":
            assert np.array_equal(framed, framed[::-1]), example["relation"]
            mirrored += 1
        elif example["structure"] == "pairs":
            items = example["metadata"]["objects"]
            for first, second in zip(items[::2], items[1::2], strict=True):
                assert first["slot"] == second["slot"] and first["centre"][1] == second["centre"][1]
                assert second["centre"][0] - first["centre"][0] > first["radius"] + second["radius"]
            pairs += 1
    assert mirrored == 2 * 48 and pairs == 2 * 85


def test_at_least_150_distinct_captions_with_placeholders_and_no_object_words():
    captions = [relation.caption for relation in VALID_RELATIONS]
    assert len(VALID_RELATIONS) == 407 and len(set(captions)) == len(captions)
    words = {word for name in [*SHAPES, *COLOURS] for word in name.split()}
    for caption in captions:
        assert "{Object}" in caption
        assert not words & set(re.findall(r"[a-z]+", caption)), caption
    assert {caption for caption in captions if "{Shape}" in caption} == {
        r.caption for r in VALID_RELATIONS if r.layout == "outline"
    }


def test_captions_compose_the_factor_phrases_in_a_fixed_order():
    relation = Relation("row", "growing", "colour", "none")
    assert relation.caption == (
        "{Object}s in a row, growing larger step by step, exactly one of them a different colour"
    )
    assert Relation.from_name(relation.name) == relation
    again = next(relation_examples(1, relations=[relation], seed=3))
    assert again["caption"] == relation.caption and again["relation"] == "row/growing/colour/none"


def test_same_seed_same_pixels_and_other_seeds_differ():
    relations = list(VALID_RELATIONS[::60])
    first = list(relation_examples(2, relations=relations, seed=4, image_size=64))
    again = list(relation_examples(2, relations=relations, seed=4, image_size=64))
    other = list(relation_examples(2, relations=relations, seed=5, image_size=64))
    assert all(a["image"].tobytes() == b["image"].tobytes() for a, b in zip(first, again, strict=True))
    assert all(a["metadata"] == b["metadata"] for a, b in zip(first, again, strict=True))
    assert sum(a["image"].tobytes() != b["image"].tobytes() for a, b in zip(first, other, strict=True)) == len(first)


def test_invalid_combinations_are_refused_with_their_reason():
    assert len(ALL_COMBINATIONS) == 9 * 7 * 6 * 5
    with pytest.raises(ValueError, match=r"relation row/one_more/none/none is not valid: .*needs panels"):
        check_valid(Relation("row", "one_more", "none", "none"))
    with pytest.raises(ValueError, match=r"tower/none/missing/none is not valid: .*floating"):
        next(relation_examples(1, relations=[Relation("tower", "none", "missing", "none")]))
    with pytest.raises(ValueError, match="mirror image would repeat the exception"):
        check_valid(Relation("row", "none", "colour", "mirror_left_right"))
    with pytest.raises(ValueError, match=r"unknown layout 'spiral'; choose from \('row'"):
        invalid_reason(Relation("spiral", "none", "none", "none"))
    with pytest.raises(ValueError, match="relation split must be one of"):
        relation_split("test")


def test_the_eight_families_are_combinations_of_the_new_world():
    assert set(FAMILY_RELATIONS) == set(FAMILY_NAMES)
    for family, relations in FAMILY_RELATIONS.items():
        for relation in relations:
            assert check_valid(relation) is relation, family
    # the families' captions say what the factor phrases say
    keywords = {"progression": "row", "odd_one_out": "grid", "mirror_symmetry": "mirrored", "nesting": "nested"}
    keywords |= {"mosaic": "outline of a large {Shape}", "counting": "panels", "radial": "ring", "stacking": "tower"}
    for family, keyword in keywords.items():
        assert keyword in FAMILIES[family].caption and keyword in FAMILY_RELATIONS[family][0].caption


def test_held_out_relations_are_a_quarter_and_keep_every_factor_value_in_training():
    held_out, train = relation_split("heldout"), relation_split("train")
    assert len(held_out) == 102 and len(train) == 305 and not set(held_out) & set(train)
    assert len(held_out) >= 0.2 * len(VALID_RELATIONS)
    for factor, values in FACTORS.items():
        seen = {getattr(relation, factor) for relation in train}
        assert seen == set(values), factor


def test_the_checked_in_split_is_what_the_function_draws():
    record = json.loads(SPLIT_FILE.read_text())
    assert record["heldout"] == [relation.name for relation in held_out_relations(record["seed"], record["fraction"])]
    assert record["valid"] == len(VALID_RELATIONS)
    assert held_out_relations(record["seed"] + 1) != held_out_relations(record["seed"])


def test_dataset_holds_the_relation_split_and_the_looks_split():
    dataset = relation_dataset(1, "heldout", relations="heldout", image_size=48, seed=2)
    assert len(dataset) == 102
    assert set(dataset["relation"]) == {relation.name for relation in relation_split("heldout")}
    assert set(dataset["shape"]) <= set(HELD_OUT_SHAPES) and set(dataset["colour"]) <= set(HELD_OUT_COLOURS)
    assert dataset[0]["caption"] == Relation.from_name(dataset[0]["relation"]).caption
    assert dataset[0]["image"].size == (48, 48)
