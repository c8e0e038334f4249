"""The access log: one JSON line per HTTP request, and the request id.

Each line carries the time, a request id (the client's ``X-Request-Id`` when it is a short
token, else one made here; echoed in the response header), the caller (API key id and role,
never the key itself), method, path (no query string), status and duration. Request and
response bodies are never logged.

It wraps the whole application (outside the exception handlers), so it sees the status the
client got, 401s and 404s included. The logger is ``tokenwallet.access``; ``tokenwallet serve``
writes it to stderr as bare JSON lines. On the gateway hot path (``/v1/usage``,
``/v1/authorizations``) one in ``TOKENWALLET_ACCESS_LOG_GATEWAY_SAMPLE`` (default 100) successful
calls is logged, errors always: a line costs 15-20 µs of CPU against about 1 ms per authorize +
settle pair (docs/operations.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import time
from datetime import UTC, datetime

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Principal

log = logging.getLogger("tokenwallet.access")

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
_GATEWAY_PREFIXES = ("/v1/usage", "/v1/authorizations")


def request_id_of(scope: object) -> str | None:
    """The id the access log gave this request (None outside a request)."""
    state = scope.get("state") if isinstance(scope, dict) else None
    return state.get("request_id") if isinstance(state, dict) else None


class AccessLog:
    """ASGI wrapper that logs each HTTP request once it has been answered."""

    def __init__(self, app: ASGIApp, *, gateway_sample: int = 1) -> None:
        """Wrap an ASGI app.

        Args:
            app: the application whose requests are logged.
            gateway_sample: log one gateway request (usage, authorizations) in this many;
                errors and every other path are always logged.
        """
        self.app = app
        self.gateway_sample = max(1, gateway_sample)
        self._prefix = f"{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-"
        self._seq = itertools.count(1)
        self._gateway_seen = itertools.count()

    def _request_id(self, scope: Scope) -> str:
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id" and _CLIENT_ID.match(value):
                return value.decode()
        return f"{self._prefix}{next(self._seq)}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI event: tag an HTTP request with its id, then log it when answered."""
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = self._request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        header = (b"x-request-id", rid.encode())

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            self._log(scope, rid, status, time.perf_counter() - started)

    def _log(self, scope: Scope, rid: str, status: int, seconds: float) -> None:  # float-ok: time
        if not log.isEnabledFor(logging.INFO):
            return
        path = scope.get("path", "")
        gateway = path.startswith(_GATEWAY_PREFIXES)
        sampled = ""
        if self.gateway_sample > 1 and gateway:
            if status < 400 and next(self._gateway_seen) % self.gateway_sample:
                return
            sampled = f',"sampled_1_in":{self.gateway_sample}'
        user = scope.get("user")
        if isinstance(user, Principal):
            # key ids and roles are made by the server: no characters that need escaping
            who = f'"key_id":"{user.key_id}","role":"{user.role}"'
        else:
            who = '"key_id":null,"role":null'
        # request ids are the server's or a client's checked against _CLIENT_ID (no escaping);
        # the path can hold anything, so it is JSON-encoded
        line = (
            f'{{"ts":"{_timestamp()}","request_id":"{rid}",{who},'
            f'"method":"{scope.get("method")}","path":{json.dumps(path)},'
            f'"status":{status},"duration_ms":{seconds * 1000:.2f}{sampled}}}'
        )
        # makeRecord + handle: what log.info does, without looking up the caller's frame
        log.handle(log.makeRecord(log.name, logging.INFO, "", 0, line, (), None))


_ts_second = -1
_ts_prefix = ""


def _timestamp() -> str:
    """Now as ``2026-11-29T05:35:16.840Z`` (the formatted second is reused within it)."""
    global _ts_second, _ts_prefix
    now = time.time()
    second = int(now)
    if second != _ts_second:
        _ts_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _ts_second = second
    return f"{_ts_prefix}.{int((now - second) * 1000):03d}Z"
