"""What a confirmed, failed or refunded card payment does to the wallet.

Or, for an invoice payment, to the invoice: recorded when confirmed, owed again when refunded.
Disputes are in invoicing/payments/disputes.py, refunds the provider reports (and their failures) in
invoicing/payments/refund_failures.py; both build on the helpers here.

Every function here takes the payment row locked (``FOR UPDATE``), so events about the same
payment, and finance refunds, apply one after the other. Each one brings our state up to the
state the provider reports (paid or not, cumulative amount refunded, dispute status and the
funds it moved), so a repeated or late event changes nothing and events arriving out of order
end in the same state. Invoice payments lock the invoice row next, before any wallet row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from invoicing.invoice_payments import (
    record_payment,
    reverse_payment,
)
from invoicing.lifecycle import open_balance
from invoicing.models import Invoice, InvoicePayment
from invoicing.payments.errors import PaymentMismatch
from invoicing.payments.models import (
    Payment,
    PaymentRefund,
    PaymentRefundApplication,
)
from ledger.amounts import Amount
from ledger.base import lock_row, utcnow
from ledger.errors import DomainError
from ledger.units import unit as unit_of
from wallet.accounts import get_account
from wallet.burn_order import MONEY_KINDS
from wallet.lots import open_lots
from wallet.models import Topup
from wallet.packages import buy_package
from wallet.refunds import Refund, reverse_topup, unspent_paid
from wallet.subscriptions import start_subscription
from wallet.topups import create_pending_topup, fail_topup, settle_topup

log = logging.getLogger(__name__)


def find_payment(
    session: Session,
    *,
    payment_id: str | None = None,
    checkout_session_id: str | None = None,
    payment_intent_id: str | None = None,
    charge_id: str | None = None,
    lock: bool = True,
) -> Payment | None:
    """The payment any of the given references names (first match wins), locked."""
    for column, value in (
        (Payment.id, payment_id),
        (Payment.checkout_session_id, checkout_session_id),
        (Payment.payment_intent_id, payment_intent_id),
        (Payment.charge_id, charge_id),
    ):
        if not value:
            continue
        stmt = select(Payment).where(column == value)
        if lock:
            stmt = stmt.with_for_update()
        found = session.scalars(stmt).one_or_none()
        if found is not None:
            return found
    return None


def _remember(payment: Payment, *, payment_intent_id: str | None, charge_id: str | None) -> None:
    if payment_intent_id and not payment.payment_intent_id:
        payment.payment_intent_id = payment_intent_id
    if charge_id and not payment.charge_id:
        payment.charge_id = charge_id


def settle_payment(
    session: Session,
    payment: Payment,
    *,
    amount_minor: int,
    currency: str,
    payment_intent_id: str | None,
    charge_id: str | None = None,
    at: datetime | None = None,
) -> bool:
    """The provider says the payment succeeded.

    Credit the wallet (and make the purchase), or, for an invoice payment, record it on the invoice
    (:func:`_pay_invoice`).

    Returns:
        True when this call credited it; False when it was already settled.

    Raises:
        PaymentMismatch: the provider's amount or currency is not what we asked for (nothing is
            credited; the event stays failed for a person to look at).
    """
    _remember(payment, payment_intent_id=payment_intent_id, charge_id=charge_id)
    if payment.status == "succeeded":
        return False
    if currency.upper() != payment.currency or amount_minor != payment.amount_minor:
        raise PaymentMismatch(
            f"payment {payment.id} asked for {payment.amount_minor} {payment.currency} (minor"
            f" units); the provider reports {amount_minor} {currency.upper()}"
        )
    when = at or utcnow()
    if payment.purpose == "invoice":
        _pay_invoice(session, payment, when)
    else:
        assert payment.topup_id is not None  # the check constraint topup_unless_invoice
        if payment.purpose != "topup":
            # Lock order of the wallet: account row, then its lots, then ledger accounts. The
            # purchase below needs the first two, so take them before crediting touches the
            # ledger.
            get_account(session, payment.account_id, lock=True)
            open_lots(session, payment.account_id, sorted(MONEY_KINDS), lock=True)
        settle_topup(
            session, payment.topup_id, with_bonus=payment.purpose == "topup", effective_at=when
        )
    payment.status, payment.succeeded_at, payment.updated_at = "succeeded", when, utcnow()
    payment.failure_code = payment.failure_message = None
    _fulfil(session, payment, utcnow())
    session.flush()
    return True


def lock_payment_invoice(session: Session, payment: Payment) -> Invoice:
    """The invoice an invoice payment pays, locked.

    Taken before any wallet lock: the order of every invoice path is invoice row, then account row,
    then ledger accounts.
    """
    return lock_row(session, Invoice, payment.purpose_ref)


def card_metadata(payment: Payment) -> dict[str, str]:
    """The ledger metadata that ties an entry to a card payment (and its payment intent)."""
    meta = {"payment_id": payment.id}
    if payment.payment_intent_id:
        meta["payment_intent_id"] = payment.payment_intent_id
    return meta


def _pay_invoice(session: Session, payment: Payment, at: datetime) -> None:
    """Record a confirmed card payment on its invoice (``cash:stripe`` -> ``receivable:invoiced``).

    The rule when the amount no longer matches what the invoice owes (it changed between the
    checkout and the payment: a bank transfer or a credit note arrived, another checkout was
    paid, the invoice was voided): what the invoice still owes is recorded as paid (a partial
    payment if it owes more), and the rest becomes the customer's paid credit (a top-up without
    bonus, ``payment.topup_id``), so no money is lost or counted twice; the reason is kept on the
    payment.
    """
    invoice = lock_payment_invoice(session, payment)
    unit = unit_of(payment.currency)
    paid = Amount(payment.amount, unit)
    owed = Amount(max(open_balance(invoice), 0), unit)
    applied = min(paid, owed)
    excess = paid - applied
    label = invoice.number or invoice.id
    if excess.atoms:
        # The wallet's lock order (account row before ledger accounts): the top-up below needs it.
        get_account(session, payment.account_id, lock=True)
    if applied.atoms:
        recorded = record_payment(
            session,
            invoice.id,
            amount=applied,
            method="stripe",
            reference=payment.payment_intent_id or payment.id,
            received_at=at,
            metadata=card_metadata(payment),
        )
        payment.fulfilled_ref = recorded.payment.id
    if excess.atoms:
        started = create_pending_topup(
            session,
            payment.account_id,
            amount=excess,
            method="stripe",
            reference=f"card payment {payment.id}: more than invoice {label} owed",
        )
        payment.topup_id = started.topup.id
        session.flush()
        settle_topup(session, started.topup.id, with_bonus=False, effective_at=at)
        why = "it is void" if invoice.status == "void" else f"it owed {owed}"
        payment.fulfillment_error = (
            f"invoice {label} could not take all of {paid} ({why} when the payment arrived):"
            f" {applied} recorded on it, {excess} kept as paid credit"
        )
        log.warning("payment %s: %s", payment.id, payment.fulfillment_error)


def _fulfil(session: Session, payment: Payment, at: datetime) -> None:
    """Buy the package or plan from the paid lot the payment just credited.

    The package's validity and the plan's first period start now, when the customer gets them. If
    the purchase cannot be made any more (plan already live, package gone...), the money stays in
    the wallet as paid credit and the reason is kept on the payment.
    """
    if payment.purpose in ("topup", "invoice") or payment.purpose_ref is None:
        return
    topup = session.get_one(Topup, payment.topup_id)
    try:
        with session.begin_nested():
            buy = buy_package if payment.purpose == "package" else start_subscription
            made = buy(
                session,
                payment.account_id,
                payment.purpose_ref,
                at=at,
                from_lot_id=topup.paid_lot_id,
            )
            payment.fulfilled_ref = made.id
    except DomainError as exc:
        payment.fulfillment_error = f"{exc.code}: {exc.detail}"
        log.warning(
            "payment %s: %s %s not made (%s); the money stays in the wallet as paid credit",
            payment.id,
            payment.purpose,
            payment.purpose_ref,
            exc.detail,
        )


def fail_payment(
    session: Session,
    payment: Payment,
    *,
    status: str = "failed",
    code: str | None = None,
    message: str | None = None,
    payment_intent_id: str | None = None,
) -> bool:
    """The payment failed or its checkout expired: a pending payment (and its top-up) is marked so.

    A later success still credits it; a settled payment is left as it is.

    Returns:
        True when the payment changed.
    """
    _remember(payment, payment_intent_id=payment_intent_id, charge_id=None)
    if payment.status == "succeeded":
        return False
    payment.failure_code, payment.failure_message = code, message
    payment.updated_at = utcnow()
    if payment.status == "pending" or status == "expired":
        payment.status = status
        if payment.topup_id is not None:
            fail_topup(session, payment.topup_id)
    session.flush()
    return True


@dataclass(frozen=True, slots=True)
class InvoiceRefund:
    """What a refund of an invoice payment did.

    Attributes:
        reopened: owed on the invoice again (``receivable:invoiced``).
        refunded: paid credit reversed (the part of the payment the invoice could not take).
        bonus_clawed_back: always zero (that credit came without bonus).
        receivable: that credit, already spent, now owed (``receivable:reversals``).
        entry_id: the last ledger entry written.
    """

    invoice_id: str
    reopened: Amount
    refunded: Amount
    bonus_clawed_back: Amount
    receivable: Amount | None
    entry_id: int | None
    parts: tuple[dict[str, Any], ...] = ()


def refundable_of_invoice_payment(session: Session, payment: Payment) -> tuple[Amount, Amount]:
    """What finance may still refund of an invoice payment without creating a receivable.

    (unspent paid credit it left in the wallet, part recorded on the invoice not reversed).
    """
    unit = unit_of(payment.currency)
    unspent = unspent_paid(session, payment.topup_id) if payment.topup_id else Amount(0, unit)
    on_invoice = Amount(0, unit)
    if payment.fulfilled_ref:
        ip = session.get_one(InvoicePayment, payment.fulfilled_ref)
        on_invoice = Amount(ip.amount - ip.reversed, unit)
    return unspent, on_invoice


def reopen_invoice(
    session: Session,
    payment: Payment,
    wanted: Amount,
    *,
    key: str,
    reason: str,
    at: datetime | None,
    cash_account_id: int | None = None,
) -> tuple[Amount, int | None]:
    """Reverse up to ``wanted`` of what the payment recorded on its invoice.

    Returns:
        What was reversed and the ledger entry's id (None when nothing was written).
    """
    if not payment.fulfilled_ref or wanted.atoms <= 0:
        return Amount(0, wanted.unit), None
    ip = session.get_one(InvoicePayment, payment.fulfilled_ref)
    take = min(wanted, Amount(ip.amount - ip.reversed, wanted.unit))
    if take.atoms <= 0:
        return take, None
    entry_id = reverse_payment(
        session,
        ip.id,
        take,
        key=key,
        reason=reason,
        cash_account_id=cash_account_id,
        at=at,
        metadata=card_metadata(payment),
    )
    return take, entry_id


def on_invoice(session: Session, payment: Payment) -> int:
    """What an invoice payment recorded on its invoice and is not reversed, in atoms."""
    if not payment.fulfilled_ref:
        return 0
    ip = session.get_one(InvoicePayment, payment.fulfilled_ref)
    return ip.amount - ip.reversed


def _refund_invoice_payment(
    session: Session,
    payment: Payment,
    amount: Amount,
    *,
    key: str,
    reason: str,
    at: datetime | None,
) -> InvoiceRefund:
    """The refund rule of an invoice payment, in this order.

    The unspent paid credit it left in the wallet (if it paid more than the invoice owed), then the
    part recorded on the invoice (owed again: ``receivable:invoiced``), then that credit already
    spent (owed: ``receivable:reversals``).
    """
    invoice = lock_payment_invoice(session, payment)
    steps = _RefundSteps(left=amount, refunded=Amount(0, amount.unit))
    topup = session.get(Topup, payment.topup_id) if payment.topup_id else None
    if topup is not None:
        take = min(steps.left, unspent_paid(session, topup.id))
        steps.reverse_topup(session, topup, take, key=f"{key}:credit", reason=reason, at=at)
    reopened, reopen_entry = reopen_invoice(
        session, payment, steps.left, key=f"{key}:invoice", reason=reason, at=at
    )
    steps.left -= reopened
    if reopen_entry is not None:
        steps.parts.append(
            {
                "kind": "invoice",
                "entry_id": reopen_entry,
                "invoice_payment_id": payment.fulfilled_ref,
                "amount": reopened.atoms,
            }
        )
    steps.entry_id = reopen_entry or steps.entry_id
    if steps.left.atoms and topup is not None:
        take = min(steps.left, Amount(topup.amount - topup.refunded, amount.unit))
        steps.reverse_topup(
            session, topup, take, key=f"{key}:spent", reason=reason, at=at, spent=True
        )
    if steps.left.atoms:
        raise PaymentMismatch(
            f"payment {payment.id}: a refund of {amount} is {steps.left} more than it paid"
        )
    receivable = steps.receivable
    return InvoiceRefund(
        invoice.id,
        reopened,
        steps.refunded,
        Amount(0, amount.unit),
        receivable if receivable is not None and receivable.atoms else None,
        steps.entry_id,
        tuple(steps.parts),
    )


@dataclass
class _RefundSteps:
    """What a refund of an invoice payment has done so far.

    What is ``left`` to refund, the paid credit reversed, the debt booked, the last entry and the
    parts to undo.
    """

    left: Amount
    refunded: Amount
    receivable: Amount | None = None
    entry_id: int | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)

    def reverse_topup(
        self,
        session: Session,
        topup: Topup,
        take: Amount,
        *,
        key: str,
        reason: str,
        at: datetime | None,
        spent: bool = False,
    ) -> None:
        """Reverse ``take`` of the payment's top-up.

        Its unspent credit, or (``spent``) credit already spent, which becomes owed
        (``receivable:reversals``).
        """
        if not take.atoms:
            return
        r = reverse_topup(
            session,
            topup.id,
            take,
            on_excess="receivable" if spent else "reject",
            reason=reason,
            idempotency_key=key,
            effective_at=at,
        )
        self.refunded += r.refunded
        if spent:
            self.receivable = (self.receivable or Amount(0, take.unit)) + (
                r.receivable or Amount(0, take.unit)
            )
        self.entry_id, self.left = r.entry_id, self.left - take
        self.parts.append({"kind": "topup", "entry_id": r.entry_id, "topup_id": topup.id})


def _refund_key(session: Session, payment: Payment, refunded_total_minor: int) -> str:
    """The idempotency key of bringing a payment up to a refunded total.

    Totals restart below earlier ones after a refund failed: each such generation has keys of
    its own, so an earlier total reached again is applied again.
    """
    failures = session.scalar(
        select(func.count())
        .select_from(PaymentRefund)
        .where(PaymentRefund.payment_id == payment.id, PaymentRefund.status == "failed")
    )
    generation = f"g{failures}:" if failures else ""
    return f"card-refund:{payment.id}:{generation}{refunded_total_minor}"


def apply_refunded_total(
    session: Session,
    payment: Payment,
    refunded_total_minor: int,
    *,
    at: datetime | None = None,
    reason: str = "refunded at the payment provider",
) -> Refund | InvoiceRefund | None:
    """Bring the wallet up to the provider's cumulative refunded amount for this payment.

    Or the invoice.

    Only the part not applied yet is reversed (``refunded_minor`` tracks it), so a repeated or
    older ``charge.refunded`` changes nothing. The money has already left, so a refund larger
    than the top-up's unspent credit cannot be refused: the excess is booked as owed by the
    customer (``receivable:reversals``). A refund of an invoice payment makes its amount owed
    on the invoice again (see :func:`_refund_invoice_payment`).

    Returns:
        What was reversed now, or None when nothing was new.
    """
    delta = refunded_total_minor - payment.refunded_minor
    if delta <= 0:
        return None
    if payment.status != "succeeded":
        raise PaymentMismatch(f"payment {payment.id} is {payment.status}; nothing to refund")
    unit = unit_of(payment.currency)
    key = _refund_key(session, payment, refunded_total_minor)
    refund: Refund | InvoiceRefund
    parts: list[dict[str, Any]]
    if payment.purpose == "invoice":
        refund = _refund_invoice_payment(
            session, payment, Amount.of_minor(delta, unit), key=key, reason=reason, at=at
        )
        parts = list(refund.parts)
    else:
        assert payment.topup_id is not None
        refund = reverse_topup(
            session,
            payment.topup_id,
            Amount.of_minor(delta, unit),
            on_excess="receivable",
            reason=reason,
            idempotency_key=key,
            effective_at=at,
        )
        parts = [{"kind": "topup", "entry_id": refund.entry_id, "topup_id": payment.topup_id}]
    session.add(
        PaymentRefundApplication(
            payment_id=payment.id,
            total_minor=refunded_total_minor,
            delta_minor=delta,
            parts=parts,
        )
    )
    payment.refunded_minor = refunded_total_minor
    payment.updated_at = utcnow()
    session.flush()
    return refund
