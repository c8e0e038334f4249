"""What each provider event does: a table of event type -> handler (no commit).

Handled types: ``checkout.session.completed`` / ``.async_payment_succeeded`` /
``.async_payment_failed`` / ``.expired``, ``payment_intent.succeeded`` / ``.payment_failed``,
``charge.refunded``, ``charge.dispute.*`` (created, updated, closed, funds withdrawn/reinstated),
and the refund objects of ``refund.created`` / ``.updated`` / ``.failed`` and
``charge.refund.updated`` (a refund that failed is undone in our books once); other
``checkout.session.*`` and ``payment_intent.*`` types of our payments need no action.

:func:`apply_event` serializes on the event's payment intent, looks the type up in
:data:`HANDLERS` (then by family prefix in :data:`FAMILY_HANDLERS`) and runs the handler; a type
in neither is ``ignored``. Each family finds the payment its own way (checkout session, payment
intent, charge); refunds and disputes of a payment we cannot match yet, or that has not
succeeded yet, are ``deferred`` until the payment settles (invoicing/payments/events.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from invoicing.payments.disputes import apply_dispute
from invoicing.payments.models import Payment
from invoicing.payments.refund_failures import (
    FAILED_REFUND_STATUSES,
    apply_refund_failure,
    record_refund,
    refunded_total_as_of,
)
from invoicing.payments.settlement import (
    InvoiceRefund,
    apply_refunded_total,
    fail_payment,
    find_payment,
    settle_payment,
)
from ledger.base import utcnow
from ledger.locks import lock_key, xact_lock
from wallet.refunds import Refund


@dataclass(slots=True)
class Applied:
    """What applying an event did.

    Its stored status and outcome, and the payment it concerned (``settled``: this event settled the
    payment, so events deferred for it apply now).
    """

    status: str
    outcome: str
    payment: Payment | None = None
    payment_intent_id: str | None = None
    settled: bool = False


@dataclass(frozen=True, slots=True)
class _Event:
    """One event being applied: its type, its object and when the provider created it."""

    session: Session
    type: str
    obj: dict[str, Any]
    at: datetime


Handler = Callable[[_Event], Applied]
#: the second step of a family's handler, once its payment is found
Step = Callable[[_Event, Payment, str | None], Applied]


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    """The event's ``data.object`` (an empty dict when missing or not an object)."""
    data = event.get("data") or {}
    obj = data.get("object") or {}
    return obj if isinstance(obj, dict) else {}


def object_id(value: Any) -> str | None:
    """The id of an expanded object (``{"id": ...}``) or of an id string; else None."""
    if isinstance(value, dict):
        return value.get("id")
    return value if isinstance(value, str) else None


def created_at(event: dict[str, Any]) -> datetime | None:
    """When the provider created the event (None when it does not say)."""
    created = event.get("created")
    return datetime.fromtimestamp(int(created), UTC) if created else None


def _ours(obj: dict[str, Any]) -> str | None:
    meta = obj.get("metadata") or {}
    value = meta.get("tw_payment_id") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _payment_intent_of(etype: str, obj: dict[str, Any]) -> str | None:
    if etype.startswith("payment_intent."):
        return object_id(obj.get("id"))
    return object_id(obj.get("payment_intent"))


def _serialize_on(session: Session, payment_intent_id: str | None) -> None:
    """Events about one payment intent apply one at a time (a transaction-level advisory lock).

    A refund or dispute that arrives while the payment is being settled waits for the settlement to
    commit and then finds the payment, instead of deferring itself after the settlement already
    looked for deferred events.
    """
    if payment_intent_id:
        xact_lock(session, [lock_key("stripe-payment-intent", payment_intent_id)])


def _settled_outcome(payment: Payment, settled: bool) -> str:
    if payment.purpose != "invoice":
        return "credited" if settled else "already credited"
    if not settled:
        return "invoice payment already recorded"
    outcome = f"invoice {payment.purpose_ref} payment recorded"
    return f"{outcome}; {payment.fulfillment_error}" if payment.fulfillment_error else outcome


