import hashlib
import json

import datasets
import pytest
from helpers import pattern_dataset

from training.trainer.arguments import DataArguments
from training.trainer.data import image_caption_dataset, load_training_data, normalize_caption, read_official_captions


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"arrange {Object}s from smallest to largest"', "arrange {Object}s from smallest to largest"),
        ("  'a {Subject} over time'\n", "a {Subject} over time"),
        ("\u201ca nested {Object}\u201d", "a nested {Object}"),
        ('no quotes "inside" kept', 'no quotes "inside" kept'),
        ('"', '"'),
    ],
)
def test_captions_lose_their_wrapping_quotes(raw, clean):
    assert normalize_caption(raw) == clean


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
        ('{"image_hash": "abc"}', r"captions\.jsonl:2: field 'caption' is missing"),
        ('{"image_hash": "abc", "caption": 3}', r"captions\.jsonl:2: field 'caption' is missing or not a string"),
        ('{"image_hash": "abc", "caption": "\\"  \\""}', r"captions\.jsonl:2: field 'caption' is empty"),
        ("[1, 2]", r"captions\.jsonl:2: expected a JSON object"),
    ],
)
def test_bad_rows_name_file_line_and_field(official_files, line, message):
    jsonl, images, rows = official_files
    jsonl.write_text(json.dumps(rows[0]) + "\n" + line + "\n")
    with pytest.raises(ValueError, match=message):
        read_official_captions(jsonl, images)


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


def test_data_arguments_are_checked():
    with pytest.raises(ValueError, match="needs image_dir"):
        DataArguments(captions_jsonl="a.jsonl")
    with pytest.raises(ValueError, match="set one data source"):
        DataArguments(dataset_name="x", captions_jsonl="a.jsonl", image_dir="d")
