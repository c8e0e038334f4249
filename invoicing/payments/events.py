"""Provider events (webhooks): stored unique by event id in the same transaction as their effect.

:func:`receive_event` claims the event row (``INSERT ... ON CONFLICT``: a concurrent duplicate
waits for the first delivery to commit and then sees it done), applies the effect and records the
outcome; the caller commits both together. A processing failure rolls both back and
:func:`record_failure` stores the event as ``failed`` in a new transaction, so it is never marked
done without its effect; a redelivery or :func:`retry_failed_events` processes it again.

Events about a payment we cannot match yet (a refund or dispute that arrived before the
payment's completion) are stored ``deferred`` under their payment intent and applied, in the
order the provider created them, in the transaction that settles that payment.

Handled types: ``checkout.session.completed`` / ``.async_payment_succeeded`` /
``.async_payment_failed`` / ``.expired``, ``payment_intent.succeeded`` / ``.payment_failed``,
``charge.refunded``, ``charge.dispute.*`` (created, updated, closed, funds withdrawn/reinstated),
and the refund objects of ``refund.created`` / ``.updated`` / ``.failed`` and
``charge.refund.updated`` (a refund that failed is undone in our books once).
Anything else is stored as ``ignored``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import literal_column, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from invoicing.payments.models import Payment, PaymentEvent
from invoicing.payments.settlement import (
    FAILED_REFUND_STATUSES,
    InvoiceRefund,
    apply_dispute,
    apply_refund_failure,
    apply_refunded_total,
    fail_payment,
    find_payment,
    record_refund,
    refunded_total_as_of,
    settle_payment,
)
from ledger.base import utcnow
from ledger.locks import lock_key, xact_lock

log = logging.getLogger(__name__)

DONE = frozenset({"processed", "ignored"})
#: events whose object is a refund
REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)
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


@dataclass(slots=True)
class _Applied:
    status: str
    outcome: str
    payment: Payment | None = None
    payment_intent_id: str | None = None
    settled: bool = False


def _obj(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data") or {}
    obj = data.get("object") or {}
    return obj if isinstance(obj, dict) else {}


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None


def _created(event: dict[str, Any]) -> datetime | None:
    created = event.get("created")
    return datetime.fromtimestamp(int(created), UTC) if created else None


def _ours(obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    value = meta.get("tw_payment_id") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _payment_intent_of(etype: str, obj: dict[str, Any]) -> str | None:
    if etype.startswith("payment_intent."):
        return _id(obj.get("id"))
    return _id(obj.get("payment_intent"))


def _serialize_on(session: Session, payment_intent_id: str | None) -> None:
    """Events about one payment intent apply one at a time (a transaction-level advisory
    lock): a refund or dispute that arrives while the payment is being settled waits for the
    settlement to commit and then finds the payment, instead of deferring itself after the
    settlement already looked for deferred events."""
    if payment_intent_id:
        xact_lock(session, [lock_key("stripe-payment-intent", payment_intent_id)])


def _settled_outcome(payment: Payment, settled: bool) -> str:
    if payment.purpose != "invoice":
        return "credited" if settled else "already credited"
    if not settled:
        return "invoice payment already recorded"
    outcome = f"invoice {payment.purpose_ref} payment recorded"
    return f"{outcome}; {payment.fulfillment_error}" if payment.fulfillment_error else outcome


def _apply(session: Session, event: dict[str, Any]) -> _Applied:
    """Apply one event's effect (no commit)."""
    etype = str(event.get("type", ""))
    obj = _obj(event)
    at = _created(event) or utcnow()
    _serialize_on(session, _payment_intent_of(etype, obj))
    if etype.startswith("checkout.session."):
        payment = find_payment(
            session,
            payment_id=_ours(obj) or obj.get("client_reference_id"),
            checkout_session_id=obj.get("id"),
        )
        pi = _id(obj.get("payment_intent"))
        if payment is None:
            return _Applied("ignored", "not a tokenwallet checkout", payment_intent_id=pi)
        if etype in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
            if obj.get("payment_status") not in ("paid", "no_payment_required"):
                if pi and not payment.payment_intent_id:
                    payment.payment_intent_id = pi
                return _Applied(
                    "processed",
                    f"checkout complete, payment {obj.get('payment_status')}: waiting"
                    " for the asynchronous payment",
                    payment,
                    pi,
                )
            settled = settle_payment(
                session,
                payment,
                amount_minor=int(obj.get("amount_total") or 0),
                currency=str(obj.get("currency") or ""),
                payment_intent_id=pi,
                at=at,
            )
            return _Applied("processed", _settled_outcome(payment, settled), payment, pi, settled)
        if etype in ("checkout.session.async_payment_failed", "checkout.session.expired"):
            status = "expired" if etype.endswith("expired") else "failed"
            changed = fail_payment(session, payment, status=status, payment_intent_id=pi)
            return _Applied(
                "processed", f"payment {status}" if changed else "already settled", payment, pi
            )
        return _Applied("ignored", f"{etype} needs no action", payment, pi)
    if etype.startswith("payment_intent."):
        pi = _id(obj.get("id"))
        payment = find_payment(session, payment_id=_ours(obj), payment_intent_id=pi)
        if payment is None:
            return _Applied("ignored", "not a tokenwallet payment", payment_intent_id=pi)
        if etype == "payment_intent.succeeded":
            settled = settle_payment(
                session,
                payment,
                amount_minor=int(obj.get("amount_received") or 0),
                currency=str(obj.get("currency") or ""),
                payment_intent_id=pi,
                charge_id=_id(obj.get("latest_charge")),
                at=at,
            )
            return _Applied("processed", _settled_outcome(payment, settled), payment, pi, settled)
        if etype == "payment_intent.payment_failed":
            error = obj.get("last_payment_error") or {}
            changed = fail_payment(
                session,
                payment,
                code=error.get("decline_code") or error.get("code"),
                message=error.get("message"),
                payment_intent_id=pi,
            )
            return _Applied(
                "processed", "payment failed" if changed else "already settled", payment, pi
            )
        return _Applied("ignored", f"{etype} needs no action", payment, pi)
    if etype == "charge.refunded":
        pi = _id(obj.get("payment_intent"))
        payment = find_payment(
            session, payment_id=_ours(obj), payment_intent_id=pi, charge_id=obj.get("id")
        )
        if payment is None:
            if pi:
                return _Applied("deferred", f"waiting for payment intent {pi}", None, pi)
            return _Applied("ignored", "not a tokenwallet charge")
        settled = False
        if payment.status != "succeeded":
            if not (obj.get("paid") and obj.get("status") == "succeeded"):
                return _Applied("deferred", "the payment has not succeeded yet", payment, pi)
            settled = settle_payment(
                session,
                payment,
                amount_minor=int(obj.get("amount_captured") or obj.get("amount") or 0),
                currency=str(obj.get("currency") or ""),
                payment_intent_id=pi,
                charge_id=obj.get("id"),
                at=at,
            )
        total = refunded_total_as_of(session, payment, int(obj.get("amount_refunded") or 0), at)
        refund = apply_refunded_total(session, payment, total, at=at)
        outcome = "credited, then " if settled else ""
        if refund is None:
            outcome += "refund already applied"
        elif isinstance(refund, InvoiceRefund):
            outcome += f"refunded: invoice {refund.invoice_id} owes {refund.reopened} again" + (
                f", paid credit reversed {refund.refunded}" if refund.refunded.atoms else ""
            )
            outcome += f", receivable {refund.receivable}" if refund.receivable else ""
        else:
            outcome += (
                f"refunded {refund.refunded}, bonus clawed back {refund.bonus_clawed_back}"
                + (f", receivable {refund.receivable}" if refund.receivable else "")
            )
        return _Applied("processed", outcome, payment, pi, settled)
    if etype in REFUND_EVENTS:
        pi = _id(obj.get("payment_intent"))
        payment = find_payment(
            session, payment_id=_ours(obj), payment_intent_id=pi, charge_id=_id(obj.get("charge"))
        )
        if payment is None:
            if pi:
                return _Applied("deferred", f"waiting for payment intent {pi}", None, pi)
            return _Applied("ignored", "not a tokenwallet refund")
        if payment.status != "succeeded":
            return _Applied("deferred", "the payment has not succeeded yet", payment, pi)
        if etype == "refund.failed" or obj.get("status") in FAILED_REFUND_STATUSES:
            failure = apply_refund_failure(session, payment, obj, at=at)
            if failure.already:
                return _Applied(
                    "processed", f"refund {failure.refund_id} failure already undone", payment, pi
                )
            restored = ", ".join(f"{k} {v}" for k, v in failure.restored.items())
            return _Applied(
                "processed",
                f"refund {failure.refund_id} failed: {failure.undone} undone ({restored})",
                payment,
                pi,
            )
        row = record_refund(session, payment, obj)
        return _Applied("processed", f"refund {row.id} is {row.status}", payment, pi)
    if etype.startswith("charge.dispute."):
        pi = _id(obj.get("payment_intent"))
        payment = find_payment(session, payment_intent_id=pi, charge_id=_id(obj.get("charge")))
        if payment is None:
            if pi:
                return _Applied("deferred", f"waiting for payment intent {pi}", None, pi)
            return _Applied("ignored", "not a tokenwallet charge")
        if payment.status != "succeeded":
            return _Applied("deferred", "the payment has not succeeded yet", payment, pi)
        return _Applied("processed", apply_dispute(session, payment, obj, at=at), payment, pi)
    return _Applied("ignored", f"{etype or 'untyped event'} is not handled")


