"""The operator's ledger accounts for card money, per currency (operator book).

* ``cash:stripe`` (asset): our Stripe balance: card money in, refunds and fees out (opened by
  the wallet's chart, ``wallet.ledger_accounts.house_ledger``).
* ``cash:stripe_disputed`` (asset): money Stripe withdrew for open disputes; back to
  ``cash:stripe`` when won, written off against the customer's frozen credit (or booked as a
  receivable) when lost.
* ``expense:payment_fees`` (expense): Stripe's fees, booked by reconciliation from balance
  transactions.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ledger.accounts import AccountRef, AccountSpec, open_accounts
from ledger.models import OPERATOR_BOOK, AccountType
from ledger.units import Unit
from wallet.ledger_accounts import house_ledger


@dataclass(frozen=True, slots=True)
class CardLedger:
    """The card-money accounts of one currency."""

    cash: AccountRef
    disputed: AccountRef
    fees: AccountRef


def card_ledger(session: Session, unit: Unit) -> CardLedger:
    """Open (or find) the card-money accounts in ``unit``."""
    cash = house_ledger(session, OPERATOR_BOOK, unit).cash_stripe
    disputed, fees = open_accounts(
        session,
        [
            AccountSpec("cash:stripe_disputed", AccountType.ASSET, unit, OPERATOR_BOOK),
            AccountSpec(
                "expense:payment_fees",
                AccountType.EXPENSE,
                unit,
                OPERATOR_BOOK,
                track_balance=False,
            ),
        ],
    )
    return CardLedger(cash, disputed, fees)
