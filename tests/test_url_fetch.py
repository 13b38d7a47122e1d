"""The downloaders' fetch rule (`training.url_fetch`): http(s) only unless opted in, redirects held to the same
schemes, a byte cap per image; checked on the opener itself against a local http server."""

import time
import urllib.request

import pytest

from tests.url_server_helpers import CLAIMED_BYTES, serve_folder
from training.url_fetch import FetchPolicy, RefusedFetch, installed_opener, parse_url_schemes


@pytest.fixture
def server(tmp_path):
    (tmp_path / "small.txt").write_bytes(b"x" * 1000)
    with serve_folder(tmp_path) as served:
        yield served


def _open(policy: FetchPolicy, url: str) -> bytes:
    with policy.opener().open(url, timeout=10) as response:
        return response.read()


def test_only_http_and_https_are_fetched_unless_the_operator_opts_in():
    policy = FetchPolicy()
    assert [policy.refusal(url) is None for url in ("http://a/x.png", "HTTPS://a/x.png")] == [True, True]
    assert policy.refusal("file:///etc/passwd") == (
        "URL scheme refused: file URLs are not fetched (only http, https; --allow-url-schemes file opts in)"
    )
    assert policy.refusal("ftp://a/x.png").startswith("URL scheme refused: ftp URLs")
    assert policy.refusal("images/x.png").startswith("URL scheme refused: 'images/x.png' has no scheme")
    opted_in = FetchPolicy(parse_url_schemes("file, FTP://,"))
    assert opted_in.schemes == ("http", "https", "file", "ftp") and opted_in.refusal("ftp://a/x.png") is None
    assert opted_in.refusal("s3://bucket/x.png").startswith("URL scheme refused: s3 URLs")


def test_scheme_lists_and_byte_caps_that_mean_nothing_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'file ftp' is not a URL scheme"):
        parse_url_schemes("file ftp")
    with pytest.raises(ValueError, match=r"max_image_bytes must be at least 1, got 0"):
        FetchPolicy(max_image_bytes=0)


def test_the_opener_refuses_file_and_data_urls_before_any_handler_reads_them(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    for url in (secret.as_uri(), "data:,hello"):
        with pytest.raises(RefusedFetch, match=r"^URL scheme refused: (file|data) URLs are not fetched"):
            _open(FetchPolicy(), url)
    assert _open(FetchPolicy(("file",)), secret.as_uri()) == b"do not read"  # the opt-in


def test_redirects_to_file_and_ftp_are_refused_and_http_redirects_followed(server, tmp_path):
    secret = (tmp_path / "small.txt").as_uri()
    with pytest.raises(RefusedFetch, match=rf"^redirect refused: .* redirects to {secret} \(only http, https"):
        _open(FetchPolicy(), server.redirect(secret))
    with pytest.raises(RefusedFetch, match=r"^redirect refused: .* redirects to ftp://127\.0\.0\.1/x\.png"):
        _open(FetchPolicy(), server.redirect("ftp://127.0.0.1/x.png"))
    with pytest.raises(RefusedFetch, match=r"^redirect refused: .* redirects to file:"):  # file: never followed
        _open(FetchPolicy(("file",)), server.redirect(secret))
    assert _open(FetchPolicy(), server.redirect(server.url("small.txt"))) == b"x" * 1000


def test_a_huge_content_length_is_refused_from_the_header_and_a_long_body_stops_at_the_cap(server):
    policy = FetchPolicy(max_image_bytes=2**20)
    started = time.monotonic()
    with pytest.raises(RefusedFetch) as huge:
        _open(policy, server.url("huge.jpg"))
    with pytest.raises(RefusedFetch) as endless:
        _open(policy, server.url("endless.jpg"))
    elapsed = time.monotonic() - started
    assert str(huge.value) == (
        f"image over the byte cap: {server.url('huge.jpg')} declares Content-Length {CLAIMED_BYTES}, more than "
        "1048576 bytes"
    )
    assert str(endless.value) == (
        f"image over the byte cap: {server.url('endless.jpg')} sent more than 1048576 bytes; stopped reading"
    )
    assert elapsed < 5  # the server would stream 8 MiB and then stall for 30 s
    assert _open(policy, server.url("small.txt")) == b"x" * 1000


def test_the_installed_opener_is_what_urlopen_uses_inside_the_block_only(server):
    before = urllib.request._opener
    with installed_opener(FetchPolicy(max_image_bytes=100)), pytest.raises(RefusedFetch, match="over the byte cap"):
        urllib.request.urlopen(server.url("small.txt"), timeout=10)
    assert urllib.request._opener is before
