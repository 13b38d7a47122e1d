"""The one JSON-lines reader and writer: every bad line is named `file:line: reason`, blank lines and a leading
byte-order mark are skipped, writes are atomic and appends add lines."""

import pytest

from training.json_lines import append_json_lines, json_lines, read_json_lines, write_json_lines


def test_rows_round_trip_with_line_numbers_skipping_blank_lines_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n{"caption": "caf\xc3\xa9"}\n')
    assert list(read_json_lines(path)) == [(1, {"a": 1}), (3, {"caption": "café"})]


@pytest.mark.parametrize(
    "line, reason",
    [
        (b"{not json", "malformed JSON (Expecting property name enclosed in double quotes at column 2)"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (b'{"a": "\xff"}', "not UTF-8 text (byte 8: invalid start byte)"),
    ],
)
def test_a_bad_line_is_named_by_file_and_line(tmp_path, line, reason):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\n' + line + b'\n{"b": 2}\n')
    assert list(json_lines(path)) == [(1, {"a": 1}), (2, reason), (3, {"b": 2})]
    with pytest.raises(ValueError, match=rf"rows\.jsonl:2: {reason[:14]}"):
        list(read_json_lines(path))


def test_bytes_already_read_are_parsed_under_the_files_name(tmp_path):
    with pytest.raises(ValueError, match=r"manifest\.jsonl:2: expected a JSON object, got int"):
        list(read_json_lines(tmp_path / "manifest.jsonl", b'{"id": 0}\n7\n'))


def test_write_replaces_the_file_and_append_adds_lines(tmp_path):
    path = tmp_path / "out" / "rows.jsonl"
    write_json_lines(path, [{"a": 1}, {"a": 2}])
    write_json_lines(path, ({"caption": text} for text in ["é"]))
    append_json_lines(path, [{"b": 3}])
    assert path.read_text(encoding="utf-8") == '{"caption": "é"}\n{"b": 3}\n'
    assert [name.name for name in path.parent.iterdir()] == ["rows.jsonl"]
