import dataclasses
import hashlib
import json

import PIL.Image
import pytest

from training.pipeline.leak_check import RELATIONAL_VOCABULARY, check_caption, check_captions, content_words
from training.pipeline.leak_check_files import (
    REPORT_MARKDOWN,
    REPORT_ROWS,
    REPORT_SUMMARY,
    check_caption_file,
    describe_images,
    read_caption_records,
    read_literal_descriptions,
)
from training.synthetic.dataset import synthetic_examples
from training.synthetic.families import FAMILIES
from training.synthetic.literal import literal_description


def image_hash(name):
    return hashlib.md5(name.encode()).hexdigest()


def write_jsonl(path, rows):
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def test_relational_caption_with_a_literal_description_is_ok():
    check = check_caption("arrange {Object}s from smallest to largest", ["three red apples in a row"])
    assert check.ok and check.problems == () and check.leaked_words == ()
    assert check.placeholders == ("Object",) and check.described


def test_a_colour_shared_with_the_description_leaks():
    check = check_caption("arrange red {Object}s from smallest to largest", ["three red apples in a row"])
    assert not check.ok
    assert check.leaked_words == ("red",) and check.problems == ("leaks 'red'",)
    assert check.format_problems == ()


def test_a_literal_caption_has_no_placeholder_and_leaks_its_object():
    check = check_caption("a banana ripening over time", ["a yellow banana turning brown on a table"])
    assert check.problems == ("no placeholder", "leaks 'banana'")
    assert check.placeholders == ()


@pytest.mark.parametrize(
    ("caption", "problems", "placeholders"),
    [
        ("{Object in a row", ("no placeholder", "unbalanced braces"), ()),
        ("{Object}} in a row", ("unbalanced braces",), ("Object",)),
        ("{Object}s and a {Fruit", ("unbalanced braces",), ("Object",)),
        ("{{Object}} in a row", ("nested braces",), ("Object",)),
        ("{} in a row", ("no placeholder", "empty placeholder"), ()),
        ("{Object}s beside { }", ("empty placeholder",), ("Object",)),
        ("   ", ("empty caption",), ()),
        ("{Object}s growing from {Stage} to {Stage}", (), ("Object", "Stage")),
    ],
)
def test_format_problems(caption, problems, placeholders):
    check = check_caption(caption)
    assert check.problems == problems and check.format_problems == problems
    assert check.placeholders == placeholders
    assert not check.described


@pytest.mark.parametrize(
    ("caption_word", "described_word"),
    [("apples", "apple"), ("apple", "apples"), ("boxes", "box"), ("berries", "berry"), ("glass", "glasses")],
)
def test_singular_and_plural_are_the_same_word(caption_word, described_word):
    check = check_caption(f"{{Object}}s beside the {caption_word}", [f"two cups and a {described_word}"])
    assert check.leaked_words == (caption_word,)


def test_unrelated_words_and_short_words_do_not_match():
    assert check_caption("{Object}s beside a bus", ["a red bu on a road", "apples in a bowl"]).ok
    assert check_caption("{Object}s beside the glass", ["a glas of water"]).ok


def test_relational_vocabulary_is_never_a_leak():
    words = sorted(RELATIONAL_VOCABULARY)
    caption = "{Object}s " + " ".join(words)
    check = check_caption(caption, [" ".join(words), "red apples " + " ".join(words)])
    assert check.ok and content_words(caption) == []
    assert content_words("arrange rows larger growing stages time same different inside") == []


def test_stop_words_and_picture_words_are_never_leaks():
    caption = "a photo of {Object}s shown on the background, with them in it"
    assert check_caption(caption, ["a photo of apples shown on a white background, with a knife in it"]).ok


def test_extra_relational_words_are_not_leaks():
    caption = "a {Fruit} ripening day by day"
    assert check_caption(caption, ["a banana ripening on a table day by day"]).leaked_words == ("ripening", "day")
    assert check_caption(caption, ["a banana ripening on a table day by day"], ["ripening", "days"]).ok


def test_synthetic_family_captions_never_leak_against_their_literal_descriptions():
    for split in ("train", "heldout"):
        for example in synthetic_examples(3, split, seed=5):
            description = literal_description(example)
            assert check_caption(FAMILIES[example["family"]].caption, [description]).ok, description
            named = f"the same {example['colour']} {{Object}} repeated"
            assert check_caption(named, [description]).leaked_words == (example["colour"],)