def _claim(session: Session, event: dict[str, Any]) -> str | None:
    """Insert the event row, or lock the existing one; its status before this delivery (None
    when new)."""
    obj = _obj(event)
    row: Any = session.execute(
        insert(PaymentEvent)
        .values(
            id=event["id"],
            provider="stripe",
            type=str(event.get("type", "")),
            status="failed",
            outcome="",
            object_id=_id(obj.get("id")),
            livemode=bool(event.get("livemode", False)),
            provider_created_at=_created(event),
            payload=event,
            attempts=1,
        )
        .on_conflict_do_update(
            index_elements=[PaymentEvent.id],
            set_={"attempts": PaymentEvent.attempts + 1},
        )
        .returning(PaymentEvent.status, literal_column("(xmax = 0)").label("inserted"))
    ).one()
    return None if row.inserted else str(row.status)


def _record(session: Session, event_id: str, applied: _Applied) -> None:
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
    """Apply events that waited for this payment (in the provider's order); each in a savepoint,
    so one that fails is marked failed (and retried later) without undoing the payment."""
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
                applied = _apply(session, dict(row.payload))
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
    applied = _apply(session, event)
    _record(session, event["id"], applied)
    outcome = applied.outcome
    if applied.settled and applied.payment is not None:
        replayed = _replay_deferred(session, applied.payment)
        if replayed:
            outcome += f"; applied {len(replayed)} earlier event(s): {', '.join(replayed)}"
            _record(
                session,
                event["id"],
                _Applied(applied.status, outcome, applied.payment, applied.payment_intent_id),
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
    """Store (or mark) the event as failed after its processing was rolled back, unless a
    concurrent delivery processed it meanwhile. The caller commits."""
    session.execute(
        insert(PaymentEvent)
        .values(
            id=event["id"],
            provider="stripe",
            type=str(event.get("type", "")),
            status="failed",
            outcome="",
            object_id=_id(_obj(event).get("id")),
            livemode=bool(event.get("livemode", False)),
            provider_created_at=_created(event),
            payload=event,
            attempts=1,
            last_error=_describe(exc),
        )
        .on_conflict_do_update(
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
