"""Ledger accounts the invoicing layer posts to (next to wallet/ledger_accounts.py's).

| account | type | owner | balance |
|---|---|---|---|
| ``receivable:invoiced`` | asset | the billing account | cached; never negative |
| ``tax:payable`` | liability | house (per book, currency) | summed from postings |
| ``revenue:rounding`` | revenue | house | summed from postings |
| ``revenue:credit-notes`` | contra-revenue | house | summed from postings |
| ``cash:<method>`` | asset | house | ``cash:bank`` is wallet's; others alike |
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ledger.accounts import AccountRef, AccountSpec, open_accounts
from ledger.models import AccountType
from ledger.units import Unit
from wallet.ledger_accounts import book_of, currency_of, house_ledger
from wallet.models import Account


@dataclass(frozen=True, slots=True)
class InvoicingHouse:
    """A book's invoicing house accounts in one currency (no cached balances: never hot)."""

    tax_payable: AccountRef
    rounding: AccountRef
    credit_notes: AccountRef


def receivable_invoiced(session: Session, account: Account) -> AccountRef:
    """The billing account's invoiced, unpaid receivable (opened on first use)."""
    spec = AccountSpec(
        "receivable:invoiced",
        AccountType.ASSET,
        currency_of(account),
        book_of(account),
        account.id,
        forbid_negative=True,
    )
    return open_accounts(session, [spec])[0]


def invoicing_house(session: Session, book: str, unit: Unit) -> InvoicingHouse:
    """Open (or find) the invoicing house accounts of a book in one currency."""

    def house(code: str, type_: AccountType) -> AccountSpec:
        return AccountSpec(code, type_, unit, book, track_balance=False)

    return InvoicingHouse(
        *open_accounts(
            session,
            [
                house("tax:payable", AccountType.LIABILITY),
                house("revenue:rounding", AccountType.REVENUE),
                house("revenue:credit-notes", AccountType.CONTRA_REVENUE),
            ],
        )
    )


def cash_account(session: Session, book: str, unit: Unit, method: str) -> AccountRef:
    """Where money received by ``method`` lands.

    ``cash:bank`` for bank transfers (wallet's account), ``cash:<method>`` otherwise (e.g.
    ``cash:stripe``), with the same settings (no cached balance: summed from postings, never a
    locked row).
    """
    if method == "bank_transfer":
        return house_ledger(session, book, unit).cash
    spec = AccountSpec(f"cash:{method}", AccountType.ASSET, unit, book, track_balance=False)
    return open_accounts(session, [spec])[0]
