"""Driving relsim's web app as a person would: the app served on a free local port, headless Chromium through
Playwright (Debian's `chromium`: Playwright's own browser download is not reachable from these machines), raw HTTP
requests for what a browser would normalise away, and screenshots.

The fixtures built on these (`chromium`, `browser_page`, `search_app` in conftest.py) are shared by every screen of
the app; a new screen passes its tabs to `serve_search_app(..., extra_tabs=[...])`.
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


CHROMIUM_ENV = "RELSIM_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# generous for a loaded 2-core machine: a search embeds the query and reads the stored vectors
ACTION_TIMEOUT_MS = 30_000


def chromium_path() -> str:
    """The Chromium binary Playwright drives: $RELSIM_CHROMIUM, else Debian's /usr/bin/chromium.

    Raises:
        FileNotFoundError: no such binary, with how to install it (`make test` does it as root).
    """
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(
            f"{path}: no Chromium to drive the web-app tests; install Debian's package (as root: apt-get install "
            f"chromium; `make chromium` does it) or set {CHROMIUM_ENV} to a Chromium binary"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningApp:
    """A launched app: its root URL and the Gradio Blocks (for `.close()`), plus whatever the test needs."""

    url: str
    blocks: Any

    def raw_get(self, path: str) -> tuple[int, bytes]:
        """GET `path` exactly as written (no `../` normalisation, unlike a browser or httpx): status and body."""
        address = urlsplit(self.url)
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@dataclass
class SearchAppUnderTest:
    """The running search app and what it serves: the collection folder, the opened index and its model (for the
    Python-API answers a page must show), and a scratch folder."""

    app: RunningApp
    collection: Path
    index: Any
    model: Any
    scratch: Path

    @property
    def url(self) -> str:
        return self.app.url


@contextmanager
def serve_search_app(index_dir: str | Path, model: Any, **settings: Any) -> Iterator[RunningApp]:
    """The search app (`launch_app`, non-blocking) on a free port of 127.0.0.1, closed afterwards. `settings` go to
    `launch_app` (baseline, k, page_size, extra_tabs, ...)."""
    from training.search.app import launch_app

    blocks = launch_app(index_dir, port=free_port(), model=model, block=False, **settings)
    try:
        yield RunningApp(blocks.local_url.rstrip("/"), blocks)
    finally:
        blocks.close()


def screenshot(page: Any, folder: Path, name: str) -> Path:
    """A full-page PNG of the page as it is now, under `folder`."""
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def write_synthetic_collection(folder: Path, per_family: int, image_size: int = 56) -> list[Path]:
    """`per_family` held-out synthetic images of each family as `<family>/<index>.png` under `folder` (a collection
    with sub-folders, like a person's photos), returned in the order the index lists them (sorted paths)."""
    from training.synthetic.dataset import synthetic_examples

    paths = []
    for example in synthetic_examples(per_family, "heldout", seed=7, image_size=image_size):
        path = folder / example["family"] / f"{example['index']:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        example["image"].save(path)
        paths.append(path)
    return sorted(paths)
