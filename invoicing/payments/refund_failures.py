"""Refunds the provider reports.

Remembered by id with their status, and undone in our books (once) when they fail.

A refund is applied as part of the provider's cumulative refunded amount
(:func:`invoicing.payments.settlement.apply_refunded_total`); each application records the
ledger entries it wrote (``parts``), so a refund that fails later is undone by undoing the
latest applications, last entry first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoicing.invoice_payments import restore_payment
from invoicing.payments.models import Payment, PaymentRefund, PaymentRefundApplication
from invoicing.payments.settlement import apply_refunded_total, card_metadata, lock_payment_invoice
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.units import unit as unit_of
from wallet.accounts import get_account
from wallet.outbox import emit
from wallet.refunds import undo_refund
from wallet.topups import create_pending_topup, settle_topup

log = logging.getLogger(__name__)


#: Provider refund statuses after which the money is back with us (nothing was refunded).
FAILED_REFUND_STATUSES = frozenset({"failed"})


def _remember_refund(session: Session, payment: Payment, refund: dict[str, Any]) -> PaymentRefund:
    """The refund's row (created on first sight), locked."""
    row = session.scalars(
        select(PaymentRefund).where(PaymentRefund.id == refund["id"]).with_for_update()
    ).one_or_none()
    created = refund.get("created")
    if row is None:
        row = PaymentRefund(
            id=str(refund["id"]),
            payment_id=payment.id,
            amount_minor=int(refund["amount"]),
            currency=str(refund.get("currency") or payment.currency).upper(),
            # a refund first seen failing was applied as succeeded (its failure is applied next)
            status=(
                "succeeded"
                if refund.get("status") in FAILED_REFUND_STATUSES
                else str(refund.get("status") or "pending")
            ),
            provider_created_at=datetime.fromtimestamp(int(created), UTC) if created else None,
            undone_minor=0,
            undo_entry_ids=[],
        )
        session.add(row)
        session.flush()
    return row


def record_refund(session: Session, payment: Payment, refund: dict[str, Any]) -> PaymentRefund:
    """Remember a refund the provider reported (by id, with its status) that has not failed."""
    row = _remember_refund(session, payment, refund)
    if row.status not in FAILED_REFUND_STATUSES:
        row.status = str(refund.get("status") or row.status)
        row.updated_at = utcnow()
    session.flush()
    return row


def refunded_total_as_of(session: Session, payment: Payment, total_minor: int, at: datetime) -> int:
    """The refunded total of a snapshot, less the refunds it counted that failed after it.

    ``total_minor`` is the provider's cumulative refunded amount in a ``charge.refunded`` snapshot
    taken at ``at``. Refunds it still counted that failed after it (created by then, failed since)
    are taken off: the snapshot is older than their failure, which our books already applied.
    """
    stale = session.scalar(
        select(func.coalesce(func.sum(PaymentRefund.amount_minor), 0)).where(
            PaymentRefund.payment_id == payment.id,
            PaymentRefund.status == "failed",
            PaymentRefund.failed_at > at,
            (PaymentRefund.provider_created_at.is_(None))
            | (PaymentRefund.provider_created_at <= at),
        )
    )
    return max(total_minor - int(stale or 0), 0)


@dataclass(frozen=True, slots=True)
class RefundFailure:
    """What a failed refund undid.

    ``undone`` came back into our books (at most what had been applied of it), of which
    ``reapplied`` was applied again (later refunds the undone steps also carried); ``restored`` says
    per kind what the customer got back.
    """

    refund_id: str
    undone: Amount
    restored: dict[str, str]
    already: bool = False


def _undo_application(
    session: Session,
    payment: Payment,
    app: PaymentRefundApplication,
    *,
    reason: str,
    at: datetime,
    totals: dict[str, int],
) -> list[int]:
    """Undo one application's entries, last first; add what came back to ``totals``."""
    entries: list[int] = []
    unit = unit_of(payment.currency)
    for part in reversed(app.parts):
        key = f"refund-undo:{part['entry_id']}"
        if part["kind"] == "topup":
            undone = undo_refund(
                session,
                str(part["topup_id"]),
                int(part["entry_id"]),
                idempotency_key=key,
                reason=reason,
                effective_at=at,
            )
            totals["paid"] += undone.paid.atoms
            totals["bonus"] += undone.bonus.atoms
            totals["debt_cancelled"] += undone.debt_cancelled.atoms
            if undone.entry_id is not None:
                entries.append(undone.entry_id)
        else:
            wanted = Amount(int(part["amount"]), unit)
            taken, entry_id = restore_payment(
                session,
                str(part["invoice_payment_id"]),
                wanted,
                key=key,
                reason=reason,
                at=at,
                metadata=card_metadata(payment),
            )
            totals["invoice"] += taken.atoms
            if entry_id is not None:
                entries.append(entry_id)
            rest = wanted - taken
            if rest.atoms:
                # the invoice no longer owes it (paid or credited meanwhile): paid credit
                get_account(session, payment.account_id, lock=True)
                started = create_pending_topup(
                    session,
                    payment.account_id,
                    amount=rest,
                    method="stripe",
                    reference=f"card payment {payment.id}: refund failed, invoice settled since",
                    idempotency_key=f"{key}:credit",
                )
                settle_topup(session, started.topup.id, with_bonus=False, effective_at=at)
                totals["paid"] += rest.atoms
    app.undone_at = at
    return entries


