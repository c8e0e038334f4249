"""Payments of invoices.

Record money received, reverse it (card refunds, lost disputes), restore a reversal that was undone,
and track what is under dispute.

Ledger entries (operator book, the invoice's currency; see invoicing/chart.py):

* payment: debit ``cash:<method>``; credit ``receivable:invoiced``;
* payment reversed (card refund, lost dispute): debit ``receivable:invoiced`` (owed again);
  credit ``cash:<method>`` (or ``cash:stripe_disputed``);
* payment restored (the refund failed): debit ``cash:<method>``; credit ``receivable:invoiced``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from invoicing.chart import cash_account, receivable_invoiced
from invoicing.errors import InvoiceState, PaymentTooLarge
from invoicing.lifecycle import (
    OPEN_STATUSES,
    lock_invoice,
    open_balance,
    payment_key,
    settle_status,
)
from invoicing.models import Invoice, InvoicePayment
from ledger.amounts import Amount
from ledger.base import lock_row, utcnow
from ledger.errors import IdempotencyConflict, InvalidAmount, NotFound
from ledger.ids import new_id
from ledger.journal import Entry, Leg, post_entry
from ledger.locks import lock_idempotency_keys
from ledger.models import JournalEntry
from ledger.units import Unit, currency
from wallet.ledger_accounts import book_of
from wallet.models import Account

PAYMENT_METHODS = ("bank_transfer", "stripe", "other")


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """A recorded payment and whether it repeated an earlier one (same method and reference)."""

    payment: InvoicePayment
    replayed: bool


def record_payment(
    session: Session,
    invoice_id: str,
    *,
    amount: Amount,
    method: str,
    reference: str,
    received_at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> PaymentResult:
    """Mark money received against an invoice (a bank transfer, a card payment...).

    Idempotent per ``(method, reference)``: the same payment recorded again returns the first
    record and changes nothing. The invoice becomes ``paid`` when nothing is left to pay.

    Args:
        session: the caller's transaction.
        invoice_id: the invoice paid.
        amount: the money received, in the invoice's currency.
        method: how it was paid (``stripe``, a bank...); the cash account is ``cash:<method>``.
        reference: the payment's reference in that method (with ``method``, its idempotency key).
        received_at: when the money arrived; default now.
        metadata: extra keys for the ledger entry's metadata (e.g. the card payment's
            ``payment_intent_id``, which reconciliation matches provider transactions by).

    Raises:
        NotFound: no such invoice.
        InvoiceState: a draft or void invoice.
        PaymentTooLarge: more than the open balance.
        IdempotencyConflict: the reference was used for another invoice or amount.
        InvalidAmount: not a positive whole number of minor units.
    """
    method, reference = method.strip(), reference.strip()
    if not method or not reference:
        raise InvalidAmount("a payment needs a method and a reference")
    invoice = lock_invoice(session, invoice_id)
    _check_minor_units(amount, currency(invoice.currency), invoice.id)
    prior = _prior_payment(session, method, reference)
    if prior is not None:
        if prior.invoice_id != invoice.id or prior.amount != amount.atoms:
            raise _reference_taken(prior, method, reference)
        return PaymentResult(prior, True)
    _check_payable(invoice, amount)
    at = received_at or utcnow()
    payment = _book_payment(session, invoice, amount, (method, reference), at, metadata or {})
    _insert_payment(session, payment)
    invoice.amount_paid += amount.atoms
    settle_status(invoice, at)
    session.flush()
    return PaymentResult(payment, False)


def _book_payment(
    session: Session,
    invoice: Invoice,
    amount: Amount,
    method_reference: tuple[str, str],
    at: datetime,
    metadata: Mapping[str, str],
) -> InvoicePayment:
    """Post the payment's entry and build its record (not added to the session yet).

    ``cash:<method>`` -> ``receivable:invoiced``.
    """
    method, reference = method_reference
    account = session.get_one(Account, invoice.account_id)
    entry = post_entry(
        session,
        [
            Leg(cash_account(session, book_of(account), amount.unit, method).id, amount),
            Leg(receivable_invoiced(session, account).id, -amount),
        ],
        description=f"payment {reference} ({method}) of invoice {invoice.number}",
        idempotency_key=payment_key(method, reference),
        effective_at=at,
        metadata={
            **metadata,
            "kind": "invoice_payment",
            "invoice_id": invoice.id,
            "account_id": account.id,
        },
    )
    return InvoicePayment(
        id=new_id("pay"),
        invoice_id=invoice.id,
        account_id=account.id,
        amount=amount.atoms,
        method=method,
        reference=reference,
        entry_id=entry.id,
        received_at=at,
    )


def _check_minor_units(amount: Amount, unit: Unit, invoice_id: str) -> None:
    """Refuse a payment in another currency, non-positive or finer than the minor unit."""
    if amount.unit != unit:
        raise InvalidAmount(f"invoice {invoice_id} is in {unit.code}, not {amount.unit.code}")
    if amount.atoms <= 0 or amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"a payment is a positive whole number of {unit.code} minor units; got {amount}"
        )


def _prior_payment(session: Session, method: str, reference: str) -> InvoicePayment | None:
    """The payment recorded under ``(method, reference)``, if any.

    One recorder of a reference at a time (after the row locks; the same lock the ledger takes
    for the entry's idempotency key): a concurrent recorder of the same reference, for any
    invoice, waits here and then finds the first payment.
    """
    lock_idempotency_keys(session, [payment_key(method, reference)])
    return session.scalars(
        select(InvoicePayment).where(
            InvoicePayment.method == method, InvoicePayment.reference == reference
        )
    ).one_or_none()


def _check_payable(invoice: Invoice, amount: Amount) -> None:
    """Refuse a payment of an invoice that is not open or of more than its open balance."""
    if invoice.status not in OPEN_STATUSES:
        raise InvoiceState(
            f"invoice {invoice.id} is {invoice.status}; only finalized invoices take payments"
        )
    left = open_balance(invoice)
    if amount.atoms > left:
        raise PaymentTooLarge(
            f"invoice {invoice.number} has {Amount(left, amount.unit)} left to pay;"
            f" cannot take {amount}",
            open_balance=Amount(left, amount.unit).format(),
        )


def _insert_payment(session: Session, payment: InvoicePayment) -> None:
    """Insert the payment in a savepoint (a refused insert leaves a usable session).

    Raises:
        IdempotencyConflict: a writer that did not take the reference's lock recorded the same
            reference first.
    """
    try:
        with session.begin_nested():
            session.add(payment)
            session.flush()
    except IntegrityError as exc:
        if "uq_invoicing_payments_reference" not in str(exc.orig):
            raise
        taken = session.scalars(
            select(InvoicePayment).where(
                InvoicePayment.method == payment.method,
                InvoicePayment.reference == payment.reference,
            )
        ).one()
        raise _reference_taken(taken, payment.method, payment.reference) from exc


def _reference_taken(prior: InvoicePayment, method: str, reference: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"payment reference {reference!r} ({method}) was already recorded as {prior.id} for"
        f" invoice {prior.invoice_id}: a reference identifies one payment of one invoice; record"
        " a different payment with its own reference"
    )


def _lock_payment(session: Session, payment_id: str) -> tuple[Invoice, InvoicePayment]:
    """Lock an invoice payment's invoice (its account row first), then the payment row.

    Raises:
        NotFound: no such invoice payment.
    """
    found = session.get(InvoicePayment, payment_id)
    if found is None:
        raise NotFound(f"invoice payment {payment_id} does not exist")
    invoice = lock_invoice(session, found.invoice_id)
    payment = lock_row(session, InvoicePayment, payment_id)
    return invoice, payment


def _entry_exists(session: Session, key: str) -> bool:
    """Whether a ledger entry with this idempotency key was posted (a repeat)."""
    return (
        session.scalar(select(JournalEntry.id).where(JournalEntry.idempotency_key == key))
        is not None
    )


def _post_payment_move(
    session: Session,
    paid: tuple[Invoice, InvoicePayment],
    legs: list[Leg],
    what: str,
    *,
    key: str,
    at: datetime,
    metadata: Mapping[str, str],
) -> Entry:
    """Post an entry that moves an invoice payment (reversed or restored, ``what``).

    Its metadata names the invoice, the payment and the account.
    """
    invoice, payment = paid
    return post_entry(
        session,
        legs,
        description=f"payment {payment.reference} ({payment.method}) of invoice"
        f" {invoice.number} {what}".strip(": "),
        idempotency_key=key,
        effective_at=at,
        metadata={
            **metadata,
            "invoice_id": invoice.id,
            "invoice_payment_id": payment.id,
            "account_id": invoice.account_id,
        },
    )


def reverse_payment(
    session: Session,
    payment_id: str,
    amount: Amount,
    *,
    key: str,
    reason: str,
    cash_account_id: int | None = None,
    at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> int | None:
    """Money received against an invoice went back to the payer (a card refund, a lost dispute).

    That much is owed on the invoice again.

    Debits ``receivable:invoiced`` and credits the cash account the payment came into (or
    ``cash_account_id``, e.g. ``cash:stripe_disputed`` for a lost dispute, whose money Stripe
    already withdrew). The payment's ``reversed`` and the invoice's ``amount_paid`` follow; a
    ``paid`` invoice that owes something again is ``finalized`` again (and can be overdue).
    Idempotent per ``key`` (the ledger entry's idempotency key): a repeat changes nothing and
    returns None; otherwise the ledger entry's id.

    Raises:
        NotFound: no such invoice payment.
        InvalidAmount: not a positive whole number of minor units, or more than the part of the
            payment not reversed yet.
    """
    invoice, payment = _lock_payment(session, payment_id)
    unit = currency(invoice.currency)
    if amount.unit != unit or amount.atoms <= 0 or amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"a reversal of payment {payment_id} is a positive whole number of {unit.code} minor"
            f" units; got {amount}"
        )
    if _entry_exists(session, key):
        return None
    if amount.atoms > payment.amount - payment.reversed:
        left = Amount(payment.amount - payment.reversed, unit)
        raise InvalidAmount(
            f"payment {payment_id} has {left} left to reverse; cannot reverse {amount}"
        )
    at = at or utcnow()
    account = session.get_one(Account, invoice.account_id)
    cash_id = cash_account_id or cash_account(session, book_of(account), unit, payment.method).id
    entry = _post_payment_move(
        session,
        (invoice, payment),
        [Leg(receivable_invoiced(session, account).id, amount), Leg(cash_id, -amount)],
        f"reversed: {reason}",
        key=key,
        at=at,
        metadata={**(metadata or {}), "kind": "invoice_payment_reversal"},
    )
    if entry.replayed:
        return None
    payment.reversed += amount.atoms
    invoice.amount_paid -= amount.atoms
    settle_status(invoice, at)
    session.flush()
    return entry.id


def restore_payment(
    session: Session,
    payment_id: str,
    amount: Amount,
    *,
    key: str,
    reason: str,
    at: datetime | None = None,
    metadata: Mapping[str, str] | None = None,
) -> tuple[Amount, int | None]:
    """Record an invoice payment on its invoice again after its reversal was undone.

    The card refund failed and the money came back: the payment is recorded again, up to what the
    invoice still owes and what was reversed (debit the payment's cash account, credit
    ``receivable:invoiced``).

    Idempotent per ``key``. Returns what was recorded again (the caller decides what the rest
    becomes, e.g. paid credit) and the entry's id (None when nothing was written).

    Raises:
        NotFound: no such invoice payment.
    """
    invoice, payment = _lock_payment(session, payment_id)
    unit = currency(invoice.currency)
    if _entry_exists(session, key):
        return Amount(0, unit), None
    take = min(amount.atoms, payment.reversed, max(open_balance(invoice), 0))
    if take <= 0:
        return Amount(0, unit), None
    at = at or utcnow()
    account = session.get_one(Account, invoice.account_id)
    cash_id = cash_account(session, book_of(account), unit, payment.method).id
    entry = _post_payment_move(
        session,
        (invoice, payment),
        [
            Leg(cash_id, Amount(take, unit)),
            Leg(receivable_invoiced(session, account).id, Amount(-take, unit)),
        ],
        f"restored: {reason}",
        key=key,
        at=at,
        metadata={**(metadata or {}), "kind": "invoice_payment_restored"},
    )
    payment.reversed -= take
    invoice.amount_paid += take
    settle_status(invoice, at)
    session.flush()
    return Amount(take, unit), entry.id


def mark_disputed(
    session: Session, invoice_id: str, delta: int, *, at: datetime | None = None
) -> Invoice:
    """Add ``delta`` atoms to what is under open dispute on the invoice and set its status.

    Negative: remove. ``disputed`` while anything is; then ``paid`` or ``finalized`` again. The
    caller holds the invoice row (the payment paths lock it first).
    """
    invoice = lock_row(session, Invoice, invoice_id)
    invoice.disputed = max(invoice.disputed + delta, 0)
    settle_status(invoice, at or utcnow())
    session.flush()
    return invoice
