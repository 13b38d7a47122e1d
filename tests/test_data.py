import hashlib
import json

import datasets
import pytest
from helpers import pattern_dataset

from training.trainer.arguments import DataArguments
from training.trainer.data import image_caption_dataset, load_training_data, read_official_captions


@pytest.fixture
def official_files(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for index, example in enumerate(pattern_dataset(4, seed=0)):
        url = f"https://example.com/{index}.png"
        image_hash = hashlib.md5(url.encode()).hexdigest()
        if index != 2:
            example["image"].save(images / f"{image_hash}.png")
        rows.append({"image_hash": image_hash, "caption": example["caption"], "url_link": url})
    jsonl = tmp_path / "captions.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return jsonl, images, rows


def test_official_jsonl_rows_keep_order_and_mark_missing_images(official_files):
    jsonl, images, rows = official_files
    dataset = read_official_captions(jsonl, images)
    assert dataset.column_names == ["image", "caption", "image_hash"]
    assert dataset["image_hash"] == [row["image_hash"] for row in rows]
    assert dataset["caption"][0] == "stripes of {Colour} running from left to right"
    assert dataset["image"][2] == ""
    assert dataset["image"][0] == str(images / f"{rows[0]['image_hash']}.png")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"captions\.jsonl:2: malformed JSON"),
        (json.dumps({"image_hash": "0" * 32}), r"captions\.jsonl:2: field 'caption' is missing"),
        (json.dumps({"image_hash": "0" * 32, "caption": 3}), r"captions\.jsonl:2: field 'caption' is missing or not"),
        (json.dumps({"image_hash": "0" * 32, "caption": '"  "'}), r"captions\.jsonl:2: field 'caption' is empty"),
        (
            json.dumps({"image_hash": "../../etc/passwd", "caption": "a"}),
            r"jsonl:2: field 'image_hash': '\.\./\.\./etc",
        ),
        (
            json.dumps({"image_hash": "A" * 32, "caption": "a"}),
            r"jsonl:2: field 'image_hash': 'A+' is not an image hash",
        ),
        ("[1, 2]", r"captions\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_field(official_files, line, message):
    jsonl, images, rows = official_files
    jsonl.write_text(json.dumps(rows[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_official_captions(jsonl, images)


def test_a_byte_order_mark_before_the_first_row_is_skipped(official_files):
    jsonl, images, rows = official_files
    jsonl.write_text("\ufeff" + "".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert read_official_captions(jsonl, images)["image_hash"] == [row["image_hash"] for row in rows]


def test_captions_are_normalised_and_leftover_quotes_are_logged(official_files, caplog):
    jsonl, images, rows = official_files
    captions = ['"{Subjects} around {Context}.".', '"{A}" beside "{B}"']
    jsonl.write_text(
        "".join(json.dumps({**row, "caption": text}) + "\n" for row, text in zip(rows[:2], captions, strict=True))
    )
    with caplog.at_level("WARNING"):
        dataset = read_official_captions(jsonl, images)
    assert dataset["caption"] == ["{Subjects} around {Context}.", '"{A}" beside "{B}"']
    assert "1 captions of" in caplog.text
    assert "still begin or end with a quote after normalisation (lines 2)" in caplog.text


def test_missing_image_folder_is_named(official_files, tmp_path):
    jsonl, _, _ = official_files
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_official_captions(jsonl, tmp_path / "nowhere")


def test_datasets_columns_are_renamed_and_not_decoded():
    renamed = pattern_dataset(4).rename_columns({"image": "picture", "caption": "text"})
    dataset = image_caption_dataset(renamed, image_column="picture", caption_column="text")
    assert dataset.column_names == ["image", "caption"]
    assert dataset.features["image"] == datasets.Image(decode=False)
    assert set(dataset[0]["image"]) == {"bytes", "path"}
    with pytest.raises(ValueError, match="no column 'photo'"):
        image_caption_dataset(renamed, image_column="photo", caption_column="text")


def test_training_data_from_jsonl_with_a_held_out_fraction(official_files):
    jsonl, images, _ = official_files
    arguments = DataArguments(captions_jsonl=str(jsonl), image_dir=str(images), eval_fraction=0.25)
    train, held_out = load_training_data(arguments, seed=0)
    assert (len(train), len(held_out)) == (3, 1)
    everything = list(train["image_hash"]) + list(held_out["image_hash"])
    assert sorted(everything) == sorted(read_official_captions(jsonl, images)["image_hash"])


def test_training_data_from_a_saved_dataset(tmp_path):
    pattern_dataset(12).train_test_split(test_size=4, seed=0).save_to_disk(str(tmp_path / "saved"))
    arguments = DataArguments(dataset_name=str(tmp_path / "saved"), eval_split="test", max_train_samples=5)
    train, held_out = load_training_data(arguments, seed=0)
    assert (len(train), len(held_out)) == (5, 4)
    with pytest.raises(ValueError, match="no split 'validation'"):
        load_training_data(DataArguments(dataset_name=str(tmp_path / "saved"), eval_split="validation"), seed=0)


def test_the_relation_world_trains_on_seen_relations_and_evaluates_every_relation_on_held_out_looks():
    from training.synthetic.attributes import HELD_OUT_COLOURS, HELD_OUT_SHAPES
    from training.synthetic.relations import relation_split

    arguments = DataArguments(
        synthetic_num_per_family=1,
        synthetic_eval_num_per_family=1,
        synthetic_world="relations",
        synthetic_image_size=48,
    )
    train, held_out = load_training_data(arguments, seed=0)
    seen = {relation.caption for relation in relation_split("train")}
    unseen = {relation.caption for relation in relation_split("heldout")}
    assert (len(train), len(held_out)) == (305, 407)
    assert set(train["caption"]) == seen and seen.isdisjoint(unseen)
    assert set(held_out["caption"]) == seen | unseen
    # the training looks only in training; the held-out ones in every held-out image
    assert not set(train["shape"]) & set(HELD_OUT_SHAPES) and not set(train["colour"]) & set(HELD_OUT_COLOURS)
    assert all(shape in HELD_OUT_SHAPES or colour in HELD_OUT_COLOURS for shape, colour in zip(
        held_out["shape"], held_out["colour"], strict=True
    ))  # fmt: skip


def test_data_arguments_are_checked():
    with pytest.raises(ValueError, match="synthetic_world must be 'families' or 'relations', got 'world'"):
        DataArguments(synthetic_num_per_family=1, synthetic_world="world")
    with pytest.raises(ValueError, match="needs image_dir"):
        DataArguments(captions_jsonl="a.jsonl")
    with pytest.raises(ValueError, match="set one data source"):
        DataArguments(dataset_name="x", captions_jsonl="a.jsonl", image_dir="d")
