import json
import re

import pytest

from training.hub_data.__main__ import main
from training.hub_data.captions import build_anonymous_captions, build_random_pool
from training.hub_data.filter_labels import build_filter_labels
from training.hub_data.seed_groups import build_seed_groups
from training.hub_data.store import load_built
from training.hub_data.validation import RejectionLog
from training.image_ids import url_image_hash


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
    assert images["image_hash"] == [url_image_hash(url(index)) for index in (1, 2, 3, 7, 8)]
    assert [(r.line, r.field) for r in log.rejections] == [
        (3, "anonymous_caption"),
        (4, "image_urls"),
        (6, "anonymous_caption"),
    ]
    assert "braces do not pair up" in log.rejections[0].reason
    assert "at least 2 distinct images" in log.rejections[1].reason
    # the group with a URL listed twice is built (once per URL) and the repeat is a warning, not a rejection
    assert [(r.line, r.field, r.kept) for r in log.warnings] == [(5, "image_urls", True)]
    assert "listed 2 times in group 3; kept once" in log.warnings[0].reason


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
            {"image_hash": url_image_hash(url(1)), "caption": '"stack {Object}s into a tower"', "url_link": url(1)},
            {"image_hash": url_image_hash(url(2)), "caption": '"{Object}s around a {Centre}"', "url_link": url(2)},
            "{broken",
            {"image_hash": url_image_hash(url(3)), "caption": '""', "url_link": url(3)},
            {"image_hash": url_image_hash(url(4)), "url_link": url(4)},
        ],
    )
    test = write_jsonl(
        tmp_path / "test.jsonl",
        [
            {"image_hash": url_image_hash(url(2)), "caption": '"a repeat"', "url_link": url(2)},
            {"image_hash": url_image_hash(url(5)), "caption": '"mirror a {Object}"', "url_link": url(5)},
            {"image_hash": url_image_hash(url(6)), "caption": "x", "url_link": 7},
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
            {"image_hash": url_image_hash(url(1)), "url_link": url(1)},
            {"image_hash": "0" * 32, "url_link": url(2)},
            {"image_hash": url_image_hash(url(1)), "url_link": url(1)},
        ],
    )
    log = RejectionLog()
    pool = build_random_pool(source, log)["train"]
    assert pool["url"] == [url(1)]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "image_hash"), (3, "image_hash")]
    assert "is not md5(url_link)" in log.rejections[0].reason
    assert log.rejections[1].reason == f"duplicate of {source}:1"


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
    assert labels["image_hash"] == [url_image_hash(url(1)), url_image_hash(url(2))]
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
    assert len(rows) == 4 and set(rows[0]) == {"file", "line", "field", "reason", "kept"}
    assert [row["kept"] for row in rows] == [False, False, True, False]
    assert RejectionLog().write(tmp_path / "nothing.jsonl") is None


HOSTILE_HASHES = {
    "path traversal": "../../etc/passwd",
    "path": "a/b",
    "uppercase": url_image_hash(url(1)).upper(),
    "31 characters": url_image_hash(url(1))[:31],
    "another URL's md5": url_image_hash(url(2)),
}


@pytest.mark.parametrize("image_hash", HOSTILE_HASHES.values(), ids=HOSTILE_HASHES)
def test_anonymous_captions_keep_only_hashes_that_are_md5_of_the_url(tmp_path, image_hash):
    source = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"image_hash": image_hash, "caption": '"a {Object}"', "url_link": url(1)},
            {"image_hash": url_image_hash(url(3)), "caption": '"a {Object}"', "url_link": url(3)},
        ],
    )
    log = RejectionLog()
    built = build_anonymous_captions({"train": source}, log)
    assert built["train"]["image_hash"] == [url_image_hash(url(3))]
    assert [(r.line, r.field) for r in log.rejections] == [(1, "image_hash")]


def _captions_source(path, image_hash):
    return {"train": write_jsonl(path, [{"image_hash": image_hash, "caption": '"a"', "url_link": url(1)}])}


@pytest.mark.parametrize(
    "build",
    [
        lambda path, image_hash: build_anonymous_captions(_captions_source(path, image_hash), RejectionLog(True)),
        lambda path, image_hash: build_random_pool(
            write_jsonl(path, [{"image_hash": image_hash, "url_link": url(1)}]), RejectionLog(True)
        ),
        lambda path, image_hash: build_filter_labels(
            write_jsonl(path, [{"image_hash": image_hash, "url": url(1), "label": 1}]), RejectionLog(True)
        ),
    ],
    ids=["anonymous-captions", "random-pool", "filter-labels"],
)
@pytest.mark.parametrize("image_hash", ["../../etc/passwd", "a/b"])
def test_every_builder_names_the_image_hash_rule(tmp_path, build, image_hash):
    rule = r"rows\.jsonl:1: image_hash: '.*' is not an image hash \(32 lowercase hexadecimal characters\)"
    with pytest.raises(ValueError, match=rule):
        build(tmp_path / "rows.jsonl", image_hash)


