"""Outgoing events and their webhook deliveries.

Events are written to an outbox in the same transaction as their cause, delivered by a job to
the account's webhook endpoints (and its reseller's, and the operator's), signed with the
Standard Webhooks scheme (the ``standardwebhooks`` package): ``webhook-id``,
``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256(secret,
"{id}.{timestamp}.{body}")>``.

Each event gets one delivery per endpoint (``wallet_webhook_deliveries``): delivered once,
retried with exponential backoff, and dead after its last attempt until an operator replays it.
Delivery holds no database transaction open while it waits on the network: due deliveries are
claimed and committed, sent with httpx, and their outcomes recorded in a new short transaction.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook

from ledger.base import utcnow
from ledger.ids import new_id
from wallet.models import Account, OutboxEvent, WebhookDelivery, WebhookEndpoint

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
    """The ``webhook-signature`` header value for a message (Standard Webhooks ``v1``).

    Args:
        secret: the endpoint's ``whsec_...`` secret.
        msg_id: the ``webhook-id`` (the event id).
        timestamp: the ``webhook-timestamp``, in Unix seconds.
        body: the exact bytes sent (UTF-8 JSON).

    Raises:
        UnicodeDecodeError: ``body`` is not UTF-8 (the scheme signs text).
    """
    at = datetime.fromtimestamp(timestamp, UTC)
    return Webhook(secret).sign(msg_id, at, body.decode())


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """Check a received message's signature and freshness (for receivers and tests)."""
    msg_id, ts = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not ts.isdigit() or abs(int(utcnow().timestamp()) - int(ts)) > tolerance_s:
        return False
    try:
        expected = sign(secret, msg_id, int(ts), body).split(",", 1)[1]
    except UnicodeDecodeError:
        return False
    offered = [s.split(",", 1)[1] for s in headers.get("webhook-signature", "").split() if "," in s]
    return any(hmac.compare_digest(expected, o) for o in offered)


def http_sender(url: str, headers: Mapping[str, str], body: bytes) -> int:
    """POST with httpx (5 s timeout); any network failure counts as 0.

    Redirects are not followed: a 301, 302 or 303 would turn the POST into a GET without the
    signed body, and an endpoint that answered that GET with 200 would count as delivered. A 3xx
    is a failed attempt, retried like any other; an endpoint is registered with its final URL.
    """
    try:
        with httpx.stream(
            "POST", url, content=body, headers=dict(headers), timeout=5, follow_redirects=False
        ) as response:
            return response.status_code
    except (httpx.HTTPError, OSError):
        return 0


