"""Provider events (webhooks): stored unique by event id in the same transaction as their effect.

:func:`receive_event` claims the event row (``INSERT ... ON CONFLICT``: a concurrent duplicate
waits for the first delivery to commit and then sees it done), applies the effect and records the
outcome; the caller commits both together. A processing failure rolls both back and
:func:`record_failure` stores the event as ``failed`` in a new transaction, so it is never marked
done without its effect; a redelivery or :func:`retry_failed_events` processes it again.

Events about a payment we cannot match yet (a refund or dispute that arrived before the
payment's completion) are stored ``deferred`` under their payment intent and applied, in the
order the provider created them, in the transaction that settles that payment.

What each event type does is in invoicing/payments/handlers.py (a table of event type ->
handler); anything else is stored as ``ignored``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.orm import Session

from invoicing.payments.handlers import Applied, apply_event, created_at, event_object, object_id
from invoicing.payments.models import Payment, PaymentEvent
from ledger.base import utcnow

log = logging.getLogger(__name__)

DONE = frozenset({"processed", "ignored"})
MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True, slots=True)
class EventResult:
    """What receiving an event did.

    Attributes:
        status: ``processed``, ``ignored``, ``deferred`` or ``duplicate`` (seen and done before:
            nothing was changed).
        outcome: a short description for people.
        payment_id: the payment it concerned, if known.
    """

    status: str
    outcome: str
    payment_id: str | None = None


def _insert_failed(event: dict[str, Any], last_error: str | None = None) -> Insert:
    """An insert of the event's first delivery as ``failed`` (what it stays if processing fails).

    Args:
        event: the verified provider event.
        last_error: why its processing failed (None: not processed yet).
    """
    return insert(PaymentEvent).values(
        id=event["id"],
        provider="stripe",
        type=str(event.get("type", "")),
        status="failed",
        outcome="",
        object_id=object_id(event_object(event).get("id")),
        livemode=bool(event.get("livemode", False)),
        provider_created_at=created_at(event),
        payload=event,
        attempts=1,
        last_error=last_error,
    )


def _claim(session: Session, event: dict[str, Any]) -> str | None:
    """Insert the event row, or lock the existing one.

    Its status before this delivery (None when new).
    """
    row: Any = session.execute(
        _insert_failed(event)
        .on_conflict_do_update(
            index_elements=[PaymentEvent.id],
            set_={"attempts": PaymentEvent.attempts + 1},
        )
        .returning(PaymentEvent.status, literal_column("(xmax = 0)").label("inserted"))
    ).one()
    return None if row.inserted else str(row.status)


def _record(session: Session, event_id: str, applied: Applied) -> None:
    session.execute(
        update(PaymentEvent)
        .where(PaymentEvent.id == event_id)
        .values(
            status=applied.status,
            outcome=applied.outcome[:MAX_ERROR_LENGTH],
            payment_id=applied.payment.id if applied.payment else None,
            payment_intent_id=applied.payment_intent_id,
            last_error=None,
            processed_at=utcnow(),
        )
    )


def _replay_deferred(session: Session, payment: Payment) -> list[str]:
    """Apply events that waited for this payment (in the provider's order).

    Each in a savepoint, so one that fails is marked failed (and retried later) without undoing the
    payment.
    """
    if not payment.payment_intent_id:
        return []
    rows = session.scalars(
        select(PaymentEvent)
        .where(
            PaymentEvent.status == "deferred",
            PaymentEvent.payment_intent_id == payment.payment_intent_id,
        )
        .order_by(PaymentEvent.provider_created_at, PaymentEvent.id)
        .with_for_update(skip_locked=True)
    ).all()
    done = []
    for row in rows:
        try:
            with session.begin_nested():
                applied = apply_event(session, dict(row.payload))
                _record(session, row.id, applied)
            done.append(row.id)
        except Exception as exc:
            log.exception("deferred event %s failed", row.id)
            _mark_failed(session, row.id, exc)
    return done


def _mark_failed(session: Session, event_id: str, exc: BaseException) -> None:
    session.execute(
        update(PaymentEvent)
        .where(PaymentEvent.id == event_id, PaymentEvent.status.not_in(DONE))
        .values(status="failed", last_error=_describe(exc))
    )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


def _process(session: Session, event: dict[str, Any]) -> EventResult:
    applied = apply_event(session, event)
    _record(session, event["id"], applied)
    outcome = applied.outcome
    if applied.settled and applied.payment is not None:
        replayed = _replay_deferred(session, applied.payment)
        if replayed:
            outcome += f"; applied {len(replayed)} earlier event(s): {', '.join(replayed)}"
            _record(
                session,
                event["id"],
                Applied(applied.status, outcome, applied.payment, applied.payment_intent_id),
            )
    return EventResult(applied.status, outcome, applied.payment.id if applied.payment else None)


def receive_event(session: Session, event: dict[str, Any]) -> EventResult:
    """Store a verified event and apply its effect in the caller's transaction.

    A delivery of an event already processed (or ignored) changes nothing and returns status
    ``duplicate``. Raises whatever processing raises; the caller then rolls back and calls
    :func:`record_failure`.
    """
    prior = _claim(session, event)
    if prior in DONE:
        return EventResult("duplicate", f"event {event['id']} was already {prior}")
    return _process(session, event)


def record_failure(session: Session, event: dict[str, Any], exc: BaseException) -> None:
    """Store (or mark) the event as failed after its processing was rolled back.

    An event that a concurrent delivery processed meanwhile is left as it is. The caller commits.
    """
    session.execute(
        _insert_failed(event, _describe(exc)).on_conflict_do_update(
            index_elements=[PaymentEvent.id],
            set_={
                "status": "failed",
                "attempts": PaymentEvent.attempts + 1,
                "last_error": _describe(exc),
            },
            where=PaymentEvent.status.not_in(DONE),
        )
    )


def retry_failed_events(
    session: Session, *, limit: int = 50, max_attempts: int = 25
) -> dict[str, list[str]]:
    """Process again events whose processing failed (the scheduler's job; also the CLI).

    Each event in its own savepoint: one that fails again stays failed with its new error.
    """
    rows = session.scalars(
        select(PaymentEvent)
        .where(PaymentEvent.status == "failed", PaymentEvent.attempts < max_attempts)
        .order_by(PaymentEvent.provider_created_at, PaymentEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    report: dict[str, list[str]] = {"processed": [], "failed": []}
    for row in rows:
        row.attempts += 1
        session.flush()
        try:
            with session.begin_nested():
                _process(session, row.payload)
            report["processed"].append(row.id)
        except Exception as exc:
            log.warning("retry of payment event %s failed: %s", row.id, exc)
            session.execute(
                update(PaymentEvent)
                .where(PaymentEvent.id == row.id)
                .values(last_error=_describe(exc))
            )
            report["failed"].append(row.id)
    return report
