"""A real local webhook endpoint for tests: an HTTP server on a free port in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

#: (path, lower-cased headers, body) -> the HTTP status to answer
Answer = Callable[[str, dict[str, str], bytes], int]


@contextmanager
def webhook_endpoint(answer: Answer) -> Iterator[str]:
    """Serve POSTs with ``answer`` until the block ends; yields the base URL."""

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.send_response(answer(self.path, headers, body))
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
