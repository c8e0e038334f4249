"""The chart of accounts: which ledger accounts a wallet account and its book use.

A top-level account's ledger accounts live in the operator's book; a reseller's sub-account's
live in the reseller's own book (``reseller:<id>``), next to that book's house accounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from ledger.accounts import AccountRef, open_account
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
    return f"reseller:{account.parent_id}" if account.parent_id else OPERATOR_BOOK


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


def customer_ledger(session: Session, account: Account) -> CustomerLedger:
    """Open (or find) the ledger accounts of ``account``."""
    book, unit, owner = book_of(account), currency_of(account), account.id

    def acct(code: str, type_: AccountType, u: Unit = unit, *, forbid: bool = True) -> AccountRef:
        return open_account(
            session,
            code=code,
            type=type_,
            unit=u,
            book=book,
            owner_id=owner,
            forbid_negative=forbid,
        )

    return CustomerLedger(
        prepaid=acct("customer:prepaid", L),
        bonus=acct("customer:bonus", L),
        package_tokens=acct("customer:package_tokens", L, TOKENS),
        deferred_packages=acct("deferred:packages", L),
        deferred_subscriptions=acct("deferred:subscriptions", L),
        receivable_unbilled=acct("receivable:unbilled", A),
    )


def house_ledger(session: Session, book: str, unit: Unit) -> HouseLedger:
    """Open (or find) the house accounts of a book in one currency."""

    def house(code: str, type_: AccountType, u: Unit = unit, *, hot: bool = True) -> AccountRef:
        return open_account(
            session, code=code, type=type_, unit=u, book=book, track_balance=not hot
        )

    cash_code = "cash:bank" if book == OPERATOR_BOOK else "cash:collected"
    return HouseLedger(
        cash=house(cash_code, A, hot=False),
        promotions=house("promotions", C),
        revenue_usage=house("revenue:usage", R),
        revenue_packages=house("revenue:packages", R),
        revenue_subscriptions=house("revenue:subscriptions", R),
        revenue_breakage=house("revenue:breakage", R),
        tokens_issued=house("entitlements:issued", A, TOKENS),
        tokens_consumed=house("entitlements:consumed", R, TOKENS),
        tokens_expired=house("entitlements:expired", R, TOKENS),
    )