#: attempts per delivery before it is dead (30 s, 1, 2, 4 ... minutes, then hourly: ~10 h)
MAX_ATTEMPTS = 15
FIRST_BACKOFF = timedelta(seconds=30)
#: how long a claimed delivery is kept from other runs while it is being sent; a run that dies
#: between the claim and the record leaves it to be sent again after this
CLAIM_LEASE = timedelta(minutes=10)


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed attempt.

    30 s doubled each time, at most an hour (30 s, 1 min, 2 min, 4 min ... 1 h).
    """
    wait: timedelta = FIRST_BACKOFF * (2 ** max(attempts - 1, 0))
    return min(wait, MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """What one delivery run did.

    Deliveries that succeeded, failed (to be retried), and died (their last attempt failed).
    """

    delivered: int
    failed: int
    dead: int = 0


@dataclass(frozen=True, slots=True)
class Attempt:
    """A claimed delivery, signed and ready to send.

    ``due_at`` is when it was due, before the claim's lease.
    """

    delivery_id: int
    due_at: datetime
    event_id: str
    endpoint_id: str
    url: str
    headers: Mapping[str, str]
    body: bytes


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


def fan_out(session: Session, *, now: datetime | None = None, limit: int = 100) -> int:
    """Create the deliveries of events not fanned out yet.

    One delivery per matching endpoint (the account's, its reseller's, the operator's, as
    registered now); an event nobody listens to is done at once.

    Returns:
        The number of events fanned out.
    """
    at = now or utcnow()
    events = session.scalars(
        select(OutboxEvent)
        .where(
            OutboxEvent.fanned_out_at.is_(None),
            OutboxEvent.delivered_at.is_(None),
            OutboxEvent.next_attempt_at <= at,
        )
        .order_by(OutboxEvent.created_at, OutboxEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for event in events:
        endpoints = _endpoints(session, event.account_id)
        if endpoints:
            session.execute(
                insert(WebhookDelivery)
                .values(
                    [
                        {"event_id": event.id, "endpoint_id": ep.id, "next_attempt_at": at}
                        for ep in endpoints
                    ]
                )
                .on_conflict_do_nothing(constraint="uq_wallet_webhook_deliveries_pair")
            )
        else:
            event.delivered_at = at
        event.fanned_out_at = at
    session.flush()
    return len(events)


def deliver_due(
    session: Session,
    *,
    send: Sender = http_sender,
    now: datetime | None = None,
    limit: int = 100,
    max_attempts: int = MAX_ATTEMPTS,
) -> DeliveryReport:
    """Deliver what is due: each event to each of its endpoints, once.

    No database transaction is open while a request is in flight: the due deliveries are
    claimed in one transaction (:func:`claim_due`), sent, and their outcomes recorded in another
    (:func:`record_outcomes`).

    A delivery that gets a 2xx is ``delivered`` and never sent again, whatever the other
    endpoints of the event answer; one that fails is retried after :func:`backoff` and, once
    ``max_attempts`` attempts failed, is ``dead`` until an operator replays it
    (:func:`replay_delivery`). Deliveries to a disabled endpoint wait. Every attempt is signed
    afresh with the same ``webhook-id`` (the event id), so a receiver can dedupe on it.

    Args:
        session: a session outside any transaction (this function makes its own).
        send: posts one request and returns the HTTP status (0: unreachable).
        now: the run's instant (default: the clock); also the ``webhook-timestamp``.
        limit: at most this many events fanned out and deliveries sent per run.
        max_attempts: failed attempts after which a delivery is dead.

    Raises:
        ValueError: ``session`` is in a transaction.
    """
    if session.in_transaction():
        raise ValueError("deliver_due makes its own transactions: commit the session first")
    at = now or utcnow()
    with session.begin():
        fan_out(session, now=at, limit=limit)
        attempts = claim_due(session, now=at, limit=limit)
    sent: list[tuple[Attempt, int]] = []
    try:
        for attempt in attempts:
            sent.append((attempt, send(attempt.url, attempt.headers, attempt.body)))
    finally:
        with session.begin():
            report = record_outcomes(session, sent, now=at, max_attempts=max_attempts)
            _release(session, attempts[len(sent) :])
    return report


def claim_due(session: Session, *, now: datetime, limit: int = 100) -> list[Attempt]:
    """Claim the deliveries due at ``now`` and sign them.

    A claimed delivery is kept from other runs for :data:`CLAIM_LEASE`; the caller commits the
    claim before sending.
    """
    rows = session.execute(
        select(WebhookDelivery, OutboxEvent, WebhookEndpoint)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(
            WebhookDelivery.status == "pending",
            WebhookDelivery.next_attempt_at <= now,
            WebhookEndpoint.enabled.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()
    ts = int(now.timestamp())
    attempts = []
    for delivery, event, ep in rows:
        body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(ep.secret, event.id, ts, body),
        }
        attempts.append(
            Attempt(delivery.id, delivery.next_attempt_at, event.id, ep.id, ep.url, headers, body)
        )
        delivery.next_attempt_at = now + CLAIM_LEASE
    session.flush()
    return attempts


def record_outcomes(
    session: Session,
    sent: Sequence[tuple[Attempt, int]],
    *,
    now: datetime,
    max_attempts: int = MAX_ATTEMPTS,
) -> DeliveryReport:
    """Record what each sent attempt's endpoint answered (HTTP status, 0: unreachable).

    Returns:
        How many deliveries were delivered, failed (to be retried) and died.
    """
    counts = {"delivered": 0, "failed": 0, "dead": 0}
    touched: set[str] = set()
    for attempt, status in sent:
        delivery = session.get(WebhookDelivery, attempt.delivery_id, with_for_update=True)
        if delivery is None:
            continue
        event = session.get_one(OutboxEvent, attempt.event_id)
        delivery.next_attempt_at = attempt.due_at  # the lease ends
        counts[_record(delivery, event, attempt.endpoint_id, status, now, max_attempts)] += 1
        touched.add(event.id)
    session.flush()
    _mark_done(session, touched, now)
    return DeliveryReport(counts["delivered"], counts["failed"], counts["dead"])


def _record(
    delivery: WebhookDelivery,
    event: OutboxEvent,
    endpoint_id: str,
    status: int,
    at: datetime,
    max_attempts: int,
) -> str:
    """Apply one attempt's answer to its delivery and event; returns the outcome."""
    delivery.attempts += 1
    delivery.last_attempt_at, delivery.last_status = at, status
    event.attempts += 1
    if 200 <= status < 300:
        delivery.status, delivery.delivered_at, delivery.last_error = "delivered", at, None
        return "delivered"
    delivery.last_error = f"HTTP {status}" if status else "unreachable"
    event.last_error = f"{endpoint_id}: {delivery.last_error}"
    if delivery.attempts >= max_attempts:
        delivery.status, delivery.dead_at = "dead", at
        return "dead"
    delivery.next_attempt_at = at + backoff(delivery.attempts)
    return "failed"


