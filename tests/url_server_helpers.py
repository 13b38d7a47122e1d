"""A local http server for the download tests: files of a folder, a redirect to any URL, a body that claims 2 GB and
one streamed without a length. Threaded, bound to 127.0.0.1 on a free port, and bounded: each streamed body stops at
`STREAM_BYTES` and waits at most `STALL_SECONDS` for the client (no test ever waits on it: the server is stopped)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


CLAIMED_BYTES = 2_000_000_000
STREAM_BYTES = 8 * 2**20
STALL_SECONDS = 30.0


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, stop: threading.Event, **kwargs) -> None:
        self.stop = stop
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.end_headers()
        elif parts.path in ("/huge.jpg", "/endless.jpg"):
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            if parts.path == "/huge.jpg":
                self.send_header("Content-Length", str(CLAIMED_BYTES))
            self.end_headers()
            self._stream()
        else:
            super().do_GET()

    def _stream(self) -> None:
        """Up to `STREAM_BYTES` of zeros, then a stall until the client leaves or the server stops."""
        chunk = bytes(64 * 1024)
        try:
            for _ in range(STREAM_BYTES // len(chunk)):
                if self.stop.is_set():
                    return
                self.wfile.write(chunk)
            self.wfile.flush()
            self.stop.wait(STALL_SECONDS)
        except (BrokenPipeError, ConnectionResetError):
            pass


class LocalServer:
    def __init__(self, server: ThreadingHTTPServer) -> None:
        self.server = server

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/{path.lstrip('/')}"

    def redirect(self, target: str) -> str:
        return self.url(f"redirect?to={target}")


@contextmanager
def serve_folder(folder: str | Path) -> Iterator[LocalServer]:
    """Serves `folder` (and the special paths above) on 127.0.0.1 while the block runs."""
    stop = threading.Event()
    handler = functools.partial(_Handler, directory=str(folder), stop=stop)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalServer(server)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
