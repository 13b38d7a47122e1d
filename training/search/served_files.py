"""Exactly the indexed files through Gradio's file route, not every file of the folder they were indexed from.

Gradio's `allowed_paths` admits a folder whole (a `notes.txt` or `.env` beside the photos included), and listing the
files one by one instead costs Gradio a path resolution per listed file on every request (0.37 s a request at 10,000
files, on the event loop). So the app keeps the folder in `allowed_paths` and puts this ASGI middleware in front of
the file routes: a path that resolves inside one of `folders` but is not one of `files` is refused (403) before
Gradio sees it; every other path goes on to Gradio's own checks (its uploads, its cache, refusals).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gradio.utils import get_upload_folder
from starlette.responses import PlainTextResponse


# the routes by which Gradio serves a local file (`/file/` is its deprecated spelling of `/file=`)
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")


def requested_file(route_path: str) -> str | None:
    """The path a request asks Gradio's file route for (as the route's `path` parameter receives it), or None for
    another route."""
    for route in FILE_ROUTES:
        at = route_path.find(route)
        if at >= 0:
            return route_path[at + len(route) :]
    return None


class ServedFiles:
    """ASGI middleware: refuses any file inside `folders` other than `files` (both compared after resolving links),
    and any URL (Gradio's file route would fetch a public http(s) URL and relay it: an open proxy the apps do not need).

    Args:
        app: the ASGI app behind (Gradio's).
        files: the files that may be served.
        folders: the folders in which nothing else may be served.
        uploads: Gradio's upload and cache folder (default: Gradio's own), left to Gradio's check.
    """

    def __init__(
        self, app: Any, files: Iterable[str | Path], folders: Iterable[str | Path], uploads: str | Path | None = None
    ) -> None:
        self.app = app
        self.files = {Path(path).resolve() for path in files}
        self.folders = [Path(folder).resolve() for folder in folders]
        # Gradio's own uploads and cache: its check decides there, even when a served folder holds them
        self.uploads = Path(uploads or get_upload_folder()).resolve()

    def refuses(self, requested: str) -> bool:
        """Whether to refuse `requested`, resolved as Gradio resolves it (a URL resolves to no file of `folders`)."""
        if URL_LIKE.match(requested):  # Gradio would fetch it and relay the bytes: the apps serve no remote file
            return True
        try:
            path = Path(os.path.abspath(requested)).resolve()
        except (OSError, ValueError):
            return True
        if path in self.files or path.is_relative_to(self.uploads):
            return False
        return any(path.is_relative_to(folder) for folder in self.folders)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            requested = requested_file(scope["path"])
            if requested is not None and self.refuses(requested):
                await PlainTextResponse("File not allowed.", status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