def test_check_is_plain_data_with_ok_as_a_field():
    check = check_caption("arrange red {Object}s", ["red apples"])
    assert dataclasses.asdict(check)["ok"] is False
    assert check.to_dict() == {
        "caption": "arrange red {Object}s",
        "placeholders": ["Object"],
        "problems": ["leaks 'red'"],
        "leaked_words": ["red"],
        "described": True,
        "ok": False,
    }


def test_check_captions_rates():
    report = check_captions(
        [
            {"image_hash": "a", "caption": "{Object}s in a row", "literal_descriptions": ["apples in a row"]},
            {"image_hash": "b", "caption": "red {Object}s in a row", "literal_descriptions": "red apples"},
            {"image_hash": "c", "caption": "apples in a row", "literal_descriptions": ["three apples"]},
            {"caption": "{Object in a row"},
            {"caption": "{Object}s stacked"},
        ]
    )
    assert report.num_captions == 5 and report.num_described == 3
    assert report.leak_rate == pytest.approx(2 / 3)  # b and c, of the three described captions
    assert report.format_problem_rate == pytest.approx(2 / 5)  # c (no placeholder) and the unbalanced one
    assert report.ok_rate == pytest.approx(2 / 5)
    assert report.problem_counts() == {"leak": 2, "no placeholder": 2, "unbalanced braces": 1}
    assert report.leaked_word_counts() == {"red": 1, "apples": 1}
    assert report.image_hashes == ("a", "b", "c", None, None)
    with pytest.raises(ValueError, match=r"record 1 \(x\): 'caption' must be a string"):
        check_captions([{"caption": "{A}"}, {"image_hash": "x", "caption": None}])


def test_caption_file_report_and_rates(tmp_path):
    hashes = [image_hash(name) for name in "abcd"]
    captions = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image_hash": hashes[0], "caption": '"arrange {Object}s from smallest to largest"', "url_link": "u"},
            {"image_hash": hashes[1], "caption": '"arrange red {Object}s in a row".', "url_link": "u"},
            {"image_hash": hashes[2], "caption": "a banana ripening over time", "url_link": "u"},
            {"image_hash": hashes[3], "caption": "{Object in a row", "url_link": "u"},
        ],
    )
    descriptions = write_jsonl(
        tmp_path / "descriptions.jsonl",
        [
            {"image_hash": hashes[0], "description": "three red apples in a row"},
            {"image_hash": hashes[1], "descriptions": ["red apples"]},
            {"image_hash": hashes[1], "description": "a row of apples"},
            {"image_hash": hashes[2], "descriptions": ["a yellow banana", "a brown banana"]},
        ],
    )
    assert read_literal_descriptions(descriptions)[hashes[1]] == ["red apples", "a row of apples"]
    report = check_caption_file(captions, tmp_path / "report", descriptions_jsonl=descriptions)
    assert report.checks[0].caption == "arrange {Object}s from smallest to largest"  # literal quotes removed
    assert report.checks[1].caption == "arrange red {Object}s in a row."
    assert report.leak_rate == pytest.approx(2 / 3) and report.format_problem_rate == pytest.approx(2 / 4)
    rows = [json.loads(line) for line in (tmp_path / "report" / REPORT_ROWS).read_text().splitlines()]
    assert [row["image_hash"] for row in rows] == hashes
    assert [row["ok"] for row in rows] == [True, False, False, False]
    assert rows[2]["problems"] == ["no placeholder", "leaks 'banana'"]
    summary = json.loads((tmp_path / "report" / REPORT_SUMMARY).read_text())["summary"]
    assert summary["leaking"] == 2 and summary["described"] == 3 and summary["captions"] == 4
    markdown = (tmp_path / "report" / REPORT_MARKDOWN).read_text()
    assert "| 4 | 3 | 1 | 0.667 | 0.500 |" in markdown
    assert "leaks 'banana'" in markdown and "red (1)" in markdown


