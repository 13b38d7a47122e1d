import json

import pytest

from training.hub_data import (
    RejectionLog,
    build_anonymous_captions,
    build_filter_labels,
    build_random_pool,
    build_seed_groups,
)
from training.hub_data.validation import caption_placeholders, md5_of


def url(index):
    return f"https://images.example.org/{index}.jpg"


@pytest.fixture
def seed_group_file(tmp_path):
    groups = [
        {"anonymous_caption": '"arrange {Object}s from smallest to largest"', "image_urls": [url(1), url(2), url(3)]},
        {"anonymous_caption": '"a {Subject} changing over {Time"', "image_urls": [url(4), url(5)]},
        {"anonymous_caption": '"one lonely {Object}"', "image_urls": [url(6)]},
        {"anonymous_caption": '"a {Object} inside a larger {Object}"', "image_urls": [url(7), url(8), url(7)]},
        {"image_urls": [url(9), url(10)]},
    ]
    text = "[\n" + ",\n".join(json.dumps(group) for group in groups) + "\n]\n"
    path = tmp_path / "seed_group.json"
    path.write_text(text)
    return path


def test_seed_groups_and_their_images(seed_group_file):
    log = RejectionLog()
    built = build_seed_groups(seed_group_file, log)
    groups, images = built["seed_groups"]["train"], built["seed_group_images"]["train"]
    assert groups["group_id"] == [0, 3]
    assert groups["anonymous_caption"] == [
        "arrange {Object}s from smallest to largest",
        "a {Object} inside a larger {Object}",
    ]
    assert groups["placeholders"] == [["Object"], ["Object"]]
    assert groups["image_urls"] == [[url(1), url(2), url(3)], [url(7), url(8)]]
    assert images["group_id"] == [0, 0, 0, 3, 3]
    assert images["image_hash"] == [md5_of(url(index)) for index in (1, 2, 3, 7, 8)]
    assert [(r.line, r.field) for r in log.rejections] == [
        (3, "anonymous_caption"),
        (4, "image_urls"),
        (5, "image_urls"),
        (6, "anonymous_caption"),
    ]
    assert "braces do not pair up" in log.rejections[0].reason
    assert "at least 2 images" in log.rejections[1].reason
    assert "listed twice" in log.rejections[2].reason


def test_malformed_seed_group_file_names_line_and_column(tmp_path):
    path = tmp_path / "seed_group.json"
    path.write_text('[\n {"anonymous_caption": "a", "image_urls": []},\n {"anonymous_caption": oops}\n]')
    with pytest.raises(ValueError, match=r"seed_group\.json:3:24: malformed JSON"):
        build_seed_groups(path, RejectionLog())
    path.write_text('{"anonymous_caption": "a"}')
    with pytest.raises(ValueError, match="expected a JSON list"):
        build_seed_groups(path, RejectionLog())


def test_strict_mode_stops_at_the_first_rejection(seed_group_file):
    with pytest.raises(ValueError, match=r"seed_group\.json:3: anonymous_caption: braces do not pair up"):
        build_seed_groups(seed_group_file, RejectionLog(strict=True))


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_anonymous_captions_with_splits_and_rejections(tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"image_hash": md5_of(url(1)), "caption": '"stack {Object}s into a tower"', "url_link": url(1)},
            {"image_hash": md5_of(url(2)), "caption": '"{Object}s around a {Centre}"', "url_link": url(2)},
            "{broken",
            {"image_hash": md5_of(url(3)), "caption": '""', "url_link": url(3)},
            {"image_hash": md5_of(url(4)), "url_link": url(4)},
        ],
    )
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"image_hash": md5_of(url(2)), "caption": '"a repeat"', "url_link": url(2)},
            {"image_hash": md5_of(url(5)), "caption": '"mirror a {Object}"', "url_link": url(5)},
            {"image_hash": md5_of(url(6)), "caption": "x", "url_link": 7},
        ],
    )
    log = RejectionLog()
    built = build_anonymous_captions({"train": train, "test": test}, log)
    assert built["train"]["caption"] == ["stack {Object}s into a tower", "{Object}s around a {Centre}"]
    assert built["train"]["placeholders"] == [["Object"], ["Object", "Centre"]]
    assert built["test"]["url"] == [url(5)]
    reported = [(r.file.rsplit("/", 1)[-1], r.line, r.field) for r in log.rejections]
    assert reported == [
        ("train.jsonl", 3, "<line>"),
        ("train.jsonl", 4, "caption"),
        ("train.jsonl", 5, "caption"),
        ("test.jsonl", 1, "image_hash"),
        ("test.jsonl", 3, "url_link"),
    ]
    assert "duplicate of" in log.rejections[3].reason and "train.jsonl:2" in log.rejections[3].reason


def test_random_pool_checks_the_promised_hash(tmp_path):
    source = write_jsonl(
        tmp_path / "pool.jsonl",
        [
            {"image_hash": md5_of(url(1)), "url_link": url(1)},
            {"image_hash": "0" * 32, "url_link": url(2)},
            {"image_hash": md5_of(url(1)), "url_link": url(1)},
        ],
    )
    log = RejectionLog()
    pool = build_random_pool(source, log)["train"]
    assert pool["url"] == [url(1)]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "image_hash"), (3, "image_hash")]
    assert "is not md5(url_link)" in log.rejections[0].reason and "duplicate of line 1" in log.rejections[1].reason


def test_filter_labels_from_csv_and_jsonl(tmp_path):
    csv_source = tmp_path / "labels.csv"
    csv_source.write_text(
        "url,label,annotator,image_hash\n"
        f"{url(1)},relational,ann-1,\n"
        f"{url(2)},0,,\n"
        f"{url(3)},maybe,ann-2,\n"
        f"{url(4)},1,ann-1,{'f' * 32}\n"
    )
    log = RejectionLog()
    labels = build_filter_labels(csv_source, log)["train"]
    assert labels["label"] == [1, 0]
    assert labels.features["label"].names == ["not_relational", "relational"]
    assert labels["annotator"] == ["ann-1", None]
    assert labels["image_hash"] == [md5_of(url(1)), md5_of(url(2))]
    assert [(r.line, r.field) for r in log.rejections] == [(4, "label"), (5, "image_hash")]
    jsonl_source = write_jsonl(tmp_path / "labels.jsonl", [{"url": url(1), "label": True}, {"label": "relational"}])
    log = RejectionLog()
    assert build_filter_labels(jsonl_source, log)["train"]["label"] == [1]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "url")]


def test_rejections_are_written_with_their_reasons(seed_group_file, tmp_path):
    log = RejectionLog()
    build_seed_groups(seed_group_file, log)
    path = log.write(tmp_path / "rejected.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 4 and set(rows[0]) == {"file", "line", "field", "reason"}
    assert RejectionLog().write(tmp_path / "nothing.jsonl") is None


@pytest.mark.parametrize(
    ("caption", "placeholders"),
    [("{Object}s and {Shape}s and {Object}s", ["Object", "Shape"]), ("no placeholder", [])],
)
def test_placeholders(caption, placeholders):
    assert caption_placeholders(caption) == placeholders


@pytest.mark.parametrize("caption", ["a {Object", "a Object}", "a {{Object}}", "an {} thing"])
def test_bad_placeholders_are_refused(caption):
    with pytest.raises(ValueError):
        caption_placeholders(caption)
