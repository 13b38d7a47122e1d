"""What the downloaders fetch, and how much of it: one rule for the pipeline, `training.hub_data` and the search index.

img2dataset downloads with `urllib.request.urlopen`, which also opens `file://`, `ftp://` and `data:` URLs, follows a
redirect to `ftp://`, and reads a body whole whatever its size. Here a URL is fetched over http(s) only, unless the
operator opts in to more schemes (`--allow-url-schemes file,ftp`); a redirect must stay within the same schemes (never
to `file://`); and an image may be at most `max_image_bytes` long: refused at once from its Content-Length header, and
a body without one stops being read once it passes the cap.

A row whose URL has another scheme is refused before img2dataset sees it (`FetchPolicy.refusal`), with a reason the
callers report like any failed download. The redirect and size rules live in a urllib opener that `GuardedDownloader`
installs in the process that downloads (a spawned multiprocessing worker or a Ray task: img2dataset pickles its
`Downloader` to them) for as long as it downloads a shard; `download_with_policy` runs img2dataset's `download` with
that downloader.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit


FETCHED_SCHEMES = ("http", "https")
DEFAULT_MAX_IMAGE_BYTES = 32 * 2**20
SCHEME_OPTION = "--allow-url-schemes"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_READ_CHUNK = 2**20
_PATCH_LOCK = threading.Lock()


class RefusedFetch(urllib.error.URLError):
    """A URL, a redirect or a body the fetch policy refuses; `str()` is the reason alone (img2dataset records
    `str(error)` as the row's error message, and the pipeline counts failures by the text before its first colon)."""

    def __str__(self) -> str:
        return str(self.reason)


def parse_url_schemes(text: str | Iterable[str]) -> tuple[str, ...]:
    """Schemes from `"file,ftp"` (a command-line value) or a list (a recipe), lower-cased, without `://`.

    Raises:
        ValueError: a name that is not a URL scheme.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    schemes = []
    for name in names:
        scheme = str(name).strip().lower().removesuffix("://")
        if not scheme and isinstance(text, str):
            continue  # "" or a trailing comma on the command line
        if not _SCHEME.fullmatch(scheme):
            raise ValueError(f"{name!r} is not a URL scheme (expected names like file, ftp, s3)")
        schemes.append(scheme)
    return tuple(dict.fromkeys(schemes))


def url_scheme(url: str) -> str:
    """The scheme of `url`, lower-cased ("" for a plain path)."""
    return urlsplit(str(url).strip()).scheme.lower()


@dataclass(frozen=True)
class FetchPolicy:
    """Which URL schemes are fetched (http and https, plus `extra_schemes` the operator opted in to) and the most
    bytes one image may have."""

    extra_schemes: tuple[str, ...] = ()
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_schemes", parse_url_schemes(self.extra_schemes))
        if self.max_image_bytes < 1:
            raise ValueError(f"max_image_bytes must be at least 1, got {self.max_image_bytes}")

    @property
    def schemes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*FETCHED_SCHEMES, *self.extra_schemes)))

    def refusal(self, url: str) -> str | None:
        """Why `url` is not fetched (its scheme is not allowed), or None when it is."""
        scheme = url_scheme(url)
        if scheme in self.schemes:
            return None
        if not scheme:
            return f"URL scheme refused: {url!r} has no scheme (only {', '.join(self.schemes)} URLs are fetched)"
        return (
            f"URL scheme refused: {scheme} URLs are not fetched (only {', '.join(self.schemes)}; "
            f"{SCHEME_OPTION} {scheme} opts in)"
        )

    def split(self, urls: Iterable[str]) -> tuple[list[str], dict[str, str]]:
        """(the URLs fetched, URL -> refusal reason for the others)."""
        fetched, refused = [], {}
        for url in urls:
            reason = self.refusal(url)
            if reason is None:
                fetched.append(url)
            else:
                refused[url] = reason
        return fetched, refused

    def opener(self) -> urllib.request.OpenerDirector:
        """A urllib opener that refuses other schemes (also after a redirect) and bodies over the cap."""
        return urllib.request.build_opener(_SchemeGuard(self), _RedirectGuard(self), _BodyCap(self.max_image_bytes))


class _SchemeGuard(urllib.request.BaseHandler):
    """Runs before every protocol handler (urllib calls `default_open` first), for the first URL and each redirect."""

    handler_order = 100

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def default_open(self, request: urllib.request.Request) -> None:
        reason = self.policy.refusal(request.full_url)
        if reason is not None:
            raise RefusedFetch(reason)


class _RedirectGuard(urllib.request.HTTPRedirectHandler):
    """Refuses a redirect to a scheme the policy does not fetch (urllib itself follows redirects to ftp://), and to
    `file://` always, with a reason that names both URLs."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urljoin(req.full_url, location)
            scheme = url_scheme(target)
            if scheme == "file" or self.policy.refusal(target) is not None:
                fp.close()
                allowed = ", ".join(scheme for scheme in self.policy.schemes if scheme != "file")
                raise RefusedFetch(f"redirect refused: {req.full_url} redirects to {target} (only {allowed} followed)")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _BodyCap(urllib.request.BaseHandler):
    """Refuses a response whose Content-Length is over the cap, and makes `read()` stop past the cap otherwise."""

    handler_order = 1000

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def http_response(self, request: urllib.request.Request, response: Any) -> Any:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and int(declared) > self.max_bytes:
            response.close()
            raise RefusedFetch(
                f"image over the byte cap: {request.full_url} declares Content-Length {int(declared)}, more than "
                f"{self.max_bytes} bytes"
            )
        response.read = _capped_read(response.read, self.max_bytes, request.full_url)
        return response

    https_response = http_response


def _capped_read(read: Any, max_bytes: int, url: str) -> Any:
    """`read` that reads in chunks and raises once more than `max_bytes` came in (counted over all calls)."""
    seen = 0

    def capped(amount: int | None = None) -> bytes:
        nonlocal seen
        wanted = max_bytes + 1 - seen if amount is None or amount < 0 else min(amount, max_bytes + 1 - seen)
        chunks = []
        while wanted > 0:
            chunk = read(min(wanted, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            seen += len(chunk)
            wanted -= len(chunk)
            if amount is not None and amount >= 0:
                break
        if seen > max_bytes:
            raise RefusedFetch(f"image over the byte cap: {url} sent more than {max_bytes} bytes; stopped reading")
        return b"".join(chunks)

    return capped


@contextmanager
def installed_opener(policy: FetchPolicy) -> Iterator[None]:
    """`urllib.request.urlopen` uses the policy's opener inside the block (the previous one is put back after)."""
    previous = urllib.request._opener  # urllib keeps the installed opener here; no public getter
    urllib.request.install_opener(policy.opener())
    try:
        yield
    finally:
        urllib.request.install_opener(previous)


class GuardedDownloader:
    """img2dataset's `Downloader`, fetching each shard under the policy's urllib opener in the process that runs it:
    the distributors pickle this object, policy included, to their worker processes and Ray tasks and call it there
    with one shard."""

    def __init__(self, downloader: Any, policy: FetchPolicy) -> None:
        self.downloader, self.policy = downloader, policy

    def __call__(self, shard: Any) -> Any:
        with installed_opener(self.policy):
            return self.downloader(shard)


def download_with_policy(policy: FetchPolicy, **settings: Any) -> None:
    """img2dataset's `download(**settings)` with every shard fetched by a `GuardedDownloader` under `policy`."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would otherwise call the network
    from img2dataset.downloader import Downloader

    # the package's `main` attribute is its `main()` function: take the module itself
    img2dataset_main = importlib.import_module("img2dataset.main")

    def guarded(**downloader_settings: Any) -> GuardedDownloader:
        return GuardedDownloader(Downloader(**downloader_settings), policy)

    # `download` builds its `Downloader` by this module-level name; there is no option to pass one in
    with _PATCH_LOCK:
        original, img2dataset_main.Downloader = img2dataset_main.Downloader, guarded
        try:
            img2dataset_main.download(**settings)
        finally:
            img2dataset_main.Downloader = original


def add_fetch_options(parser: argparse.ArgumentParser, recipe_defaults: bool = False) -> None:
    """The command-line opt-in to more URL schemes and the byte cap, the same on every command that downloads.

    Both default to None: `policy_from_options` fills in http(s) and 32 MiB, or a recipe's `download` section decides
    (`recipe_defaults`) unless a flag is given.
    """
    source = "the recipe's download section, else " if recipe_defaults else ""
    parser.add_argument(
        SCHEME_OPTION,
        dest="allow_url_schemes",
        metavar="SCHEMES",
        help=f"also fetch URLs of these schemes, comma-separated, e.g. file,ftp (default: {source}http and https only)",
    )
    parser.add_argument("--max-image-bytes", type=int, help=f"bytes one image may have (default: {source}32 MiB)")


def policy_from_options(args: argparse.Namespace) -> FetchPolicy:
    """The `FetchPolicy` of `add_fetch_options`' flags, with the defaults for those not given."""
    max_image_bytes = DEFAULT_MAX_IMAGE_BYTES if args.max_image_bytes is None else args.max_image_bytes
    return FetchPolicy(parse_url_schemes(args.allow_url_schemes or ""), max_image_bytes)