BOM = "\ufeff"


def test_seed_group_json_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "seed_group.json"
    path.write_text(BOM + json.dumps([{"anonymous_caption": '"a {Object}"', "image_urls": [url(1), url(2)]}]))
    log = RejectionLog()
    assert build_seed_groups(path, log)["seed_groups"]["train"]["image_urls"] == [[url(1), url(2)]]
    assert log.findings == []


def test_jsonl_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    path = tmp_path / "pool.jsonl"
    rows = [{"image_hash": url_image_hash(url(index)), "url_link": url(index)} for index in (1, 2)]
    path.write_text(BOM + "".join(json.dumps(row) + "\n" for row in rows))
    log = RejectionLog()
    assert build_random_pool(path, log)["train"]["url"] == [url(1), url(2)]
    assert log.findings == []


def test_csv_with_a_byte_order_mark_keeps_every_row(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(BOM + f"url,label\n{url(1)},relational\n{url(2)},0\n")
    log = RejectionLog()
    assert build_filter_labels(path, log)["train"]["label"] == [1, 0]
    assert log.findings == []


@pytest.mark.parametrize(
    ("text", "header"),
    [("link,judgement\n{url},relational\n", "link,judgement"), ("{url},relational\n", "{url},relational")],
    ids=["wrong names", "no header row"],
)
def test_a_csv_without_the_expected_header_is_refused_with_the_expected_columns(tmp_path, text, header):
    path = tmp_path / "labels.csv"
    path.write_text(text.format(url=url(1)))
    expected = (
        rf"labels\.csv:1: the header {re.escape(header.format(url=url(1)))} lacks url, label; "
        r"expected the columns url, label \(and optionally image_hash, annotator\)"
    )
    with pytest.raises(ValueError, match=expected):
        build_filter_labels(path, RejectionLog())


def test_a_csv_row_with_more_fields_than_the_header_is_rejected(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(f"url,label\nhttps://img.example.org/w_350,h_550/a.jpg,relational\n{url(2)},1\n")
    log = RejectionLog()
    assert build_filter_labels(path, log)["train"]["url"] == [url(2)]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "<line>")]
    assert "1 more fields than the header" in log.rejections[0].reason


def test_a_line_that_is_not_utf8_is_rejected_by_line(tmp_path):
    path = tmp_path / "pool.jsonl"
    good = json.dumps({"image_hash": url_image_hash(url(1)), "url_link": url(1)}).encode()
    path.write_bytes(good + b"\n" + '{"image_hash": "caf\u00e9"}'.encode("latin-1") + b"\n")
    log = RejectionLog()
    assert build_random_pool(path, log)["train"]["url"] == [url(1)]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "<line>")]
    assert "not UTF-8 text" in log.rejections[0].reason


def test_a_seed_group_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "seed_group.json"
    path.write_bytes(b'[\n{"anonymous_caption": "caf\xe9", "image_urls": []}\n]')
    with pytest.raises(ValueError, match=r"seed_group\.json:2: not UTF-8 text"):
        build_seed_groups(path, RejectionLog())


def _build(tmp_path, *arguments):
    main(["build", *map(str, arguments), "--output", str(tmp_path / "built")])


def test_a_build_that_keeps_no_row_fails_names_the_report_and_keeps_the_earlier_build(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [{"image_hash": url_image_hash(url(1)), "url_link": url(1)}])
    _build(tmp_path, "random-pool", "--input", good)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"image_hash": "../../etc/passwd", "url_link": url(2)}])
    report = tmp_path / "built" / "rejected_random_pool.jsonl"
    message = rf"bad\.jsonl: no row was kept for random_pool/train \(1 rows were rejected; .*{re.escape(str(report))}"
    with pytest.raises(ValueError, match=message):
        _build(tmp_path, "random-pool", "--input", bad)
    assert [json.loads(line)["line"] for line in report.read_text().splitlines()] == [1]
    assert load_built(tmp_path / "built")["random_pool"]["train"]["url"] == [url(1)]


def test_a_split_that_keeps_no_row_fails_the_build(tmp_path):
    train = write_jsonl(
        tmp_path / "train.jsonl", [{"image_hash": url_image_hash(url(1)), "caption": '"a"', "url_link": url(1)}]
    )
    test = write_jsonl(tmp_path / "test.jsonl", [{"image_hash": "a/b", "caption": '"b"', "url_link": url(2)}])
    with pytest.raises(ValueError, match=r"no row was kept for anonymous_captions/test"):
        _build(tmp_path, "anonymous-captions", "--train", train, "--test", test)
    assert not (tmp_path / "built" / "anonymous_captions").exists()


