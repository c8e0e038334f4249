"""What a confirmed, failed, refunded or disputed card payment does to the wallet.

Every function here takes the payment row locked (``FOR UPDATE``), so events about the same
payment, and finance refunds, apply one after the other. Each one brings our state up to the
state the provider reports (paid or not, cumulative amount refunded, dispute status and the
funds it moved), so a repeated or late event changes nothing and events arriving out of order
end in the same state.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from invoicing.payments.accounts import card_ledger
from invoicing.payments.errors import PaymentMismatch
from invoicing.payments.models import Payment, PaymentDispute
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError
from ledger.journal import Leg, post_entry
from ledger.units import unit as unit_of
from wallet.accounts import get_account
from wallet.burn import MONEY_KINDS
from wallet.freezes import (
    book_receivable,
    forfeit_freeze,
    freeze_topup_credit,
    get_freeze,
    release_freeze,
)
from wallet.lots import open_lots
from wallet.models import CreditFreeze, Topup
from wallet.packages import buy_package
from wallet.subscriptions import start_subscription
from wallet.topups import Refund, fail_topup, reverse_topup, settle_topup

log = logging.getLogger(__name__)

#: Dispute statuses that end a dispute in the customer's favour (the money stays with us).
WON_STATUSES = frozenset({"won", "warning_closed"})
LOST_STATUSES = frozenset({"lost"})


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
    """The provider says the payment succeeded: credit the wallet (and make the purchase).

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
    if payment.purpose != "topup":
        # Lock order of the wallet: account row, then its lots, then ledger accounts. The
        # purchase below needs the first two, so take them before crediting touches the ledger.
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