def _no_action(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    return Applied("ignored", f"{ev.type} needs no action", payment, pi)


# -- finding the payment, by family ------------------------------------------------------------


def _checkout(step: Step) -> Handler:
    """A ``checkout.session.*`` handler: the payment by our id or the checkout session."""

    def handle(ev: _Event) -> Applied:
        payment = find_payment(
            ev.session,
            payment_id=_ours(ev.obj) or ev.obj.get("client_reference_id"),
            checkout_session_id=ev.obj.get("id"),
        )
        pi = object_id(ev.obj.get("payment_intent"))
        if payment is None:
            return Applied("ignored", "not a tokenwallet checkout", payment_intent_id=pi)
        return step(ev, payment, pi)

    return handle


def _intent(step: Step) -> Handler:
    """A ``payment_intent.*`` handler: the payment by our id or the payment intent."""

    def handle(ev: _Event) -> Applied:
        pi = object_id(ev.obj.get("id"))
        payment = find_payment(ev.session, payment_id=_ours(ev.obj), payment_intent_id=pi)
        if payment is None:
            return Applied("ignored", "not a tokenwallet payment", payment_intent_id=pi)
        return step(ev, payment, pi)

    return handle


def _charge(
    step: Step,
    find: Callable[[_Event, str | None], Payment | None],
    not_ours: str,
    *,
    wait_for_success: bool = True,
) -> Handler:
    """A handler of a charge's refund or dispute.

    Deferred while its payment is unknown (or, with ``wait_for_success``, has not succeeded yet).
    """

    def handle(ev: _Event) -> Applied:
        pi = object_id(ev.obj.get("payment_intent"))
        payment = find(ev, pi)
        if payment is None:
            if pi:
                return Applied("deferred", f"waiting for payment intent {pi}", None, pi)
            return Applied("ignored", not_ours)
        if wait_for_success and payment.status != "succeeded":
            return Applied("deferred", "the payment has not succeeded yet", payment, pi)
        return step(ev, payment, pi)

    return handle


def _by_charge(ev: _Event, pi: str | None) -> Payment | None:
    """A charge object's payment: by our id, its payment intent or the charge itself."""
    return find_payment(
        ev.session, payment_id=_ours(ev.obj), payment_intent_id=pi, charge_id=ev.obj.get("id")
    )


def _by_refund(ev: _Event, pi: str | None) -> Payment | None:
    """A refund object's payment: by our id, its payment intent or its charge."""
    charge_id = object_id(ev.obj.get("charge"))
    return find_payment(
        ev.session, payment_id=_ours(ev.obj), payment_intent_id=pi, charge_id=charge_id
    )


def _by_dispute(ev: _Event, pi: str | None) -> Payment | None:
    """A dispute object's payment: by its payment intent or its charge."""
    return find_payment(ev.session, payment_intent_id=pi, charge_id=object_id(ev.obj.get("charge")))


# -- the steps ---------------------------------------------------------------------------------


def _checkout_completed(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A completed checkout settles the payment, unless its payment is asynchronous."""
    if ev.obj.get("payment_status") not in ("paid", "no_payment_required"):
        if pi and not payment.payment_intent_id:
            payment.payment_intent_id = pi
        return Applied(
            "processed",
            f"checkout complete, payment {ev.obj.get('payment_status')}: waiting"
            " for the asynchronous payment",
            payment,
            pi,
        )
    settled = settle_payment(
        ev.session,
        payment,
        amount_minor=int(ev.obj.get("amount_total") or 0),
        currency=str(ev.obj.get("currency") or ""),
        payment_intent_id=pi,
        at=ev.at,
    )
    return Applied("processed", _settled_outcome(payment, settled), payment, pi, settled)


def _checkout_failed(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A failed asynchronous payment or an expired checkout ends the payment."""
    status = "expired" if ev.type.endswith("expired") else "failed"
    changed = fail_payment(ev.session, payment, status=status, payment_intent_id=pi)
    return Applied("processed", f"payment {status}" if changed else "already settled", payment, pi)


def _intent_succeeded(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A payment intent that succeeded settles the payment."""
    settled = settle_payment(
        ev.session,
        payment,
        amount_minor=int(ev.obj.get("amount_received") or 0),
        currency=str(ev.obj.get("currency") or ""),
        payment_intent_id=pi,
        charge_id=object_id(ev.obj.get("latest_charge")),
        at=ev.at,
    )
    return Applied("processed", _settled_outcome(payment, settled), payment, pi, settled)


def _intent_failed(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A payment intent that failed ends the payment with the decline's code and message."""
    error = ev.obj.get("last_payment_error") or {}
    changed = fail_payment(
        ev.session,
        payment,
        code=error.get("decline_code") or error.get("code"),
        message=error.get("message"),
        payment_intent_id=pi,
    )
    return Applied("processed", "payment failed" if changed else "already settled", payment, pi)


def _refund_outcome(refund: Refund | InvoiceRefund | None) -> str:
    """How a refunded total was applied, for people."""
    if refund is None:
        return "refund already applied"
    receivable = f", receivable {refund.receivable}" if refund.receivable else ""
    if isinstance(refund, InvoiceRefund):
        paid = f", paid credit reversed {refund.refunded}" if refund.refunded.atoms else ""
        return (
            f"refunded: invoice {refund.invoice_id} owes {refund.reopened} again{paid}{receivable}"
        )
    return f"refunded {refund.refunded}, bonus clawed back {refund.bonus_clawed_back}{receivable}"


def _charge_refunded(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A charge's refunded total: settle the payment first if the charge shows it paid."""
    obj, settled = ev.obj, False
    if payment.status != "succeeded":
        if not (obj.get("paid") and obj.get("status") == "succeeded"):
            return Applied("deferred", "the payment has not succeeded yet", payment, pi)
        settled = settle_payment(
            ev.session,
            payment,
            amount_minor=int(obj.get("amount_captured") or obj.get("amount") or 0),
            currency=str(obj.get("currency") or ""),
            payment_intent_id=pi,
            charge_id=obj.get("id"),
            at=ev.at,
        )
    total = refunded_total_as_of(ev.session, payment, int(obj.get("amount_refunded") or 0), ev.at)
    refund = apply_refunded_total(ev.session, payment, total, at=ev.at)
    outcome = ("credited, then " if settled else "") + _refund_outcome(refund)
    return Applied("processed", outcome, payment, pi, settled)


def _refund_changed(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A refund object changed: record it; a refund that failed is undone in our books once."""
    if ev.type == "refund.failed" or ev.obj.get("status") in FAILED_REFUND_STATUSES:
        failure = apply_refund_failure(ev.session, payment, ev.obj, at=ev.at)
        if failure.already:
            outcome = f"refund {failure.refund_id} failure already undone"
        else:
            restored = ", ".join(f"{k} {v}" for k, v in failure.restored.items())
            outcome = f"refund {failure.refund_id} failed: {failure.undone} undone ({restored})"
        return Applied("processed", outcome, payment, pi)
    row = record_refund(ev.session, payment, ev.obj)
    return Applied("processed", f"refund {row.id} is {row.status}", payment, pi)


def _dispute(ev: _Event, payment: Payment, pi: str | None) -> Applied:
    """A dispute was opened, changed or closed."""
    return Applied("processed", apply_dispute(ev.session, payment, ev.obj, at=ev.at), payment, pi)


#: events whose object is a refund
REFUND_EVENTS = frozenset(
    {"charge.refund.updated", "refund.created", "refund.updated", "refund.failed"}
)
_REFUND = _charge(_refund_changed, _by_refund, "not a tokenwallet refund")

#: event type -> handler
HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _checkout(_checkout_completed),
    "checkout.session.async_payment_succeeded": _checkout(_checkout_completed),
    "checkout.session.async_payment_failed": _checkout(_checkout_failed),
    "checkout.session.expired": _checkout(_checkout_failed),
    "payment_intent.succeeded": _intent(_intent_succeeded),
    "payment_intent.payment_failed": _intent(_intent_failed),
    "charge.refunded": _charge(
        _charge_refunded, _by_charge, "not a tokenwallet charge", wait_for_success=False
    ),
    **dict.fromkeys(sorted(REFUND_EVENTS), _REFUND),
}

#: type prefix -> handler of the other types of a family (in this order)
FAMILY_HANDLERS: tuple[tuple[str, Handler], ...] = (
    ("checkout.session.", _checkout(_no_action)),
    ("payment_intent.", _intent(_no_action)),
    ("charge.dispute.", _charge(_dispute, _by_dispute, "not a tokenwallet charge")),
)


def _handler_of(etype: str) -> Handler | None:
    """The handler of an event type: its own, else its family's; None when not handled."""
    if etype in HANDLERS:
        return HANDLERS[etype]
    return next((h for prefix, h in FAMILY_HANDLERS if etype.startswith(prefix)), None)


def apply_event(session: Session, event: dict[str, Any]) -> Applied:
    """Apply one event's effect (no commit).

    Serialize on its payment intent, then run the handler of its type (``ignored`` when it has
    none).
    """
    etype = str(event.get("type", ""))
    obj = event_object(event)
    at = created_at(event) or utcnow()
    _serialize_on(session, _payment_intent_of(etype, obj))
    handler = _handler_of(etype)
    if handler is None:
        return Applied("ignored", f"{etype or 'untyped event'} is not handled")
    return handler(_Event(session, etype, obj, at))