def test_an_empty_source_fails_the_build(tmp_path):
    (tmp_path / "labels.csv").write_text("url,label\n")
    with pytest.raises(ValueError, match=r"no row was kept for filter_labels/train \(the source holds no rows\)"):
        _build(tmp_path, "filter-labels", "--input", tmp_path / "labels.csv")


def write_groups(path, groups):
    path.write_text("[\n" + ",\n".join(json.dumps(group) for group in groups) + "\n]\n")
    return path


def test_a_url_in_two_seed_groups_is_kept_in_both_and_reported_with_both_groups(tmp_path):
    path = write_groups(
        tmp_path / "seed_group.json",
        [
            {"anonymous_caption": '"a {Object}"', "image_urls": [url(1), url(2)]},
            {"anonymous_caption": '"b {Object}"', "image_urls": [url(3), url(4)]},
            {"anonymous_caption": '"c {Object}"', "image_urls": [url(5), url(2)]},
        ],
    )
    log = RejectionLog(strict=True)
    images = build_seed_groups(path, log)["seed_group_images"]["train"]
    assert list(zip(images["group_id"], images["url"], strict=True)) == [
        (0, url(1)),
        (0, url(2)),
        (1, url(3)),
        (1, url(4)),
        (2, url(5)),
        (2, url(2)),
    ]
    assert [(r.line, r.field, r.kept) for r in log.findings] == [(4, "image_urls", True)]
    assert log.findings[0].reason == f"{url(2)} is in group 0 (line 2) and group 2; kept in both"


def test_rejected_groups_are_counted_once_each(tmp_path, caplog):
    path = write_groups(
        tmp_path / "seed_group.json",
        [
            {"anonymous_caption": '"a {Object"', "image_urls": [url(1), url(2)]},
            {"anonymous_caption": '"b"', "image_urls": [url(3), url(3)]},  # a repeat and too few images: one group
            {"anonymous_caption": 3, "image_urls": [url(4), url(5)]},
            {"anonymous_caption": '"kept"', "image_urls": [url(6), url(7)]},
        ],
    )
    with caplog.at_level("WARNING"):
        _build(tmp_path, "seed-groups", "--input", path)
    assert "3 rows were rejected" in caplog.text
    report = tmp_path / "built" / "rejected_seed_groups.jsonl"
    assert [json.loads(line)["line"] for line in report.read_text().splitlines()] == [2, 3, 4]


def test_quoting_variants_are_removed_and_a_leftover_quote_is_reported(tmp_path):
    path = write_groups(
        tmp_path / "seed_group.json",
        [
            # the official seed group 151 is written this way: a period after the closing quote
            {"anonymous_caption": '"{Subjects} around {Context}.".', "image_urls": [url(1), url(2)]},
            {"anonymous_caption": "\u201c{Object}s in a row\u201d", "image_urls": [url(3), url(4)]},
            {"anonymous_caption": '"{A}" beside "{B}"', "image_urls": [url(5), url(6)]},
        ],
    )
    log = RejectionLog()
    groups = build_seed_groups(path, log)["seed_groups"]["train"]
    assert groups["anonymous_caption"] == ["{Subjects} around {Context}.", "{Object}s in a row", '"{A}" beside "{B}"']
    assert [(r.line, r.field, r.kept) for r in log.findings] == [(4, "anonymous_caption", True)]
    assert "still begins or ends with a quote" in log.findings[0].reason


def test_anonymous_captions_of_local_images_have_an_empty_url_and_a_valid_hash(tmp_path):
    """The pipeline's hand-off of a folder without URLs: image_hash is md5 of the file, url_link is empty."""
    local = "0123456789abcdef0123456789abcdef"
    source = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"image_hash": local, "caption": '"a {Object}"', "url_link": ""},
            {"image_hash": "../../etc/passwd", "caption": '"a {Object}"', "url_link": ""},
            {"image_hash": local, "caption": '"again a {Object}"', "url_link": ""},
            {"image_hash": url_image_hash(url(3)), "caption": '"b {Object}"', "url_link": url(3)},
            {"image_hash": url_image_hash(url(4)), "caption": '"c {Object}"'},
        ],
    )
    log = RejectionLog()
    built = build_anonymous_captions({"train": source}, log)
    assert built["train"]["image_hash"] == [local, url_image_hash(url(3))]
    assert built["train"]["url"] == ["", url(3)]
    assert [(r.line, r.field) for r in log.rejections] == [(2, "image_hash"), (3, "image_hash"), (5, "url_link")]
    assert "not an image hash" in log.rejections[0].reason and "duplicate of" in log.rejections[1].reason
