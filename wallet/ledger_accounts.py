"""The chart of accounts: which ledger accounts a wallet account and its book use.

A top-level account's ledger accounts live in the operator's book; a reseller's sub-account's
live in the reseller's own book (``reseller:<id>``), next to that book's house accounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ledger.accounts import AccountRef, AccountSpec, open_accounts
from ledger.models import OPERATOR_BOOK, AccountType
from ledger.units import TOKENS, Unit
from ledger.units import unit as unit_of
from wallet.models import Account

L, A, R, C = (
    AccountType.LIABILITY,
    AccountType.ASSET,
    AccountType.REVENUE,
    AccountType.CONTRA_REVENUE,
)


def book_of(account: Account) -> str:
    """The book an account's money lives in."""
    return book_for(account.parent_id)


def book_for(parent_id: str | None) -> str:
    """The book of an account whose reseller is ``parent_id`` (None: the operator's)."""
    return f"reseller:{parent_id}" if parent_id else OPERATOR_BOOK


def currency_of(account: Account) -> Unit:
    """The account's currency unit."""
    return unit_of(account.currency)


@dataclass(frozen=True, slots=True)
class CustomerLedger:
    """The ledger accounts that belong to one wallet account."""

    prepaid: AccountRef
    bonus: AccountRef
    package_tokens: AccountRef
    deferred_packages: AccountRef
    deferred_subscriptions: AccountRef
    receivable_unbilled: AccountRef


@dataclass(frozen=True, slots=True)
class HouseLedger:
    """A book's house accounts in one currency. Hot ones keep no cached balance."""

    cash: AccountRef
    promotions: AccountRef
    revenue_usage: AccountRef
    revenue_packages: AccountRef
    revenue_subscriptions: AccountRef
    revenue_breakage: AccountRef
    tokens_issued: AccountRef
    tokens_consumed: AccountRef
    tokens_expired: AccountRef
    cash_stripe: AccountRef


def customer_ledger(session: Session, account: Account) -> CustomerLedger:
    """Open (or find) the ledger accounts of ``account``."""
    return customer_ledger_of(session, account.id, account.parent_id, account.currency)


def customer_ledger_of(
    session: Session, account_id: str, parent_id: str | None, currency: str
) -> CustomerLedger:
    """Open (or find) the ledger accounts of the wallet account ``account_id``."""
    book = book_for(parent_id)
    unit, owner = unit_of(currency), account_id

    def acct(code: str, type_: AccountType, u: Unit = unit) -> AccountSpec:
        return AccountSpec(code, type_, u, book, owner, forbid_negative=True)

    return CustomerLedger(
        *open_accounts(
            session,
            [
                acct("customer:prepaid", L),
                acct("customer:bonus", L),
                acct("customer:package_tokens", L, TOKENS),
                acct("deferred:packages", L),
                acct("deferred:subscriptions", L),
                acct("receivable:unbilled", A),
            ],
        )
    )


def house_ledger(session: Session, book: str, unit: Unit) -> HouseLedger:
    """Open (or find) the house accounts of a book in one currency."""

    def house(code: str, type_: AccountType, u: Unit = unit, *, hot: bool = True) -> AccountSpec:
        return AccountSpec(code, type_, u, book, track_balance=not hot)

    cash_code = "cash:bank" if book == OPERATOR_BOOK else "cash:collected"
    return HouseLedger(
        *open_accounts(
            session,
            [
                # every top-up of the book lands here: no cached row to lock (DESIGN: hot
                # house accounts derive their balance from postings)
                house(cash_code, A),
                house("promotions", C),
                house("revenue:usage", R),
                house("revenue:packages", R),
                house("revenue:subscriptions", R),
                house("revenue:breakage", R),
                house("entitlements:issued", A, TOKENS),
                house("entitlements:consumed", R, TOKENS),
                house("entitlements:expired", R, TOKENS),
                house("cash:stripe", A),
            ],
        )
    )


def cash_for_method(house: HouseLedger, method: str) -> AccountRef:
    """Where money of a top-up ``method`` lands.

    Card money in ``cash:stripe``, the rest in the book's cash account (``cash:bank``, or
    ``cash:collected`` in a reseller's book).
    """
    return house.cash_stripe if method == "stripe" else house.cash


def reversal_receivable(session: Session, account: Account) -> AccountRef:
    """The account's ``receivable:reversals``.

    Money a customer owes because a payment was reversed (refund or lost dispute) after the credit
    it bought was spent.
    """
    (ref,) = open_accounts(
        session,
        [
            AccountSpec(
                "receivable:reversals",
                A,
                currency_of(account),
                book_of(account),
                account.id,
                forbid_negative=True,
            )
        ],
    )
    return ref
