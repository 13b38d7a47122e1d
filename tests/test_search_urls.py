"""The search index's URL lines follow the downloaders' rule: http(s) only (other schemes refused with their reason,
never read), redirects held to http(s), a byte cap per image."""

import numpy as np
import PIL.Image
from search_helpers import CountingModel, write_images

from tests.url_server_helpers import serve_folder
from training.search.__main__ import parser
from training.search.index import index_collection
from training.search.sources import from_paths
from training.url_fetch import FetchPolicy, policy_from_options


def test_list_urls_other_than_http_are_refused_with_their_reason_and_never_read(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    PIL.Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(served / "a.png")
    outside = tmp_path / "outside.png"
    PIL.Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(outside)
    with serve_folder(served) as server:
        lines = [server.url("a.png"), "file:///etc/passwd", outside.as_uri(), "ftp://127.0.0.1/a.png",
                 "s3://bucket/a.png", server.redirect(outside.as_uri()), server.url("huge.jpg")]  # fmt: skip
        collected = from_paths(lines, download_folder=tmp_path / "downloads", policy=FetchPolicy(max_image_bytes=10**6))

    assert len(collected.entries) == 1 and collected.entries[0].path.startswith(str(tmp_path / "downloads"))
    refused = "URL scheme refused: {0} URLs are not fetched (only http, https; --allow-url-schemes {0} opts in)"
    assert dict(collected.unreadable) == {
        "file:///etc/passwd": refused.format("file"),
        outside.as_uri(): refused.format("file"),
        "ftp://127.0.0.1/a.png": refused.format("ftp"),
        "s3://bucket/a.png": refused.format("s3"),
        lines[5]: f"download failed: redirect refused: {lines[5]} redirects to {outside.as_uri()} (only http, https "
        "followed)",
        lines[6]: f"download failed: image over the byte cap: {lines[6]} declares Content-Length 2000000000, more "
        "than 1000000 bytes",
    }


def test_a_file_url_is_refused_even_without_a_download_folder(tmp_path):
    collected = from_paths(["file:///etc/passwd"])
    assert collected.entries == [] and collected.unreadable == [
        ("file:///etc/passwd", "URL scheme refused: file URLs are not fetched (only http, https; --allow-url-schemes "
         "file opts in)")
    ]  # fmt: skip


def test_the_index_command_opts_in_to_file_urls_only_when_told(tmp_path, model, processor):
    write_images(tmp_path / "elsewhere", [7])
    listing = tmp_path / "list.txt"
    listing.write_text((tmp_path / "elsewhere" / "img07.png").as_uri() + "\n")
    search_model = CountingModel(model, processor, name="tiny")
    plain = parser().parse_args(["index", "--list", str(listing), "--output", "o", "--model", "m"])
    opted = parser().parse_args(
        ["index", "--list", str(listing), "--output", "o", "--model", "m", "--allow-url-schemes", "file",
         "--max-image-bytes", "100000"]
    )  # fmt: skip
    assert policy_from_options(plain) == FetchPolicy()
    assert policy_from_options(opted) == FetchPolicy(("file",), 100_000)

    refused = index_collection(tmp_path / "idx", search_model, paths=listing, fetch_policy=policy_from_options(plain),
                               show_progress=False)  # fmt: skip
    assert refused.indexed == 0 and [reason for _, reason in refused.unreadable] == [
        "URL scheme refused: file URLs are not fetched (only http, https; --allow-url-schemes file opts in)"
    ]
    fetched = index_collection(tmp_path / "idx2", search_model, paths=listing, fetch_policy=policy_from_options(opted),
                               show_progress=False)  # fmt: skip
    assert (fetched.indexed, fetched.unreadable) == (1, [])