def _undo_latest(
    session: Session,
    payment: Payment,
    wanted: int,
    *,
    reason: str,
    at: datetime,
    totals: dict[str, int],
) -> tuple[int, list[int]]:
    """Undo the payment's latest refund applications until they cover ``wanted`` (minor units).

    What they undid (minor units, possibly more than wanted) and the entries written.
    """
    entry_ids: list[int] = []
    undone = 0
    apps = session.scalars(
        select(PaymentRefundApplication)
        .where(
            PaymentRefundApplication.payment_id == payment.id,
            PaymentRefundApplication.undone_at.is_(None),
        )
        .order_by(PaymentRefundApplication.id.desc())
        .with_for_update()
    ).all()
    for app in apps:
        if undone >= wanted:
            break
        entry_ids += _undo_application(session, payment, app, reason=reason, at=at, totals=totals)
        undone += app.delta_minor
    return undone, entry_ids


def _emit_refund_failed(
    session: Session, payment: Payment, row: PaymentRefund, restored: dict[str, str]
) -> None:
    """Queue the operator event ``payment.refund_failed`` (once per refund)."""
    unit = unit_of(payment.currency)
    emit(
        session,
        account_id=payment.account_id,
        type="payment.refund_failed",
        data={
            "payment_id": payment.id,
            "refund_id": row.id,
            "amount": {
                "amount": Amount.of_minor(row.amount_minor, unit).format(),
                "currency": unit.code,
            },
            "undone": Amount.of_minor(row.undone_minor, unit).format(),
            "failure_reason": row.failure_reason,
            "restored": restored,
            "purpose": payment.purpose,
            "purpose_ref": payment.purpose_ref,
        },
        dedupe_key=f"refund-failed:{row.id}",
    )


def apply_refund_failure(
    session: Session, payment: Payment, refund: dict[str, Any], *, at: datetime | None = None
) -> RefundFailure:
    """Undo, exactly once per refund, what a refund that failed at the provider did in our books.

    The failure comes as ``refund.failed``, or as ``charge.refund.updated`` / ``refund.updated``
    with status ``failed``: the money is back in our balance.

    The refund was applied as part of the provider's cumulative refunded amount; the latest
    applications are undone (credit restored with its bonus, debts cancelled, an invoice payment
    recorded again, cash debited back) until they cover the refund, and whatever those carried
    beyond it (a later refund that did not fail) is applied again. An operator event
    ``payment.refund_failed`` is queued.

    The caller holds the payment row (``find_payment`` locks it).
    """
    when = at or utcnow()
    unit = unit_of(payment.currency)
    row = _remember_refund(session, payment, refund)
    if row.status in FAILED_REFUND_STATUSES:
        return RefundFailure(row.id, Amount.of_minor(row.undone_minor, unit), {}, already=True)
    reason_text = str(refund.get("failure_reason") or "unknown")
    row.status, row.failed_at, row.failure_reason = "failed", when, reason_text
    row.updated_at = utcnow()
    session.flush()
    wanted = min(row.amount_minor, payment.refunded_minor)
    reason = f"refund {row.id} failed ({reason_text})"
    if payment.purpose == "invoice":
        lock_payment_invoice(session, payment)  # the invoice row before any wallet row
    totals = {"paid": 0, "bonus": 0, "debt_cancelled": 0, "invoice": 0}
    undone, entry_ids = _undo_latest(
        session, payment, wanted, reason=reason, at=when, totals=totals
    )
    undone = min(undone, payment.refunded_minor)
    payment.refunded_minor -= undone
    over = undone - wanted
    if over > 0:
        apply_refunded_total(
            session,
            payment,
            payment.refunded_minor + over,
            at=when,
            reason=f"refunds applied again after refund {row.id} failed",
        )
    row.undone_minor = min(wanted, undone)
    row.undo_entry_ids = entry_ids
    payment.updated_at = utcnow()
    restored = {k: Amount(v, unit).format() for k, v in totals.items()}
    _emit_refund_failed(session, payment, row, restored)
    log.warning("payment %s: %s; undone %s in our books", payment.id, reason, row.undone_minor)
    session.flush()
    return RefundFailure(row.id, Amount.of_minor(row.undone_minor, unit), restored)
