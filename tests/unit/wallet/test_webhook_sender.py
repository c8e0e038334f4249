"""The webhook sender against a real local HTTP server: redirects are a failed attempt."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from wallet.outbox import http_sender


@contextmanager
def _redirecting(status: int) -> Iterator[tuple[str, list[str]]]:
    """A server whose POST answers ``status`` to /moved and whose every GET answers 200."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            seen.append(f"POST {self.path}")
            self.send_response(status)
            self.send_header("Location", "/moved")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_redirect_is_answered_as_its_status_and_never_turned_into_a_get() -> None:
    for status in (301, 302, 303, 307, 308):
        with _redirecting(status) as (url, seen):
            assert http_sender(url, {"content-type": "application/json"}, b"{}") == status
        assert seen == ["POST /hook"], status


def test_an_unreachable_endpoint_counts_as_0() -> None:
    with _redirecting(200) as (url, _):
        pass  # the server is closed again: nothing listens on its port
    assert http_sender(url, {}, b"{}") == 0
