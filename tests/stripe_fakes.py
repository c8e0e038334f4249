"""Offline Stripe for tests.

The real ``stripe`` SDK over a fake HTTP client, and real-shaped, correctly signed webhook events.

``FakeStripeHTTP`` subclasses ``stripe.HTTPClient`` (the SDK's documented extension point): it
answers the endpoints tokenwallet calls with JSON shaped like Stripe's (API version
2026-10-28.endive), emulates Stripe's idempotency (same key and body: the same answer; same key,
other body: ``idempotency_error``) and records every request so tests can assert the method,
path, form parameters and headers (``Idempotency-Key``) we sent.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

API_VERSION = "2026-10-28.endive"
WEBHOOK_SECRET = "whsec_test_0123456789abcdef0123456789abcdef"
API_KEY = "sk_test_51FakeKeyForOfflineTestsOnly000000000000000000"
#: Yesterday 10:00 UTC (fixed for the run): events are created then, so the ledger day of what
#: they book is known (reconciliation tests) and nothing depends on when the suite runs.
T0 = int(
    (
        datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0) - timedelta(days=1)
    ).timestamp()
)

_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    return f"{prefix}_test_{next(_counter):06d}{threading.get_ident() % 1000:03d}"


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]

    @property
    def idempotency_key(self) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == "idempotency-key":
                return v
        return None


@dataclass
class FakeStripeHTTP(stripe.HTTPClient):
    """A Stripe API stand-in for the endpoints tokenwallet uses."""

    name = "fake-stripe"
    requests: list[Recorded] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunded: dict[str, int] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    balance_transactions: list[dict[str, Any]] = field(default_factory=list)
    fail_next: tuple[int, dict[str, Any]] | None = None
    _idempotent: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        super().__init__()

    # -- stripe.HTTPClient -------------------------------------------------------------------
    def request(self, method, url, headers, post_data=None, *, _usage=None):
        parts = urlsplit(url)
        raw = post_data if method == "post" else parts.query
        if isinstance(raw, bytes):
            raw = raw.decode()
        params = dict(parse_qsl(raw or "", keep_blank_values=True))
        rec = Recorded(method.upper(), parts.path, params, dict(headers or {}))
        with self._lock:
            self.requests.append(rec)
            if self.fail_next is not None:
                status, body = self.fail_next
                self.fail_next = None
                return json.dumps(body), status, {"request-id": "req_fail"}
            key = rec.idempotency_key if rec.method == "POST" else None
            if key is not None and key in self._idempotent:
                fingerprint, body, status = self._idempotent[key]
                if fingerprint != f"{rec.path}?{raw}":
                    return (
                        json.dumps(
                            {
                                "error": {
                                    "type": "idempotency_error",
                                    "message": "Keys for idempotent requests can only be used"
                                    " with the same parameters they were first used with.",
                                }
                            }
                        ),
                        400,
                        {},
                    )
                return body, status, {"idempotent-replayed": "true"}
            status, payload = self._route(rec)
            body = json.dumps(payload)
            if key is not None:
                self._idempotent[key] = (f"{rec.path}?{raw}", body, status)
        return body, status, {"request-id": new_id("req")}

    def request_stream(self, method, url, headers, post_data=None, *, _usage=None):
        raise NotImplementedError

    def close(self):
        pass

    # -- endpoints ---------------------------------------------------------------------------
    def _route(self, rec: Recorded) -> tuple[int, dict[str, Any]]:
        if rec.method == "POST" and rec.path == "/v1/checkout/sessions":
            return 200, self._create_session(rec.params)
        if rec.method == "POST" and rec.path == "/v1/refunds":
            return 200, self._create_refund(rec.params)
        if rec.method == "GET" and rec.path == "/v1/balance_transactions":
            return 200, self._list_balance_transactions(rec.params)
        return 404, {"error": {"type": "invalid_request_error", "message": f"no route {rec.path}"}}

    def _create_session(self, p: dict[str, str]) -> dict[str, Any]:
        sid = new_id("cs")
        metadata = {k[9:-1]: v for k, v in p.items() if k.startswith("metadata[")}
        session = {
            "id": sid,
            "object": "checkout.session",
            "amount_subtotal": int(p["line_items[0][price_data][unit_amount]"]),
            "amount_total": int(p["line_items[0][price_data][unit_amount]"]),
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "created": T0,
            "currency": p["line_items[0][price_data][currency]"],
            "customer": None,
            "customer_details": None,
            "expires_at": T0 + 86400,
            "livemode": False,
            "metadata": metadata,
            "mode": p["mode"],
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": p.get("success_url"),
            "url": f"https://checkout.stripe.com/c/pay/{sid}#fidkdWxOYHwnPyd1blpxYHZxWjA0",
        }
        self.sessions[sid] = session
        return session

    def _create_refund(self, p: dict[str, str]) -> dict[str, Any]:
        pi = p["payment_intent"]
        amount = int(p["amount"])
        self.refunded[pi] = self.refunded.get(pi, 0) + amount
        charge = self.charges.get(pi) or {"id": new_id("ch")}
        self.charges[pi] = charge
        refund = {
            "id": new_id("re"),
            "object": "refund",
            "amount": amount,
            "balance_transaction": new_id("txn"),
            "charge": charge["id"],
            "created": T0 + 3600,
            "currency": "usd",
            "metadata": {k[9:-1]: v for k, v in p.items() if k.startswith("metadata[")},
            "payment_intent": pi,
            "reason": None,
            "status": "succeeded",
        }
        if p.get("expand[0]") == "charge":
            refund["charge"] = charge_obj(
                charge["id"],
                pi,
                amount=charge.get("amount", 0),
                amount_refunded=self.refunded[pi],
            )
        return refund

    def _list_balance_transactions(self, p: dict[str, str]) -> dict[str, Any]:
        gte, lt = int(p["created[gte]"]), int(p["created[lt]"])
        data = [bt for bt in self.balance_transactions if gte <= bt["created"] < lt]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "url": "/v1/balance_transactions",
        }

    # -- helpers for tests -------------------------------------------------------------------
    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]


# -- real-shaped objects ---------------------------------------------------------------------


def completed_session(session: dict[str, Any], pi: str, *, paid: bool = True) -> dict[str, Any]:
    """The Checkout Session as Stripe sends it in ``checkout.session.completed``."""
    return {
        **session,
        "status": "complete",
        "payment_status": "paid" if paid else "unpaid",
        "payment_intent": pi,
        "customer_details": {"email": "buyer@example.com", "name": None, "phone": None},
        "url": None,
    }


def payment_intent_obj(
    pi: str,
    *,
    amount: int,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
    status: str = "succeeded",
    latest_charge: str | None = None,
    last_payment_error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "id": pi,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount if status == "succeeded" else 0,
        "capture_method": "automatic_async",
        "created": T0,
        "currency": currency,
        "last_payment_error": last_payment_error,
        "latest_charge": latest_charge,
        "livemode": False,
        "metadata": metadata or {},
        "payment_method_types": ["card"],
        "status": status,
    }


def charge_obj(
    ch: str,
    pi: str,
    *,
    amount: int,
    amount_refunded: int = 0,
    currency: str = "usd",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "id": ch,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": new_id("txn"),
        "captured": True,
        "created": T0,
        "currency": currency,
        "disputed": False,
        "livemode": False,
        "metadata": metadata or {},
        "paid": True,
        "payment_intent": pi,
        "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
        "refunded": amount_refunded == amount,
        "status": "succeeded",
    }


def dispute_obj(
    dp: str,
    ch: str,
    pi: str,
    *,
    amount: int,
    status: str,
    withdrawn: bool = True,
    reinstated: bool = False,
    currency: str = "usd",
    fee: int = 1500,
) -> dict[str, Any]:
    bts = []
    # The same balance transaction keeps its id in every snapshot of the dispute.
    if withdrawn:
        bts.append(
            {
                "id": f"txn_{dp}_withdrawal",
                "object": "balance_transaction",
                "amount": -amount,
                "currency": currency,
                "fee": fee,
                "net": -amount - fee,
                "reporting_category": "dispute",
                "type": "adjustment",
            }
        )
    if reinstated:
        bts.append(
            {
                "id": f"txn_{dp}_reinstatement",
                "object": "balance_transaction",
                "amount": amount,
                "currency": currency,
                "fee": 0,
                "net": amount,
                "reporting_category": "dispute_reversal",
                "type": "adjustment",
            }
        )
    return {
        "id": dp,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": bts,
        "charge": ch,
        "created": T0 + 7200,
        "currency": currency,
        "evidence_details": {"due_by": T0 + 86400 * 7, "has_evidence": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": pi,
        "reason": "fraudulent",
        "status": status,
    }


def balance_txn(
    *,
    type: str,
    amount: int,
    fee: int,
    created: int,
    source: dict[str, Any] | str,
    currency: str = "usd",
) -> dict[str, Any]:
    return {
        "id": new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created + 86400 * 2,
        "created": created,
        "currency": currency,
        "fee": fee,
        "net": amount - fee,
        "reporting_category": type,
        "source": source,
        "status": "pending",
        "type": type,
    }


def event(etype: str, obj: dict[str, Any], *, created: int = T0 + 60, eid: str | None = None):
    return {
        "id": eid or new_id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": etype,
    }


def signed(evt: dict[str, Any], *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None):
    """The raw body and a correct ``Stripe-Signature`` header for it."""
    payload = json.dumps(evt, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return payload.encode(), header


def refund_obj(
    re: str,
    ch: str,
    pi: str,
    *,
    amount: int,
    status: str = "succeeded",
    created: int = T0 + 3600,
    currency: str = "usd",
    failure_reason: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Refund as Stripe sends it in ``refund.*`` and ``charge.refund.updated`` events.

    A failed refund carries ``failure_reason`` and the balance transaction that gave the money back.
    """
    return {
        "id": re,
        "object": "refund",
        "amount": amount,
        "balance_transaction": new_id("txn"),
        "charge": ch,
        "created": created,
        "currency": currency,
        "destination_details": {"card": {"type": "refund"}, "type": "card"},
        "failure_balance_transaction": new_id("txn") if status == "failed" else None,
        "failure_reason": failure_reason if status == "failed" else None,
        "metadata": metadata or {},
        "payment_intent": pi,
        "reason": None,
        "status": status,
    }
