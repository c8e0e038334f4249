"""A minimal in-memory tokenwallet for the gateway client's unit tests.

It implements the contract the client relies on (usage batches with exactly-once ids,
multi-capture grants with increments, void and GET, Idempotency-Key replays) and lets a test
script faults: 503/429 with Retry-After, a timeout before processing, a connection dropped
after the server processed a batch, ``in_progress`` answers, a batch refused with 400, and a
gate that holds requests. Money is ``Decimal`` throughout; a float in a request is recorded in
``floats_seen`` for the tests to assert on.
"""

from __future__ import annotations

import collections
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

KEY = "tw_gat_test"
MTOK = Decimal(1_000_000)
PRICE = {
    "model": "m",
    "input_per_mtok": "3.00",
    "output_per_mtok": "15.00",
    "cache_read_per_mtok": "0.30",
    "cache_write_5m_per_mtok": "3.75",
    "cache_write_1h_per_mtok": "6.00",
    "reasoning_per_mtok": "20.00",
    "batch_discount_pct": "50",
}


class Drop(Exception):
    """Close the connection without an answer (the real-socket server's version of a drop)."""


class FakeTokenwallet:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.balances: dict[str, Decimal] = {}
        self.token_balances: dict[str, int] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.charge_count: collections.Counter[str] = collections.Counter()
        self.grants: dict[str, dict[str, Any]] = {}
        self.idem: dict[str, tuple[int, dict[str, Any]]] = {}
        self.usage_posts: list[int] = []  # batch sizes of answered POST /v1/usage
        self.calls: collections.Counter[str] = collections.Counter()
        self.usage_faults: collections.deque[str] = collections.deque()
        self.in_progress: collections.Counter[str] = collections.Counter()
        self.gate = threading.Event()
        self.gate.set()
        self.floats_seen: list[str] = []
        self.ttl = timedelta(seconds=300)

    def account(self, account_id: str, balance: str = "0", tokens: int = 0) -> str:
        self.balances[account_id] = Decimal(balance)
        self.token_balances[account_id] = tokens
        return account_id

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return problem(401, "unauthorized", "missing or invalid API key")
        path, method = request.url.path, request.method
        body = self._body(request)
        if method == "POST" and path == "/v1/usage":
            return self._usage(request, body)
        key = request.headers.get("Idempotency-Key")
        if key and key in self.idem:
            status, stored = self.idem[key]
            return httpx.Response(status, json=stored)
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and path == "/v1/authorizations":
                self.calls["grant"] += 1
                status, out = self._grant(body)
            elif method == "POST" and len(parts) == 4 and parts[3] == "increment":
                self.calls["increment"] += 1
                status, out = self._increment(parts[2], body)
            elif method == "POST" and len(parts) == 4 and parts[3] == "void":
                self.calls["void"] += 1
                status, out = self._void(parts[2])
            elif method == "GET" and len(parts) == 3 and parts[1] == "authorizations":
                self.calls["get"] += 1
                g = self.grants.get(parts[2])
                status, out = (200, self._view(g)) if g else (404, _p(404, "not_found", "no"))
            else:
                return problem(404, "not_found", f"{method} {path}")
            if key and status < 400:
                self.idem[key] = (status, out)
        if status >= 400:
            return httpx.Response(
                status, json=out, headers={"Content-Type": "application/problem+json"}
            )
        return httpx.Response(status, json=out)

    def _body(self, request: httpx.Request) -> Any:
        if not request.content:
            return None

        def no_float(text: str) -> Decimal:
            self.floats_seen.append(text)
            return Decimal(text)

        return json.loads(request.content, parse_float=no_float)

    # -- usage -------------------------------------------------------------------------------

    def _usage(self, request: httpx.Request, body: Any) -> httpx.Response:
        fault = self.usage_faults.popleft() if self.usage_faults else None
        self.gate.wait()
        if fault == "timeout_before":
            raise httpx.ReadTimeout("timed out", request=request)
        if fault in ("503", "429"):
            code = "busy" if fault == "503" else "rate_limited"
            return problem(int(fault), code, "try again", retry_after="1")
        if fault == "400":
            return problem(400, "validation_error", "records: too many")
        with self.lock:
            results = [self._charge(r) for r in body["records"]]
            self.usage_posts.append(len(results))
        if fault == "drop_after":
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(200, json={"results": results})

    def _charge(self, r: dict[str, Any]) -> dict[str, Any]:
        refused = self._refusal(r)
        if refused is not None:
            return refused
        rid, acc = r["id"], r["account_id"]
        g, refused = self._authorization_of(r)
        if refused is not None:
            return refused
        cost = rate(r)
        view = None
        if g is not None and g["status"] == "approved":
            billed, credited = self._capture(g, acc, cost, r["input_tokens"] + r["output_tokens"])
            view = self._state(g)
        else:
            if self.balances[acc] < cost:
                return rejected(rid, "insufficient_funds", "the account cannot pay")
            self.balances[acc] -= cost
            billed, credited = cost, Decimal(0)
        self.charge_count[rid] += 1
        result = {
            "id": rid,
            "status": "charged",
            "billed": money(billed),
            "credited": money(credited),
            "reason": None,
            "detail": None,
        }
        self.results[rid] = result
        return {**result, "authorization": view}

    def _refusal(self, r: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to a record that is not charged now (invalid, in progress, duplicate)."""
        rid = r.get("id")
        needed = ("id", "account_id", "model", "occurred_at", "input_tokens", "output_tokens")
        if not isinstance(rid, str) or any(k not in r for k in needed):
            return rejected(str(rid), "validation_error", "a field is missing")
        if self.in_progress[rid] > 0:
            self.in_progress[rid] -= 1
            return rejected(rid, "in_progress", "being charged by another request")
        if rid in self.results:
            return {**self.results[rid], "status": "duplicate", "authorization": None}
        acc = r["account_id"]
        if acc not in self.balances:
            return rejected(rid, "unknown_account", f"account {acc} does not exist")
        return None

    def _authorization_of(
        self, r: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The grant a record names (or None), or the rejection when it cannot use it."""
        if not r.get("authorization_id"):
            return None, None
        rid = r["id"]
        g = self.grants.get(r["authorization_id"])
        if g is None:
            return None, rejected(rid, "unknown_authorization", "no such authorization")
        if g["account_id"] != r["account_id"]:
            return None, rejected(rid, "authorization_account_mismatch", "another account")
        if g["model"] is not None and g["model"] != r["model"]:
            return None, rejected(rid, "authorization_model_mismatch", "another model")
        return g, None

    def _capture(
        self, g: dict[str, Any], acc: str, cost: Decimal, tokens_used: int
    ) -> tuple[Decimal, Decimal]:
        """Capture from an approved grant, the rest from the wallet; (billed, credited)."""
        left = g["held"] - g["captured"] - g["released"]
        if g["tokens"]:
            took = min(tokens_used, int(left))
            g["captured"] += took
            cost = cost * (tokens_used - took) / tokens_used if tokens_used else cost
        else:
            took = min(cost, left)
            g["captured"] += took
        from_wallet = min(cost - (0 if g["tokens"] else took), self.balances[acc])
        credited = cost - (0 if g["tokens"] else took) - from_wallet
        self.balances[acc] -= from_wallet
        billed = from_wallet + (0 if g["tokens"] else took)
        return billed, credited

    # -- authorizations ----------------------------------------------------------------------

    def _grant(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        acc = body["account_id"]
        if acc not in self.balances:
            return 404, _p(404, "not_found", f"account {acc} does not exist")
        if body.get("multi_capture") is not True:
            return 422, _p(422, "validation_error", "single-use holds are not faked")
        tokens = "tokens" in body
        ask = Decimal(body["tokens"]) if tokens else Decimal(body["amount"])
        gid = f"auth_{len(self.grants) + 1}"
        g = {
            "id": gid,
            "account_id": acc,
            "model": body.get("model"),
            "tokens": tokens,
            "status": "approved",
            "held": Decimal(0),
            "captured": Decimal(0),
            "released": Decimal(0),
            "final": False,
            "expires_at": datetime.now(UTC) + timedelta(seconds=body.get("ttl_seconds") or 300),
            "decline_code": None,
        }
        self.grants[gid] = g
        got = self._reserve(g, ask)
        if got == 0:
            g["status"], g["decline_code"], g["final"] = "declined", "insufficient_funds", True
        return 201, {**self._view(g), "granted": self._q(g, got)}

    def _reserve(self, g: dict[str, Any], ask: Decimal) -> Decimal:
        acc = g["account_id"]
        got: Decimal
        if g["tokens"]:
            got = Decimal(min(int(ask), self.token_balances[acc]))
            self.token_balances[acc] -= int(got)
            left = Decimal(self.token_balances[acc])
        else:
            got = min(ask, self.balances[acc])
            self.balances[acc] -= got
            left = self.balances[acc]
        g["held"] += got
        g["final"] = got < ask or left == 0
        return got

    def _increment(self, gid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        g = self.grants.get(gid)
        if g is None:
            return 404, _p(404, "not_found", "no such authorization")
        if g["status"] != "approved" or g["expires_at"] <= datetime.now(UTC):
            return 409, _p(409, "authorization_closed", f"authorization {gid} is {g['status']}")
        ask = Decimal(body["tokens"]) if "tokens" in body else Decimal(body["amount"])
        if body.get("ttl_seconds"):
            g["expires_at"] = datetime.now(UTC) + timedelta(seconds=body["ttl_seconds"])
        got = self._reserve(g, ask)
        return 200, {**self._view(g), "granted": self._q(g, got)}

    def _void(self, gid: str) -> tuple[int, dict[str, Any]]:
        g = self.grants.get(gid)
        if g is None:
            return 404, _p(404, "not_found", "no such authorization")
        self._release(g, "voided")
        return 200, self._view(g)

    def _release(self, g: dict[str, Any], status: str) -> None:
        if g["status"] != "approved":
            return
        left = g["held"] - g["captured"] - g["released"]
        if g["tokens"]:
            self.token_balances[g["account_id"]] += int(left)
        else:
            self.balances[g["account_id"]] += left
        g["released"] += left
        g["status"] = status

    def expire(self, gid: str) -> None:
        with self.lock:
            self._release(self.grants[gid], "expired")

    def _q(self, g: dict[str, Any], value: Decimal) -> dict[str, Any]:
        return {"tokens": int(value)} if g["tokens"] else money(value)

    def _state(self, g: dict[str, Any]) -> dict[str, Any]:
        open_ = g["status"] == "approved"
        left = g["held"] - g["captured"] - g["released"] if open_ else Decimal(0)
        return {
            "id": g["id"],
            "status": g["status"],
            "held": self._q(g, g["held"]),
            "captured": self._q(g, g["captured"]),
            "remaining": self._q(g, left),
            "final": g["final"],
        }

    def _view(self, g: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._state(g),
            "account_id": g["account_id"],
            "multi_capture": True,
            "model": g["model"],
            "expires_at": g["expires_at"].isoformat(),
            "decline_code": g["decline_code"],
            "price": PRICE if g["model"] else None,
        }


def rate(r: dict[str, Any]) -> Decimal:
    """The fake's own rating of a record (same formula, written out separately)."""
    p = {k: Decimal(v) for k, v in PRICE.items() if k != "model"}
    out, reas = r["output_tokens"], r.get("reasoning_tokens", 0)
    total: Decimal = (
        r["input_tokens"] * p["input_per_mtok"]
        + r.get("cache_read_tokens", 0) * p["cache_read_per_mtok"]
        + r.get("cache_write_5m_tokens", 0) * p["cache_write_5m_per_mtok"]
        + r.get("cache_write_1h_tokens", 0) * p["cache_write_1h_per_mtok"]
        + (out - reas) * p["output_per_mtok"]
        + reas * p["reasoning_per_mtok"]
    )
    return total / MTOK


def money(value: Decimal) -> dict[str, str]:
    return {"amount": str(value), "currency": "USD"}


def rejected(rid: str, reason: str, detail: str) -> dict[str, Any]:
    return {
        "id": rid,
        "status": "rejected",
        "billed": None,
        "credited": None,
        "reason": reason,
        "detail": detail,
        "authorization": None,
    }


def _p(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": f"/problems/{code}",
        "title": code,
        "status": status,
        "detail": detail,
        "code": code,
    }


def problem(status: int, code: str, detail: str, retry_after: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/problem+json"}
    if retry_after:
        headers["Retry-After"] = retry_after
    return httpx.Response(status, content=json.dumps(_p(status, code, detail)), headers=headers)


@contextmanager
def serve_http(fake: FakeTokenwallet) -> Iterator[str]:
    """Serve ``fake`` on a real socket (http.server in a thread); yields the base URL.

    A fault that raises a transport error closes the connection without an answer.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            content = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"http://fake{self.path}",
                headers=dict(self.headers.items()),
                content=content,
            )
            try:
                resp = fake.handle(request)
            except httpx.TransportError:
                self.close_connection = True
                return
            payload = resp.read()
            self.send_response(resp.status_code)
            for name, value in resp.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
