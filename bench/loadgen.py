"""A light load generator: many simulated clients in one asyncio process.

Each simulated client owns one HTTP/1.1 keep-alive connection (raw asyncio streams, uvloop when
it is installed) and sends one request at a time on it, as a gateway worker would. Requests are
built from a pre-encoded header prefix; answers are read as a status line, a header block and a
``Content-Length`` (or chunked) body. JSON goes through ``msgspec``. Whatever the generator
costs shows up as ``time.process_time()`` of this one process, which every benchmark reports
next to the server's and PostgreSQL's CPU.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

import msgspec

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

#: The event loop in use ("uvloop" or "asyncio"), for the result files.
LOOP = "uvloop" if uvloop is not None else "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    if uvloop is not None:
        return uvloop.run(main)
    return asyncio.run(main)


class HttpError(RuntimeError):
    """An answer the benchmark did not expect."""

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        """Keep the status and body of the answer to ``method path``."""
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]!r}")
        self.status = status
        self.body = body


class Conn:
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    __slots__ = ("_auth", "_r", "_w", "host", "port", "requests")

    def __init__(self, host: str, port: int, key: str) -> None:
        """Prepare the connection to ``host:port`` with API key ``key``; it opens on first use."""
        self.host = host
        self.port = port
        self._auth = f"Host: {host}\r\nAuthorization: Bearer {key}\r\n".encode()
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self.requests = 0

    async def open(self) -> Conn:
        """Open the TCP connection and return the connection itself."""
        self._r, self._w = await asyncio.open_connection(self.host, self.port, limit=1 << 24)
        return self

    def close(self) -> None:
        """Close the connection; the next request opens it again."""
        if self._w is not None:
            self._w.close()
        self._r = self._w = None

    async def request(
        self, method: str, path: str, body: bytes | None = None, headers: bytes = b""
    ) -> tuple[int, bytes]:
        r"""Send one request; return the status and the raw body.

        Args:
            method: the HTTP method.
            path: the request target.
            body: the JSON body, already encoded (``None``: no body).
            headers: extra header lines, each ending in ``\r\n``.
        """
        if self._w is None:
            await self.open()
        r, w = self._r, self._w
        assert r is not None and w is not None
        data = body or b""
        head = b"%s %s HTTP/1.1\r\n%s%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        w.write(head % (method.encode(), path.encode(), self._auth, headers, len(data)) + data)
        try:
            block = await r.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            self.close()
            raise ConnectionError(f"{method} {path}: the server closed the connection") from exc
        status, length, chunked, close = _parse_head(block)
        if chunked:
            payload = await _read_chunked(r)
        else:
            payload = await r.readexactly(length) if length else b""
        if close:
            self.close()
        self.requests += 1
        return status, payload

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: int | Sequence[int] = (200, 201),
        headers: bytes = b"",
    ) -> Any:
        """Send a JSON request; return the decoded answer.

        Raises :class:`HttpError` when the status is not one of ``expect``.
        """
        raw = None if body is None else body if isinstance(body, bytes) else _encode(body)
        status, payload = await self.request(method, path, raw, headers)
        ok = (expect,) if isinstance(expect, int) else expect
        if status not in ok:
            raise HttpError(method, path, status, payload)
        return _decode(payload) if payload else None


def _parse_head(block: bytes) -> tuple[int, int, bool, bool]:
    """Status, ``Content-Length``, chunked and ``Connection: close`` of a response head."""
    lines = block.split(b"\r\n")
    status = int(lines[0].split(None, 2)[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    return status, length, chunked, close


async def _read_chunked(r: asyncio.StreamReader) -> bytes:
    """A chunked body, joined (no trailers expected)."""
    parts = []
    while True:
        size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await r.readuntil(b"\r\n")  # no trailers expected
            break
        parts.append((await r.readexactly(size + 2))[:-2])
    return b"".join(parts)


def encode(value: Any) -> bytes:
    """JSON bytes (msgspec)."""
    return _encode(value)


def decode(data: bytes) -> Any:
    """Decoded JSON (msgspec); amounts stay strings (the API sends decimal strings)."""
    return _decode(data)


async def connections(host: str, port: int, key: str, n: int) -> list[Conn]:
    """``n`` open connections."""
    return list(await asyncio.gather(*(Conn(host, port, key).open() for _ in range(n))))


async def for_each(
    conns: Sequence[Conn], items: Iterable[T], fn: Callable[[Conn, T], Awaitable[None]]
) -> None:
    """Run ``fn(conn, item)`` over ``items``, one item at a time per connection."""
    it = iter(items)

    async def worker(conn: Conn) -> None:
        for item in it:
            await fn(conn, item)

    await asyncio.gather(*(worker(c) for c in conns))


def percentiles_ms(seconds: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max and mean of latencies given in seconds, in milliseconds.

    Nearest-rank percentiles.
    """
    if not seconds:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None, "n": 0}
    v = sorted(seconds)

    def pct(q: float) -> float:
        rank = math.ceil(round(q * len(v), 9))
        return round(v[min(len(v), max(1, rank)) - 1] * 1000, 1)

    return {
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(v[-1] * 1000, 1),
        "mean": round(sum(v) / len(v) * 1000, 1),
        "n": len(v),
    }


class Clock:
    """Deadline of a timed run (``time.perf_counter``)."""

    __slots__ = ("deadline", "started")

    def __init__(self, seconds: float) -> None:
        """Start the clock now; it runs for ``seconds``."""
        self.started = time.perf_counter()
        self.deadline = self.started + seconds

    def running(self) -> bool:
        """Whether the deadline is still ahead."""
        return time.perf_counter() < self.deadline

    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started