def test_malformed_lines_are_named_by_file_and_line(tmp_path):
    good = {"image_hash": image_hash("a"), "caption": "{Object}s", "url_link": "u"}
    bad_json = write_jsonl(tmp_path / "bad.jsonl", [good, "", '{"image_hash": "x", "caption": '])
    with pytest.raises(ValueError, match=rf"{bad_json}:3: malformed JSON"):
        read_caption_records(bad_json)
    no_caption = write_jsonl(tmp_path / "missing.jsonl", [good, {"image_hash": image_hash("b")}])
    with pytest.raises(ValueError, match=rf"{no_caption}:2: field 'caption' is missing"):
        check_caption_file(no_caption, tmp_path / "out")
    bad_hash = write_jsonl(tmp_path / "hash.jsonl", [{"image_hash": "abc", "caption": "{A}"}])
    with pytest.raises(ValueError, match=rf"{bad_hash}:1: field 'image_hash'"):
        read_caption_records(bad_hash)
    descriptions = write_jsonl(tmp_path / "descriptions.jsonl", [{"image_hash": image_hash("a"), "description": 3}])
    with pytest.raises(ValueError, match=rf"{descriptions}:1: needs 'description'"):
        check_caption_file(write_jsonl(tmp_path / "ok.jsonl", [good]), tmp_path / "out", descriptions)
    assert not (tmp_path / "out").exists()  # nothing half-written
    with pytest.raises(ValueError, match="holds no captions"):
        check_caption_file(write_jsonl(tmp_path / "empty.jsonl", [""]), tmp_path / "out")


def test_literal_captioner_descriptions_feed_the_check(tmp_path, backbone_dir):
    from training.evaluation.captioner import Captioner
    from training.vlm.chat import QwenVLChat

    chat = QwenVLChat.from_pretrained(str(backbone_dir), max_pixels=56 * 56)
    captioner = Captioner(chat, tmp_path / "literal_captions.jsonl")
    examples = list(synthetic_examples(1, "train", seed=0, families=["radial", "stacking"]))
    hashes = [image_hash(f"image-{index}") for index in range(3)]
    (tmp_path / "images").mkdir()
    for example, name in zip(examples, hashes, strict=False):
        example["image"].save(tmp_path / "images" / f"{name}.png")  # the third image is missing on purpose
    literal = captioner([example["image"] for example in examples], hashes[:2])
    leaked_word = content_words(literal[0])[0]  # a word the tiny random model really wrote for image 0
    captions = write_jsonl(
        tmp_path / "captions.jsonl",
        [
            {"image_hash": hashes[0], "caption": f"{{Object}}s in a row, {leaked_word} growing", "url_link": "u"},
            {"image_hash": hashes[1], "caption": "{Object}s stacked into a tower", "url_link": "u"},
            {"image_hash": hashes[2], "caption": "{Object}s in a ring", "url_link": "u"},
        ],
    )
    calls = []
    report = check_caption_file(
        captions,
        tmp_path / "report",
        image_dir=tmp_path / "images",
        captioner=lambda images, names: calls.append(list(names)) or captioner(images, names),
        batch_size=1,
    )
    assert calls == [[hashes[0]], [hashes[1]]]  # batches of one; the missing image is never captioned
    assert report.checks[0].leaked_words == (leaked_word,)
    assert report.checks[1] == check_caption("{Object}s stacked into a tower", [literal[1]])
    assert [check.described for check in report.checks] == [True, True, False]
    assert report.leak_rate == pytest.approx(1 / 2) and report.format_problem_rate == 0.0
    assert len(report.errors) == 1 and report.errors[0][0] == hashes[2] and "no such image" in report.errors[0][1]
    with pytest.raises(ValueError, match="needs image_dir"):
        check_caption_file(captions, tmp_path / "again", captioner=captioner)


def test_describing_images_decodes_them_upright_and_names_unreadable_files(tmp_path):
    upright = PIL.Image.new("RGB", (40, 20), "red")
    exif = upright.getexif()
    exif[0x0112] = 6  # EXIF orientation: the camera was turned, show the pixels rotated 90 degrees
    upright.save(tmp_path / f"{'a' * 32}.jpg", exif=exif)
    (tmp_path / f"{'b' * 32}.png").write_bytes(b"not a png at all")
    sizes = []

    def captioner(images, hashes):
        sizes.extend(image.size for image in images)
        return ["a caption" for _ in images]

    descriptions, errors = describe_images(captioner, ["a" * 32, "b" * 32, "c" * 32], tmp_path)

    assert sizes == [(20, 40)]  # upright, as every relsim path decodes images
    assert descriptions == {"a" * 32: ["a caption"]}
    assert [image_hash for image_hash, _ in errors] == ["b" * 32, "c" * 32]
    assert errors[0][1].startswith(f"{tmp_path / ('b' * 32)}.png: ")
    assert errors[1][1] == f"{tmp_path / ('c' * 32)}.*: no such image"
