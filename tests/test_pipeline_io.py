"""Pipeline inputs (folder, list, dataset) and the hand-off that the trainer and the Hub dataset builder both read."""

import json
import os

import datasets
import PIL.Image
import pytest

from tests.pipeline_helpers import run_locally, write_images
from training.image_ids import file_image_hash, url_image_hash
from training.pipeline.handoff import HandoffStage, handoff_image_path
from training.pipeline.inputs import iter_input_rows, iter_list_rows
from training.pipeline.run.summary import read_stage_rows
from training.pipeline.stages import Stage


class CaptionByWidthStage(Stage):
    """Writes a fixed anonymous caption, and a check verdict that fails one row."""

    name = "caption"

    def process(self, rows):
        return [
            {**row, "caption": "{Object}s in a row", "check": {"ok": index != 1, "problems": ["no placeholder"]}}
            for index, row in enumerate(rows)
        ]


def test_folder_input_ids_are_md5_of_file_bytes_and_broken_files_are_error_rows(tmp_path):
    paths = write_images(tmp_path / "images", [(20, 20), (30, 20)])
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")

    rows = list(iter_input_rows(tmp_path / "images", tmp_path / "materialised"))

    assert [row["image_hash"] for row in rows[:2]] == [file_image_hash(path) for path in paths]
    assert rows[2]["image_hash"] == file_image_hash(tmp_path / "images" / "broken.jpg")
    assert rows[2]["error"].startswith(str(tmp_path / "images" / "broken.jpg") + ": ")


def test_list_input_takes_paths_urls_and_given_hashes_and_names_bad_lines(tmp_path):
    (path,) = write_images(tmp_path / "images", [(20, 20)])
    given = "0123456789abcdef0123456789abcdef"
    listing = tmp_path / "list.jsonl"
    listing.write_text(
        json.dumps({"image": "images/image_00.png"}) + "\n"
        + json.dumps({"url": "https://example.com/a.jpg", "image": str(path)}) + "\n\n"
        + json.dumps({"path": "missing.png", "image_hash": given}) + "\n"
    )  # fmt: skip

    rows = list(iter_list_rows(listing))

    assert rows[0] == {"image": str(tmp_path / "images" / "image_00.png"), "image_hash": file_image_hash(path)}
    assert rows[1]["image_hash"] == url_image_hash("https://example.com/a.jpg")
    assert rows[2] == {"image": str(tmp_path / "missing.png"), "image_hash": given}
    listing.write_text(json.dumps({"image": "a.png"}) + "\n" + json.dumps({"image_hash": "x", "url": "u"}) + "\n")
    with pytest.raises(ValueError, match=r"list.jsonl:2: image_hash: 'x' is not an image hash"):
        list(iter_list_rows(listing))
    csv_listing = tmp_path / "list.csv"
    csv_listing.write_text("url,image\nhttps://example.com/b.jpg,images/image_00.png\n,\n")
    with pytest.raises(ValueError, match=r"list.csv:3: a row needs `image` \(or `path`\) or `url`"):
        list(iter_list_rows(csv_listing))


def test_dataset_input_writes_in_memory_images_once_and_uses_the_url_id(tmp_path):
    image = PIL.Image.new("RGB", (24, 16), (200, 10, 10))
    dataset = datasets.Dataset.from_dict(
        {"picture": [image, image.rotate(90, expand=True)], "url": ["https://example.com/1.png", ""]},
        features=datasets.Features({"picture": datasets.Image(), "url": datasets.Value("string")}),
    )
    dataset.save_to_disk(tmp_path / "saved")

    rows = list(iter_input_rows(tmp_path / "saved", tmp_path / "materialised", image_column="picture"))

    assert rows[0]["image_hash"] == url_image_hash("https://example.com/1.png")
    assert rows[1]["image_hash"] == file_image_hash(rows[1]["image"])  # no URL: md5 of the image bytes
    assert all(os.path.dirname(row["image"]) == str(tmp_path / "materialised") for row in rows)
    assert PIL.Image.open(rows[1]["image"]).size == (16, 24)
    with pytest.raises(ValueError, match="has no column 'image'"):
        list(iter_input_rows(tmp_path / "saved", tmp_path / "materialised"))


def _handoff(tmp_path, rows):
    handoff = tmp_path / "out" / "handoff"
    run_locally(rows, [CaptionByWidthStage(), HandoffStage(handoff)], tmp_path / "out")
    return handoff


