import pytest

from training.synthetic.dataset import synthetic_examples
from training.synthetic.families import FAMILY_NAMES
from training.synthetic.literal import literal_description, number_word, plural, with_article
from training.synthetic.negatives import negative_examples


def test_family_descriptions_name_count_shape_colour_and_background():
    for split in ("train", "heldout"):
        for example in synthetic_examples(4, split, seed=1):
            description = literal_description(example)
            assert f"{example['colour']} " in description, description
            assert plural(example["shape"]) in description, description
            assert description.endswith(f"on a {example['background']} background"), description
    assert {example["family"] for example in synthetic_examples(1)} == set(FAMILY_NAMES)


def test_progression_description_follows_the_drawing():
    for example in synthetic_examples(12, "heldout", seed=2, families=["progression"]):
        radii, vertical = example["metadata"]["radii"], example["metadata"]["vertical"]
        description = literal_description(example)
        assert description.startswith(f"{number_word(len(radii))} ")
        assert f"in a {'column' if vertical else 'row'}, " in description
        assert ("growing" if radii[0] < radii[-1] else "shrinking") in description


def test_counted_families_state_their_count():
    for family in ("radial", "stacking", "mosaic"):
        for example in synthetic_examples(5, "train", seed=3, families=[family]):
            assert literal_description(example).startswith(number_word(example["metadata"]["count"]) + " ")


def test_odd_one_out_description_names_the_odd_cell():
    for example in synthetic_examples(10, "train", seed=4, families=["odd_one_out"]):
        metadata, description = example["metadata"], literal_description(example)
        assert f"grid of {example['colour']} {plural(example['shape'])} with one " in description
        assert metadata["odd_value"] in description.split(" with one ")[1]


def test_negative_descriptions_name_every_object():
    for example in negative_examples(30, "heldout", seed=0):
        description = literal_description(example)
        for item in example["metadata"]["objects"]:
            assert f"{item['colour']} {item['shape']}" in description, description
        assert example["background"] in description
        if example["kind"] == "plain_object":
            assert description.startswith("a single ")
        if example["kind"] == "scatter":
            assert "scattered" in description and " small " in description and " large " in description
        if example["kind"] == "empty_background":
            assert description.startswith("an empty ")


def test_words_and_articles():
    assert [plural("cross"), plural("star"), plural("arrow")] == ["crosses", "stars", "arrows"]
    assert with_article("outlined star") == "an outlined star" and with_article("teal star") == "a teal star"
    assert number_word(3) == "three" and number_word(20) == "20"


def test_an_unknown_example_is_named():
    with pytest.raises(ValueError, match="needs a 'family', 'relation' or 'kind' key, got keys"):
        literal_description({"image": None})
    with pytest.raises(ValueError, match="no literal description for negative kind 'spiral'"):
        literal_description({"kind": "spiral", "metadata": {"textured_background": False}, "background": "white"})


def test_relation_descriptions_count_the_shared_look_and_name_an_odd_shape():
    from training.synthetic.factors import Relation
    from training.synthetic.relations import relation_examples

    odd_shape, plain = Relation("grid", "none", "shape", "none"), Relation("row", "none", "none", "none")
    for example in relation_examples(3, "heldout", relations=[odd_shape, plain], seed=4):
        shapes = [item["shape"] for item in example["metadata"]["objects"]]
        description = literal_description(example)
        main = f"{number_word(shapes.count(example['shape']))} {example['colour']} {plural(example['shape'])}"
        assert description.replace("striped ", "").replace("outlined ", "").startswith(main), description
        assert description.endswith(f"on a {example['background']} background"), description
        others = set(shapes) - {example["shape"]}
        assert len(others) == (example["exception"] == "shape"), shapes
        assert all(f" and {with_article(odd)} on" in description for odd in others), description
