"""Card disputes: bring a dispute to the state the provider reports (see :func:`apply_dispute`).

The rules (what a status means, how much of an invoice a dispute holds) are pure, in
invoicing/payments/rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.invoice_payments import mark_disputed
from invoicing.payments.accounts import CardLedger, card_ledger
from invoicing.payments.models import Payment, PaymentDispute
from invoicing.payments.rules import dispute_stage, funds_moved, invoice_dispute_share
from invoicing.payments.settlement import lock_payment_invoice, on_invoice, reopen_invoice
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.journal import Leg, post_entry
from ledger.units import unit as unit_of
from wallet.freezes import (
    book_receivable,
    forfeit_freeze,
    freeze_topup_credit,
    get_freeze,
    release_freeze,
)
from wallet.models import CreditFreeze


@dataclass(frozen=True, slots=True)
class _Dispute:
    """One dispute being applied.

    Its payment, its locked row, the provider's status, the card ledger's accounts and when.
    """

    session: Session
    payment: Payment
    row: PaymentDispute
    status: str
    accounts: CardLedger
    at: datetime

    @property
    def disputed(self) -> Amount:
        """The disputed amount."""
        return Amount.of_minor(self.row.amount_minor, unit_of(self.payment.currency))


def _dispute_row(session: Session, payment: Payment, dispute: dict[str, Any]) -> PaymentDispute:
    """The dispute's row, locked, with the provider's status and amount.

    Created open on first sight.
    """
    row = session.scalars(
        select(PaymentDispute).where(PaymentDispute.id == dispute["id"]).with_for_update()
    ).one_or_none()
    if row is None:
        row = PaymentDispute(
            id=dispute["id"],
            payment_id=payment.id,
            amount_minor=int(dispute["amount"]),
            currency=str(dispute["currency"]).upper(),
            reason=dispute.get("reason"),
            provider_status=str(dispute["status"]),
            outcome="open",
            withdrawn_minor=0,
            receivable=0,
        )
        session.add(row)
        session.flush()
    row.provider_status = str(dispute["status"])
    row.amount_minor = int(dispute["amount"])
    return row


def _freeze(d: _Dispute, done: list[str]) -> CreditFreeze | None:
    """The dispute's freeze of the payment's credit: taken once, unless the dispute is won."""
    row, payment = d.row, d.payment
    freeze: CreditFreeze | None = get_freeze(d.session, f"dispute:{row.id}")
    if freeze is None and dispute_stage(d.status) != "won" and payment.topup_id is not None:
        freeze = freeze_topup_credit(
            d.session,
            payment.topup_id,
            d.disputed,
            key=f"dispute:{row.id}",
            forfeit_to_account_id=d.accounts.disputed.id,
            reason=f"dispute {row.id} ({row.reason or 'no reason given'})",
        )
        row.freeze_id = freeze.id
        unit = d.disputed.unit
        done.append(
            f"froze {Amount(freeze.frozen_paid, unit)} paid and"
            f" {Amount(freeze.frozen_bonus, unit)} bonus credit"
        )
    return freeze


def _mark_invoice(d: _Dispute, freeze: CreditFreeze | None, done: list[str]) -> None:
    """Mark on the invoice what an open dispute holds of it; unmark it when the dispute ends."""
    row, payment = d.row, d.payment
    if payment.purpose != "invoice" or not payment.purpose_ref:
        return
    if dispute_stage(d.status) == "open" and not row.invoice_disputed:
        frozen = freeze.frozen_paid if freeze is not None else 0
        share = invoice_dispute_share(d.disputed.atoms, frozen, on_invoice(d.session, payment))
        row.invoice_disputed = share
        if share:
            mark_disputed(d.session, payment.purpose_ref, share, at=d.at)
            done.append(f"invoice {payment.purpose_ref} disputed")
    elif dispute_stage(d.status) != "open" and row.invoice_disputed:
        mark_disputed(d.session, payment.purpose_ref, -row.invoice_disputed, at=d.at)
        row.invoice_disputed = 0


def _win(d: _Dispute, freeze: CreditFreeze | None, done: list[str]) -> None:
    """Won: the freeze is released."""
    if freeze is not None:
        release_freeze(d.session, freeze.id, at=d.at)
        done.append("freeze released")
    d.row.outcome, d.row.closed_at = "won", d.at


def _lose(d: _Dispute, freeze: CreditFreeze | None, done: list[str]) -> None:
    """Book a lost dispute: the frozen credit is taken and the rest is owed again.

    What the invoice took is owed on it again, and what neither covers (credit already spent) is
    owed by the customer.
    """
    row, payment = d.row, d.payment
    uncovered = d.disputed
    if freeze is not None:
        forfeit_freeze(d.session, freeze.id, at=d.at)
        taken = Amount(freeze.frozen_paid, uncovered.unit)
        uncovered -= taken
        done.append(f"lost: {taken} of credit taken")
    if payment.purpose == "invoice":
        # What the invoice took is owed on it again; Stripe already withdrew the money.
        reopened, _ = reopen_invoice(
            d.session,
            payment,
            uncovered,
            key=f"dispute-invoice:{row.id}",
            reason=f"dispute {row.id} lost",
            at=d.at,
            cash_account_id=d.accounts.disputed.id,
        )
        if reopened.atoms:
            uncovered -= reopened
            done.append(f"lost: {reopened} owed on invoice {payment.purpose_ref} again")
    if uncovered.atoms > 0:
        book_receivable(
            d.session,
            payment.account_id,
            uncovered,
            credit_account_id=d.accounts.disputed.id,
            key=f"dispute-receivable:{row.id}",
            description=f"dispute {row.id} lost after the credit was spent",
            effective_at=d.at,
            metadata={"dispute_id": row.id, "payment_id": payment.id},
        )
        row.receivable = uncovered.atoms
        done.append(f"{uncovered} owed by the customer")
    row.outcome, row.closed_at = "lost", d.at


def _book_funds(d: _Dispute, transactions: list[dict[str, Any]], done: list[str]) -> None:
    """Move the funds the provider withdrew between ``cash:stripe`` and ``cash:stripe_disputed``.

    Or gave back. Each balance transaction is booked once (snapshots are cumulative, and an older
    snapshot arriving late lists only transactions already booked).
    """
    row, payment, unit = d.row, d.payment, d.disputed.unit
    for i, bt in enumerate(transactions):
        move = funds_moved(int(bt.get("amount", 0)))
        if not move:
            continue
        amt = Amount.of_minor(move, unit)
        what = "withdrawn" if move > 0 else "reinstated"
        entry = post_entry(
            d.session,
            [Leg(d.accounts.disputed.id, amt), Leg(d.accounts.cash.id, -amt)],
            description=f"dispute {row.id}: funds {what}",
            idempotency_key=f"dispute-funds:{bt.get('id') or f'{row.id}:{i}'}",
            effective_at=d.at,
            metadata={
                "dispute_id": row.id,
                "balance_transaction": bt.get("id"),
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
            },
        )
        if not entry.replayed:
            row.withdrawn_minor += move
            done.append(f"funds {what} {abs(amt)}")


def apply_dispute(
    session: Session, payment: Payment, dispute: dict[str, Any], *, at: datetime | None = None
) -> str:
    """Bring a dispute to the state the provider reports.

    * The funds the provider withdrew (or gave back) move between ``cash:stripe`` and
      ``cash:stripe_disputed``, as its balance transactions say (each booked once).
    * Open: the disputed share of the payment's unspent credit is frozen (once), and what a
      loss would take from an invoice is marked disputed on it.
    * Won (or an inquiry closed): the freeze is released.
    * Lost: the freeze is forfeited (the credit leaves), what the invoice took is owed on it
      again, and what neither covers (credit already spent) is booked as owed by the customer.

    Returns:
        What happened, for the event log.
    """
    when = at or utcnow()
    if payment.purpose == "invoice":
        lock_payment_invoice(session, payment)  # invoice row before the wallet's locks
    accounts = card_ledger(session, unit_of(payment.currency))
    row = _dispute_row(session, payment, dispute)
    d = _Dispute(session, payment, row, str(dispute["status"]), accounts, when)
    done: list[str] = []
    was_open = row.outcome == "open"
    # The customer's credit first (lots, then ledger: the wallet's lock order), then the funds.
    if was_open:
        freeze = _freeze(d, done)
        _mark_invoice(d, freeze, done)
        stage = dispute_stage(d.status)
        if stage == "won":
            _win(d, freeze, done)
        elif stage == "lost":
            _lose(d, freeze, done)
    _book_funds(d, list(dispute.get("balance_transactions") or []), done)
    if not was_open and not done:
        done.append(f"dispute {row.id} already {row.outcome}")
    payment.updated_at = utcnow()
    session.flush()
    return "; ".join(done) or f"dispute {row.id} is {d.status}"


def payment_disputes(session: Session, payment_id: str) -> list[PaymentDispute]:
    """The disputes of a card payment, oldest first."""
    return list(
        session.scalars(
            select(PaymentDispute)
            .where(PaymentDispute.payment_id == payment_id)
            .order_by(PaymentDispute.id)
        )
    )