def _release(session: Session, unsent: Sequence[Attempt]) -> None:
    """Claimed deliveries that were not sent (the sender raised) are due again as they were."""
    for attempt in unsent:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == attempt.delivery_id, WebhookDelivery.status == "pending")
            .values(next_attempt_at=attempt.due_at)
        )


def _mark_done(session: Session, event_ids: set[str], at: datetime) -> None:
    """Events whose every delivery is delivered are done (``delivered_at``)."""
    for event_id in sorted(event_ids):
        open_left = session.scalar(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(WebhookDelivery.event_id == event_id, WebhookDelivery.status != "delivered")
        )
        if not open_left:
            event = session.get_one(OutboxEvent, event_id)
            event.delivered_at, event.last_error = at, None
    session.flush()


def replay_delivery(
    session: Session,
    delivery_id: int,
    *,
    account_id: str | None = None,
    now: datetime | None = None,
) -> WebhookDelivery:
    """Send a dead delivery again (an operator's action).

    It is ``pending`` again, due now, with a fresh set of attempts; the next delivery run sends
    it. A delivery that is not dead is refused (it is being retried, or it was delivered).

    Args:
        session: the caller's transaction.
        delivery_id: the dead delivery.
        account_id: the caller's account: only deliveries to its own endpoints (None: any).
        now: when it is due again (default: the clock).

    Raises:
        NotFound: no such delivery visible to the caller.
        Conflict: the delivery is not dead.
    """
    from ledger.errors import NotFound
    from wallet.errors import Conflict

    stmt = (
        select(WebhookDelivery)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(of=WebhookDelivery)
    )
    if account_id is not None:
        stmt = stmt.where(WebhookEndpoint.account_id == account_id)
    delivery = session.scalars(stmt).one_or_none()
    if delivery is None:
        raise NotFound(f"webhook delivery {delivery_id} does not exist")
    if delivery.status != "dead":
        raise Conflict(
            f"webhook delivery {delivery_id} is {delivery.status}: only dead deliveries are"
            " replayed (pending ones are retried on their own)"
        )
    at = now or utcnow()
    delivery.status, delivery.dead_at = "pending", None
    delivery.attempts, delivery.next_attempt_at = 0, at
    delivery.replays += 1
    session.flush()
    return delivery


def add_endpoint(session: Session, *, url: str, account_id: str | None) -> WebhookEndpoint:
    """Register an endpoint; its secret is returned once with it."""
    if not url.startswith(("http://", "https://")):
        from wallet.errors import InvalidRequest

        raise InvalidRequest("webhook url must start with http:// or https://")
    ep = WebhookEndpoint(id=new_id("whe"), account_id=account_id, url=url, secret=new_secret())
    session.add(ep)
    session.flush()
    return ep


def endpoints_of(
    session: Session, account_id: str | None, *, every_account: bool = False, limit: int = 100
) -> list[WebhookEndpoint]:
    """Webhook endpoints by id: an account's, or every account's.

    Args:
        session: the caller's session (read only).
        account_id: whose endpoints (None: the operator's own, which no account owns).
        every_account: everyone's endpoints instead (``account_id`` is then not looked at).
        limit: at most this many.
    """
    stmt = select(WebhookEndpoint).order_by(WebhookEndpoint.id)
    if not every_account:
        stmt = stmt.where(WebhookEndpoint.account_id == account_id)
    return list(session.scalars(stmt.limit(limit)))


def deliveries_query(
    account_id: str | None,
    *,
    every_account: bool = False,
    status: str | None = None,
    endpoint_id: str | None = None,
) -> Select[WebhookDelivery, OutboxEvent, WebhookEndpoint]:
    """Deliveries with their event and endpoint, as a query to page by delivery id.

    Args:
        account_id: only deliveries to this account's endpoints (None: the operator's own).
        every_account: deliveries to every account's endpoints instead.
        status: only deliveries in this status (None or empty: any).
        endpoint_id: only deliveries to this endpoint (None or empty: any).
    """
    stmt = (
        select(WebhookDelivery, OutboxEvent, WebhookEndpoint)
        .join(OutboxEvent, OutboxEvent.id == WebhookDelivery.event_id)
        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
    )
    if not every_account:
        stmt = stmt.where(WebhookEndpoint.account_id == account_id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    if endpoint_id:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    return stmt
