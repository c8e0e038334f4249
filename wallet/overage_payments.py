"""A reseller records what its customer paid for a sub-account's overage.

A sub-account's usage beyond its prepaid credit (within its credit limit) is booked in the
reseller's book as ``receivable:unbilled`` of the sub-account: the reseller's customer owes it
to the reseller, not to the operator (the operator bills the reseller at wholesale). Nobody
invoices it here, so until now nothing ever settled it and it used the sub-account's credit
limit forever. The reseller collects the money itself and records it:

| entry (book ``reseller:<id>``) | debit | credit |
|---|---|---|
| overage payment | ``cash:collected`` | ``receivable:unbilled`` (the sub-account's) |

A payment is idempotent per sub-account and ``reference`` (the same reference and amount
return the first payment; another amount is a conflict) and at most what is owed (more is
refused, ``payment_exceeds_owed``: the rest would be prepaid credit, which the reseller records
as a top-up). Paying frees the credit limit at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import get_balance
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import DomainError, IdempotencyConflict, InvalidAmount
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from wallet.accounts import EVERYTHING, Scope, get_account, lock_accounts
from wallet.errors import InvalidRequest
from wallet.ledger_accounts import book_of, customer_ledger, house_ledger
from wallet.models import Account, OveragePayment
from wallet.topups import parse_money

MAX_REFERENCE = 200


class PaymentExceedsOwed(DomainError):
    """More than the sub-account owes for its overage."""

    code = "payment_exceeds_owed"


@dataclass(frozen=True, slots=True)
class OveragePaymentResult:
    """A recorded payment, whether it repeated an earlier one, and what is still owed."""

    payment: OveragePayment
    replayed: bool
    open: Amount


def owed_overage(session: Session, account_id: str) -> Amount:
    """What a sub-account owes its reseller for overage (``receivable:unbilled``)."""
    account = get_account(session, account_id)
    return get_balance(session, customer_ledger(session, account).receivable_unbilled.id).posted


def record_overage_payment(
    session: Session,
    account_id: str,
    *,
    amount: str,
    reference: str,
    received_at: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> OveragePaymentResult:
    """Record money the reseller collected for a sub-account's overage (see the module doc).

    Raises:
        NotFound: no such account visible to the caller.
        InvalidRequest: not a sub-account, or an empty or too long reference.
        InvalidAmount: see :func:`wallet.topups.parse_money`.
        IdempotencyConflict: the reference was recorded with another amount.
        PaymentExceedsOwed: more than the sub-account owes.
    """
    ref = reference.strip()
    if not ref or len(ref) > MAX_REFERENCE:
        raise InvalidRequest(f"a payment needs a reference of 1 to {MAX_REFERENCE} characters")
    account = _locked_sub_account(session, account_id, scope)
    money = parse_money(amount, account, what="amount")
    prior = _prior_payment(session, account, ref, money)
    if prior is not None:
        return OveragePaymentResult(prior, True, owed_overage(session, account.id))
    cust = customer_ledger(session, account)
    owed = get_balance(session, cust.receivable_unbilled.id).posted
    if money > owed:
        raise PaymentExceedsOwed(
            f"sub-account {account.id} owes {owed} for overage; cannot record {money} (record"
            " money beyond what is owed as a top-up with method 'reseller')",
            owed=owed.format(),
        )
    if money.atoms <= 0:
        raise InvalidAmount("amount must be greater than zero")
    payment = _post_payment(session, account, cust.receivable_unbilled.id, money, ref, received_at)
    return OveragePaymentResult(payment, False, owed - money)


def _locked_sub_account(session: Session, account_id: str, scope: Scope) -> Account:
    """The sub-account, under the wallet's first lock (its row with its reseller's).

    Raises:
        NotFound: no such account visible to the caller.
        InvalidRequest: not a sub-account.
    """
    seen = get_account(session, account_id, scope=scope)
    if seen.parent_id is None:
        raise InvalidRequest(
            f"account {account_id} is not a reseller's sub-account: its overage is billed on"
            " its invoice (record payments on the invoice)"
        )
    lock_accounts(session, [seen.id])  # the wallet's first lock, with its reseller's row
    return get_account(session, account_id, scope=scope)


def _prior_payment(
    session: Session, account: Account, ref: str, money: Amount
) -> OveragePayment | None:
    """The payment already recorded under ``ref``, if any.

    Raises:
        IdempotencyConflict: it was recorded with another amount.
    """
    prior = session.scalars(
        select(OveragePayment).where(
            OveragePayment.account_id == account.id, OveragePayment.reference == ref
        )
    ).one_or_none()
    if prior is not None and prior.amount != money.atoms:
        raise IdempotencyConflict(
            f"payment reference {ref!r} was already recorded for {account.id} as"
            f" {prior.id} with another amount; use a new reference for another payment"
        )
    return prior


def _post_payment(
    session: Session,
    account: Account,
    receivable_id: int,
    money: Amount,
    ref: str,
    received_at: datetime | None,
) -> OveragePayment:
    """Post the payment and record it.

    The reseller's cash against the sub-account's unbilled receivable.
    """
    at = received_at or utcnow()
    cash = house_ledger(session, book_of(account), money.unit).cash
    payment_id = new_id("opay")
    entry = post_entry(
        session,
        [Leg(cash.id, money), Leg(receivable_id, -money)],
        description=f"overage payment {ref} of sub-account {account.id}",
        idempotency_key=f"overage-payment:{payment_id}",
        effective_at=at,
        metadata={
            "kind": "overage_payment",
            "payment_id": payment_id,
            "account_id": account.id,
            "reseller_id": account.parent_id,
            "reference": ref,
        },
    )
    payment = OveragePayment(
        id=payment_id,
        account_id=account.id,
        reseller_id=account.parent_id,
        amount=money.atoms,
        currency=account.currency,
        reference=ref,
        entry_id=entry.id,
        received_at=at,
    )
    session.add(payment)
    session.flush()
    return payment
