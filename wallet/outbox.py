"""Outgoing events: written to an outbox in the same transaction as their cause, delivered by a
job to the account's webhook endpoints (and its reseller's, and the operator's), signed with the
Standard Webhooks scheme: ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ledger.base import utcnow
from wallet.ids import new_id
from wallet.models import Account, OutboxEvent, WebhookEndpoint

EVENT_TYPES = frozenset(
    {
        "balance.low",
        "credits.expiring",
        "subscription.renewed",
        "subscription.renewal_failed",
        # for the operator: a card refund failed at the provider and was undone in the books
        "payment.refund_failed",
    }
)
MAX_BACKOFF = timedelta(hours=1)

#: (url, headers, body) -> HTTP status; replaceable in tests and by operators.
Sender = Callable[[str, Mapping[str, str], bytes], int]


def emit(
    session: Session,
    *,
    account_id: str,
    type: str,
    data: Mapping[str, Any],
    dedupe_key: str | None = None,
) -> str | None:
    """Queue an event; with ``dedupe_key`` the same fact is queued at most once.

    Returns:
        The event id, or None when the dedupe key was already used.
    """
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type}")
    event_id = new_id("evt")
    payload = {"id": event_id, "type": type, "created": utcnow().isoformat(), "data": dict(data)}
    row = session.execute(
        insert(OutboxEvent)
        .values(
            id=event_id, account_id=account_id, type=type, dedupe_key=dedupe_key, payload=payload
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(OutboxEvent.id)
    ).first()
    return row.id if row else None


def new_secret() -> str:
    """A webhook signing secret (``whsec_`` + base64 of 32 random bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Check a received message's signature and freshness (for receivers and tests)."""
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not ts.isdigit() or abs(int(utcnow().timestamp()) - int(ts)) > tolerance_s:
        return False
    expected = sign(secret, msg_id, int(ts), body).split(",", 1)[1]
    offered = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if "," in s]
    return any(hmac.compare_digest(expected, o) for o in offered)


def http_sender(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """POST with the standard library; any network failure counts as status 0."""
    req = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, TimeoutError, OSError):
        return 0


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one delivery run did."""

    delivered: int
    failed: int


def _endpoints(session: Session, account_id: str) -> list[WebhookEndpoint]:
    parent = session.scalar(select(Account.parent_id).where(Account.id == account_id))
    owners = [account_id] + ([parent] if parent else [])
    return list(
        session.scalars(
            select(WebhookEndpoint).where(
                WebhookEndpoint.enabled.is_(True),
                or_(WebhookEndpoint.account_id.in_(owners), WebhookEndpoint.account_id.is_(None)),
            )
        )
    )


def deliver_due(
    session: Session, *, send: Sender = http_sender, now: datetime | None = None, limit: int = 100
) -> DeliveryReport:
    """Deliver queued events to every matching endpoint; failures retry with backoff.

    An event counts as delivered when every endpoint answered 2xx (at-least-once: an endpoint
    that succeeded may see a retry again, with the same ``webhook-id``, and must dedupe on it).
    """
    at = now or utcnow()
    events = session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.delivered_at.is_(None), OutboxEvent.next_attempt_at <= at)
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    delivered = failed = 0
    for event in events:
        body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
        ts = int(at.timestamp())
        errors = []
        for ep in _endpoints(session, event.account_id):
            headers = {
                "content-type": "application/json",
                "webhook-id": event.id,
                "webhook-timestamp": str(ts),
                "webhook-signature": sign(ep.secret, event.id, ts, body),
            }
            status = send(ep.url, headers, body)
            if not 200 <= status < 300:
                errors.append(f"{ep.id}: HTTP {status or 'unreachable'}")
        event.attempts += 1
        if errors:
            failed += 1
            event.last_error = "; ".join(errors)[:500]
            backoff = min(timedelta(seconds=30 * 2**event.attempts), MAX_BACKOFF)
            event.next_attempt_at = at + backoff
        else:
            delivered += 1
            event.delivered_at = at
            event.last_error = None
    session.flush()
    return DeliveryReport(delivered, failed)


def add_endpoint(session: Session, *, url: str, account_id: str | None) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned once with it."""
    if not url.startswith(("http://", "https://")):
        from wallet.errors import InvalidRequest

        raise InvalidRequest("webhook url must start with http:// or https://")
    ep = WebhookEndpoint(id=new_id("whe"), account_id=account_id, url=url, secret=new_secret())
    session.add(ep)
    session.flush()
    return ep
