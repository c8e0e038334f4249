"""The balance view of an account, read from the ledger and the lots in one snapshot."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ledger.accounts import get_balance
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.models import LedgerAccount
from ledger.units import Unit
from plans.catalog import get_plan
from wallet.burn_order import PACKAGE
from wallet.ledger_accounts import currency_of, customer_ledger
from wallet.lots import open_lots
from wallet.models import Account
from wallet.subscriptions import WindowState, get_live_subscription, quota_state


@dataclass(frozen=True, slots=True)
class PackageLine:
    """A token package lot with tokens left."""

    id: int
    models: tuple[str, ...]
    tokens_remaining: int
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    """The live subscription and its quota windows."""

    id: str
    plan_id: str
    status: str
    current_period_end: datetime
    cancel_at_period_end: bool
    windows: list[WindowState]


@dataclass(frozen=True, slots=True)
class BalanceView:
    """What an account can spend now (``available``, in money) and what is held from it.

    ``available`` = paid + bonus - held + (credit_limit - overage_unbilled -
    invoiced_outstanding - reversals_owed): what the account can spend now, in money; ``held``
    is what open gateway authorizations reserve (from prepaid credit and the credit limit,
    and a reseller's float for its sub-accounts) plus credit frozen by disputes. Invoices not
    paid yet and debts left by refunds and disputes (``receivable:reversals``, until an invoice
    bills them) use the credit limit too. Token entitlements are listed apart.
    """

    currency: str
    available: Amount
    paid: Amount
    bonus: Amount
    held: Amount
    overage_unbilled: Amount
    invoiced_outstanding: Amount
    credit_limit: Amount
    reversals_owed: Amount
    packages: list[PackageLine]
    subscription: SubscriptionView | None


def balance_of(session: Session, account: Account, *, at: datetime | None = None) -> BalanceView:
    """The account's balance now (one REPEATABLE READ snapshot keeps the parts consistent)."""
    when = at or utcnow()
    unit = currency_of(account)
    cust = customer_ledger(session, account)
    paid = get_balance(session, cust.prepaid.id)
    bonus = get_balance(session, cust.bonus.id)
    receivable = get_balance(session, cust.receivable_unbilled.id)
    overage = receivable.posted
    # open authorizations reserve credit from the lots and, beyond it, the credit limit;
    # credit freezes hold prepaid and bonus credit in the ledger
    held = (
        paid.pending_out
        + bonus.pending_out
        + receivable.pending_in
        + Amount(_reserved_atoms(session, account.id), unit)
    )
    owed = _owed(session, account.id, unit)
    invoiced = owed.get("receivable:invoiced", Amount.zero(unit))
    reversals = owed.get("receivable:reversals", Amount.zero(unit))
    limit = Amount(account.credit_limit, unit)
    available = paid.posted + bonus.posted - held + limit - overage - invoiced - reversals
    packages = [
        PackageLine(lot.id, tuple(lot.models), lot.remaining, lot.expires_at)
        for lot in open_lots(session, account.id, [PACKAGE])
        if lot.expires_at is None or lot.expires_at > when
    ]
    return BalanceView(
        currency=unit.code,
        available=available,
        paid=paid.posted,
        bonus=bonus.posted,
        held=held,
        overage_unbilled=overage,
        invoiced_outstanding=invoiced,
        credit_limit=limit,
        reversals_owed=reversals,
        packages=packages,
        subscription=_subscription_view(session, account.id, when),
    )


def _reserved_atoms(session: Session, account_id: str) -> int:
    """What open authorizations reserve.

    From the account's money lots, and of the credit limit (its own, and its float for its
    sub-accounts' authorizations).
    """
    reserved_lots, reserved_overage = session.execute(
        text(
            "SELECT (SELECT coalesce(sum(reserved), 0) FROM wallet_credit_lots"
            "        WHERE account_id = :a AND kind IN ('paid', 'bonus') AND reserved > 0),"
            "       (SELECT coalesce(sum(overage), 0) FROM wallet_authorizations"
            "        WHERE account_id = :a AND status = 'approved')"
            "     + (SELECT coalesce(sum(reseller_overage), 0) FROM wallet_authorizations"
            "        WHERE reseller_account_id = :a AND status = 'approved')"
        ),
        {"a": account_id},
    ).one()
    return int(reserved_lots) + int(reserved_overage)


def _owed(session: Session, account_id: str, unit: Unit) -> dict[str, Amount]:
    """What the account owes by ledger account code: invoices and reversal debts."""
    return {
        code: Amount(int(atoms), unit)
        for code, atoms in session.execute(
            select(
                LedgerAccount.code,
                func.sum(LedgerAccount.debits_posted - LedgerAccount.credits_posted),
            )
            .where(
                LedgerAccount.code.in_(("receivable:invoiced", "receivable:reversals")),
                LedgerAccount.owner_id == account_id,
            )
            .group_by(LedgerAccount.code)
        )
    }


def _subscription_view(
    session: Session, account_id: str, when: datetime
) -> SubscriptionView | None:
    """The live subscription with its quota windows at ``when``, if any."""
    sub = get_live_subscription(session, account_id)
    if sub is None:
        return None
    get_plan(session, sub.plan_id)
    return SubscriptionView(
        sub.id,
        sub.plan_id,
        sub.status,
        sub.current_period_end,
        sub.cancel_at_period_end,
        quota_state(session, sub.id, at=when),
    )