def test_handoff_is_read_by_the_trainer_and_by_the_hub_dataset_builder(tmp_path):
    from training.hub_data.captions import build_anonymous_captions
    from training.hub_data.validation import RejectionLog
    from training.trainer.data import read_official_captions

    paths = write_images(tmp_path / "images", [(20, 20), (30, 20), (20, 30)])
    urls = [f"https://example.com/{index}.png" for index in range(3)]
    rows = [
        {"image": str(path), "url": url, "image_hash": url_image_hash(url)}
        for path, url in zip(paths, urls, strict=True)
    ]

    handoff = _handoff(tmp_path, rows)

    jsonl = handoff / "captions.jsonl"
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert lines == [  # the second row failed the check and is not handed off
        {"image_hash": url_image_hash(urls[index]), "caption": "{Object}s in a row", "url_link": urls[index]}
        for index in (0, 2)
    ]
    trained_on = read_official_captions(jsonl, handoff / "images")
    assert trained_on["image"] == [str(handoff / "images" / f"{url_image_hash(urls[i])}.png") for i in (0, 2)]
    assert PIL.Image.open(trained_on["image"][0]).tobytes() == PIL.Image.open(paths[0]).tobytes()
    log = RejectionLog(strict=True)
    built = build_anonymous_captions({"train": jsonl}, log)
    assert built["train"]["image_hash"] == [line["image_hash"] for line in lines] and log.findings == []
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stages"][1] == {
        "stage": "handoff", "rows_in": 3, "computed_now": 3, "done_before": 0, "kept": 2, "dropped": 1, "failed": {}
    }  # fmt: skip


def test_handoff_of_local_images_keeps_the_file_id_for_the_trainer(tmp_path):
    from training.trainer.data import read_official_captions

    paths = write_images(tmp_path / "images", [(20, 20)])
    rows = [{"image": str(paths[0]), "image_hash": file_image_hash(paths[0])}]

    handoff = _handoff(tmp_path, rows)

    line = json.loads((handoff / "captions.jsonl").read_text())
    assert line == {"image_hash": file_image_hash(paths[0]), "caption": "{Object}s in a row", "url_link": ""}
    assert read_official_captions(handoff / "captions.jsonl", handoff / "images")["image"] == [
        str(handoff / "images" / f"{file_image_hash(paths[0])}.png")
    ]


def test_handoff_never_writes_outside_its_folder(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    source = tmp_path / "images" / "evil name.sh"
    source.parent.mkdir()
    PIL.Image.new("RGB", (8, 8)).save(source, format="PNG")
    image_hash = file_image_hash(source)
    images_dir = tmp_path / "out" / "handoff" / "images"
    images_dir.mkdir(parents=True)
    (images_dir / f"{image_hash}.png").symlink_to(outside)  # a planted link where the image goes

    _handoff(tmp_path, [{"image": str(source), "image_hash": image_hash}])

    assert outside.read_bytes() == b"precious"
    written = images_dir / f"{image_hash}.png"
    assert not written.is_symlink() and PIL.Image.open(written).size == (8, 8)  # re-encoded: unknown extension
    assert sorted(path.name for path in images_dir.iterdir()) == [f"{image_hash}.png"]
    with pytest.raises(ValueError, match="is not an image hash"):
        handoff_image_path(images_dir, "../../etc/passwd0123456789abcdef", "a.png")


def test_handoff_rows_without_caption_are_counted_not_handed_off(tmp_path):
    (path,) = write_images(tmp_path / "images", [(20, 20)])
    handoff = tmp_path / "out" / "handoff"
    rows = [{"image": str(path), "image_hash": file_image_hash(path)}]

    summary = run_locally(rows, [HandoffStage(handoff)], tmp_path / "out")

    (row,) = read_stage_rows(tmp_path / "out", "handoff")
    assert (row["handed_off"], row["handoff_reason"]) == (False, "no caption")
    assert summary.stage("handoff").dropped == 1 and (handoff / "captions.jsonl").read_text() == ""


def test_handoff_refuses_an_images_folder_that_links_outside(tmp_path):
    (path,) = write_images(tmp_path / "images", [(20, 20)])
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "handoff").mkdir(parents=True)
    (tmp_path / "out" / "handoff" / "images").symlink_to(tmp_path / "elsewhere")

    with pytest.raises(ValueError, match="links outside the hand-off folder"):
        _handoff(tmp_path, [{"image": str(path), "image_hash": file_image_hash(path)}])
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_check_stage_flags_a_caption_that_names_what_its_image_shows():
    from training.pipeline.model_stages import CheckStage

    rows = [
        {"image_hash": "0" * 32, "caption": "{Object}s stacked into a tower", "literal_descriptions": ["red stars"]},
        {"image_hash": "1" * 32, "caption": "red stars stacked into a tower", "literal_descriptions": ["red stars"]},
    ]

    first, second = CheckStage().process(rows)

    assert first["check"]["ok"] is True and first["check"]["placeholders"] == ["Object"]
    assert second["check"]["ok"] is False
    assert "no placeholder" in second["check"]["problems"] and "red" in second["check"]["leaked_words"]