def _fulfil(session: Session, payment: Payment, at: datetime) -> None:
    """Buy the package or plan from the paid lot the payment just credited (the package's
    validity and the plan's first period start now, when the customer gets them). If the purchase
    cannot be made any more (plan already live, package gone...), the money stays in the wallet
    as paid credit and the reason is kept on the payment."""
    if payment.purpose == "topup" or payment.purpose_ref is None:
        return
    topup = session.get_one(Topup, payment.topup_id)
    try:
        with session.begin_nested():
            if payment.purpose == "package":
                purchase = buy_package(
                    session,
                    payment.account_id,
                    payment.purpose_ref,
                    at=at,
                    from_lot_id=topup.paid_lot_id,
                )
                payment.fulfilled_ref = purchase.id
            else:
                sub = start_subscription(
                    session,
                    payment.account_id,
                    payment.purpose_ref,
                    at=at,
                    from_lot_id=topup.paid_lot_id,
                )
                payment.fulfilled_ref = sub.id
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
    """The payment failed or its checkout expired: a pending payment (and its top-up) is marked
    so. A later success still credits it; a settled payment is left as it is.

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
        fail_topup(session, payment.topup_id)
    session.flush()
    return True


def apply_refunded_total(
    session: Session,
    payment: Payment,
    refunded_total_minor: int,
    *,
    at: datetime | None = None,
    reason: str = "refunded at the payment provider",
) -> Refund | None:
    """Bring the wallet up to the provider's cumulative refunded amount for this payment.

    Only the part not applied yet is reversed (``refunded_minor`` tracks it), so a repeated or
    older ``charge.refunded`` changes nothing. The money has already left, so a refund larger
    than the top-up's unspent credit cannot be refused: the excess is booked as owed by the
    customer (``receivable:reversals``).

    Returns:
        What was reversed now, or None when nothing was new.
    """
    delta = refunded_total_minor - payment.refunded_minor
    if delta <= 0:
        return None
    if payment.status != "succeeded":
        raise PaymentMismatch(f"payment {payment.id} is {payment.status}; nothing to refund")
    unit = unit_of(payment.currency)
    refund = reverse_topup(
        session,
        payment.topup_id,
        Amount.of_minor(delta, unit),
        on_excess="receivable",
        reason=reason,
        idempotency_key=f"card-refund:{payment.id}:{refunded_total_minor}",
        effective_at=at,
    )
    payment.refunded_minor = refunded_total_minor
    payment.updated_at = utcnow()
    session.flush()
    return refund


def apply_dispute(
    session: Session, payment: Payment, dispute: dict[str, Any], *, at: datetime | None = None
) -> str:
    """Bring a dispute to the state the provider reports.

    * The funds the provider withdrew (or gave back) move between ``cash:stripe`` and
      ``cash:stripe_disputed``, as its balance transactions say (each booked once).
    * Open: the disputed share of the payment's unspent credit is frozen (once).
    * Won (or an inquiry closed): the freeze is released.
    * Lost: the freeze is forfeited (the credit leaves) and what it could not cover (credit
      already spent) is booked as owed by the customer.

    Returns:
        What happened, for the event log.
    """
    when = at or utcnow()
    unit = unit_of(payment.currency)
    accounts = card_ledger(session, unit)
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
    status = str(dispute["status"])
    row.provider_status = status
    row.amount_minor = int(dispute["amount"])
    done: list[str] = []
    was_open = row.outcome == "open"
    # The customer's credit first (lots, then ledger: the wallet's lock order), then the funds.
    if was_open:
        disputed = Amount.of_minor(row.amount_minor, unit)
        freeze: CreditFreeze | None = get_freeze(session, f"dispute:{row.id}")
        if freeze is None and status not in WON_STATUSES:
            freeze = freeze_topup_credit(
                session,
                payment.topup_id,
                disputed,
                key=f"dispute:{row.id}",
                forfeit_to_account_id=accounts.disputed.id,
                reason=f"dispute {row.id} ({row.reason or 'no reason given'})",
            )
            row.freeze_id = freeze.id
            done.append(
                f"froze {Amount(freeze.frozen_paid, unit)} paid and"
                f" {Amount(freeze.frozen_bonus, unit)} bonus credit"
            )
        if status in WON_STATUSES:
            if freeze is not None:
                release_freeze(session, freeze.id, at=when)
                done.append("freeze released")
            row.outcome, row.closed_at = "won", when
        elif status in LOST_STATUSES:
            assert freeze is not None
            forfeit_freeze(session, freeze.id, at=when)
            uncovered = disputed - Amount(freeze.frozen_paid, unit)
            done.append(f"lost: {Amount(freeze.frozen_paid, unit)} of credit taken")
            if uncovered.atoms > 0:
                book_receivable(
                    session,
                    payment.account_id,
                    uncovered,
                    credit_account_id=accounts.disputed.id,
                    key=f"dispute-receivable:{row.id}",
                    description=f"dispute {row.id} lost after the credit was spent",
                    effective_at=when,
                    metadata={"dispute_id": row.id, "payment_id": payment.id},
                )
                row.receivable = uncovered.atoms
                done.append(f"{uncovered} owed by the customer")
            row.outcome, row.closed_at = "lost", when
    for i, bt in enumerate(dispute.get("balance_transactions") or []):
        # Each balance transaction is booked once (snapshots are cumulative, and an older
        # snapshot arriving late lists only transactions already booked).
        move = -int(bt.get("amount", 0))
        if not move:
            continue
        amt = Amount.of_minor(move, unit)
        entry = post_entry(
            session,
            [Leg(accounts.disputed.id, amt), Leg(accounts.cash.id, -amt)],
            description=f"dispute {row.id}: funds {'withdrawn' if move > 0 else 'reinstated'}",
            idempotency_key=f"dispute-funds:{bt.get('id') or f'{row.id}:{i}'}",
            effective_at=when,
            metadata={
                "dispute_id": row.id,
                "balance_transaction": bt.get("id"),
                "payment_id": payment.id,
                "payment_intent_id": payment.payment_intent_id,
            },
        )
        if not entry.replayed:
            row.withdrawn_minor += move
            done.append(f"funds {'withdrawn' if move > 0 else 'reinstated'} {abs(amt)}")
    if not was_open and not done:
        done.append(f"dispute {row.id} already {row.outcome}")
    payment.updated_at = utcnow()
    session.flush()
    return "; ".join(done) or f"dispute {row.id} is {status}"
