"""The one image-hash rule: 32 lowercase hex characters; md5(url) for URLs, md5(file bytes) for local files."""

import hashlib

import pytest

from training.image_ids import file_image_hash, file_sha256, is_image_hash, require_image_hash, url_image_hash


@pytest.mark.parametrize("value", ["../../etc/passwd", "a/b", "A" * 32, "a" * 31, "a" * 33, "g" * 32, 123, None, ""])
def test_anything_but_32_lowercase_hex_characters_is_refused(value):
    assert not is_image_hash(value)
    with pytest.raises(ValueError, match=r"rows.jsonl:3 \(image_hash\): .* is not an image hash"):
        require_image_hash(value, "rows.jsonl:3 (image_hash)")


def test_url_and_file_hashes_follow_the_rule(tmp_path):
    url = "https://example.com/a b/ü.jpg"
    assert url_image_hash(url) == hashlib.md5(url.encode("utf-8")).hexdigest()
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG" + bytes(range(256)) * 5000)  # larger than one read chunk
    assert file_image_hash(image) == hashlib.md5(image.read_bytes()).hexdigest()
    assert file_sha256(image) == hashlib.sha256(image.read_bytes()).hexdigest()
    assert require_image_hash(file_image_hash(image)) == file_image_hash(image)
    renamed = image.rename(tmp_path / "other-name.png")
    assert file_image_hash(renamed) == hashlib.md5(renamed.read_bytes()).hexdigest()  # the content, not the name
