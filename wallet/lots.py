"""Credit lots: spending money in burn order, and expiring lots with their ledger entries.

Lock order: see :mod:`wallet.accounts` (account rows, then lots by id, then ledger accounts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import get_balance
from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.errors import InsufficientFunds
from ledger.journal import EntrySpec, Leg, post_entries
from wallet.accounts import lock_accounts
from wallet.burn_order import BONUS, MONEY_KINDS, PACKAGE, PAID, validate_burn_order
from wallet.burndown import Lot, Owner, WalletState, draw
from wallet.ledger_accounts import (
    CustomerLedger,
    book_of,
    currency_of,
    customer_ledger,
    house_ledger,
)
from wallet.models import Account, CreditLot
from wallet.outbox import emit


def open_lots(
    session: Session, account_id: str, kinds: Sequence[str], *, lock: bool = False
) -> list[CreditLot]:
    """Lots of ``kinds`` with something left, in id order (locked when ``lock``)."""
    stmt = (
        select(CreditLot)
        .where(
            CreditLot.account_id == account_id, CreditLot.kind.in_(kinds), CreditLot.remaining > 0
        )
        .order_by(CreditLot.id)
    )
    if lock:
        stmt = stmt.with_for_update()
    return list(session.scalars(stmt))


@dataclass(frozen=True, slots=True)
class MoneyDraw:
    """Debit legs that take money from an account's lots, and what each lot paid."""

    legs: tuple[Leg, ...]
    taken: tuple[tuple[int, int], ...]  # (lot id, atoms)


def draw_money(
    session: Session,
    account: Account,
    amount: Amount,
    *,
    at: datetime | None = None,
    from_lot_id: int | None = None,
) -> MoneyDraw:
    """Take ``amount`` from the account's bonus and paid lots in its burn order.

    The same :func:`wallet.burndown.draw` that usage and holds use; purchases use money only. The
    caller holds the account row.

    Decrements the lots and returns the debit legs; the caller adds the credit legs and posts
    the entry in the same transaction.

    Args:
        session: the caller's transaction.
        account: the account whose lots pay (its row locked by the caller).
        amount: what to take, in the account's currency.
        at: when the money is taken (default: now); lots expired by then do not pay.
        from_lot_id: take the whole amount from this one lot (e.g. the paid lot a card payment
            just created for a purchase), not from the burn order.

    Raises:
        InsufficientFunds: the lots cannot cover ``amount`` (nothing is changed).
    """
    when = at or utcnow()
    rows = open_lots(session, account.id, sorted(MONEY_KINDS), lock=True)
    if from_lot_id is not None:
        rows = [lot for lot in rows if lot.id == from_lot_id]
    lean = {row.id: lean_lot(row) for row in rows}
    wallet = WalletState(
        account=Owner(account.id, account.parent_id, account.credit_limit),
        unit=amount.unit,
        order=validate_burn_order(account.burn_order),
        lots=list(lean.values()),
        overage_used=0,
    )
    paid, short, _ = draw(wallet, "", amount.atoms, 0, when, sources=MONEY_KINDS, use_plan=False)
    if paid is None:
        have = Amount(amount.atoms - short, amount.unit)
        raise InsufficientFunds(
            f"account {account.id} has {have} of credit and needs {amount}",
            account_id=account.id,
            available=have.format(),
            required=amount.format(),
        )
    ledger = customer_ledger(session, account)
    by_id = {row.id: row for row in rows}
    for lot, take in paid.lots:
        by_id[lot.id].remaining -= take
    legs = []
    if paid.money.get(BONUS):
        legs.append(Leg(ledger.bonus.id, Amount(paid.money[BONUS], amount.unit)))
    if paid.money.get(PAID):
        legs.append(Leg(ledger.prepaid.id, Amount(paid.money[PAID], amount.unit)))
    session.flush()
    return MoneyDraw(tuple(legs), tuple((lot.id, take) for lot, take in paid.lots))


def draw_paid_credit(
    session: Session, account: Account, wanted: Amount, *, at: datetime | None = None
) -> MoneyDraw:
    """Take up to ``wanted`` from the account's **paid** lots, in the burn order's lot order.

    Never bonus: this pays money owed, e.g. an invoice's tax; the lots give as much as they can.
    The caller holds the account row, adds the credit legs and posts the entry.

    Returns:
        The debit leg on ``customer:prepaid`` (none when nothing could be taken) and what each
        lot paid.
    """
    when = at or utcnow()
    rows = open_lots(session, account.id, [PAID], lock=True)
    wallet = WalletState(
        account=Owner(account.id, account.parent_id, 0),
        unit=wanted.unit,
        order=validate_burn_order(account.burn_order),
        lots=[lean_lot(row) for row in rows],
        overage_used=0,
    )
    paid, _, _ = draw(
        wallet, "", wanted.atoms, 0, when, sources=(PAID,), use_plan=False, partial=True
    )
    if paid is None or not paid.money.get(PAID):
        return MoneyDraw((), ())
    by_id = {row.id: row for row in rows}
    for lot, take in paid.lots:
        by_id[lot.id].remaining -= take
    ledger = customer_ledger(session, account)
    session.flush()
    return MoneyDraw(
        (Leg(ledger.prepaid.id, Amount(paid.money[PAID], wanted.unit)),),
        tuple((lot.id, take) for lot, take in paid.lots),
    )


def lean_lot(row: CreditLot) -> Lot:
    """The burn-down's view of a lot row."""
    return Lot(
        id=row.id,
        account_id=row.account_id,
        kind=row.kind,
        remaining=row.remaining,
        reserved=row.reserved,
        granted=row.granted,
        priority=row.priority,
        expires_at=row.expires_at,
        models=tuple(row.models or ()),
        price=row.price,
        deferred=row.deferred,
        ledger_account_id=row.ledger_account_id,
        valid_from=row.valid_from,
    )


def money_balance(session: Session, ledger: CustomerLedger) -> Amount:
    """Paid plus bonus credit that can be spent now (holds excluded)."""
    return (
        get_balance(session, ledger.prepaid.id).available
        + get_balance(session, ledger.bonus.id).available
    )


def check_low_balance(session: Session, account: Account, before: Amount) -> None:
    """Emit ``balance.low`` when spending crossed the account's threshold."""
    if account.low_balance_threshold is None:
        return
    threshold = Amount(account.low_balance_threshold, before.unit)
    after = money_balance(session, customer_ledger(session, account))
    if before >= threshold > after:
        emit(
            session,
            account_id=account.id,
            type="balance.low",
            data={
                "account_id": account.id,
                "available": {"amount": after.format(), "currency": after.unit.code},
                "threshold": {"amount": threshold.format(), "currency": threshold.unit.code},
            },
        )


def expire_lots(session: Session, *, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Expire lots past their expiry.

    Bonus back to promotions, package tokens and their deferred money to breakage, paid credit (only
    lots that have an expiry) to breakage. Idempotent.

    A lot that an open gateway hold has reserved from waits until the hold is resolved (the
    reservation goes back to it first), so a hold never gives back to an expired lot.
    """
    at = now or utcnow()
    due = session.execute(
        select(CreditLot.id, CreditLot.account_id)
        .where(
            CreditLot.expired_at.is_(None),
            CreditLot.expires_at.is_not(None),
            CreditLot.expires_at <= at,
        )
        .order_by(CreditLot.expires_at, CreditLot.id)
        .limit(limit)
    ).all()
    if not due:
        return []
    accounts = lock_accounts(session, {row.account_id for row in due}, with_parents=False)
    # read after the account rows are locked; a lot an authorization still reserves from waits
    rows = session.scalars(
        select(CreditLot)
        .where(
            CreditLot.id.in_([row.id for row in due]),
            CreditLot.expired_at.is_(None),
            CreditLot.reserved == 0,
        )
        .order_by(CreditLot.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    for lot in rows:
        if lot.remaining == 0:  # spent before it expired: nothing to book, out of the index
            lot.expired_at = at
    lots = [lot for lot in rows if lot.remaining > 0]
    specs = [_expiry_entry(session, accounts[lot.account_id], lot, at) for lot in lots]
    if specs:
        post_entries(session, specs)
    session.flush()
    return [lot.id for lot in lots]


def _expiry_entry(session: Session, account: Account, lot: CreditLot, at: datetime) -> EntrySpec:
    """The entry that expires what is left in a lot, emptied and marked expired at ``at``.

    Bonus goes to promotions, paid credit to breakage, package tokens to expired with their
    deferred money to breakage.
    """
    cust = customer_ledger(session, account)
    unit = currency_of(account)
    house = house_ledger(session, book_of(account), unit)
    legs: list[Leg]
    if lot.kind == BONUS:
        amt = lot.remaining_amount
        legs = [Leg(cust.bonus.id, amt), Leg(house.promotions.id, -amt)]
    elif lot.kind == PAID:
        amt = lot.remaining_amount
        legs = [Leg(cust.prepaid.id, amt), Leg(house.revenue_breakage.id, -amt)]
    else:
        tokens = lot.remaining_amount
        legs = [Leg(cust.package_tokens.id, tokens), Leg(house.tokens_expired.id, -tokens)]
        if lot.deferred:
            money = Amount(lot.deferred, unit)
            legs += [
                Leg(cust.deferred_packages.id, money),
                Leg(house.revenue_breakage.id, -money),
            ]
        lot.deferred = 0
    spec = EntrySpec(
        legs=tuple(legs),
        description=f"{lot.kind} lot {lot.id} expired",
        idempotency_key=f"lot-expiry:{lot.id}",
        effective_at=lot.expires_at,
        metadata={"lot_id": lot.id, "account_id": lot.account_id},
    )
    lot.remaining = 0
    lot.expired_at = at
    return spec


def notify_expiring(session: Session, *, now: datetime | None = None) -> int:
    """Emit ``credits.expiring`` once per lot when it enters its account's notice window."""
    at = now or utcnow()
    rows = session.execute(
        select(CreditLot, Account.expiring_notice_days)
        .join(Account, Account.id == CreditLot.account_id)
        .where(
            CreditLot.expired_at.is_(None),
            CreditLot.expires_at.is_not(None),
            CreditLot.remaining > 0,
            CreditLot.expires_at > at,
            CreditLot.expires_at <= at + timedelta(days=90),
        )
    ).all()
    sent = 0
    for lot, days in rows:
        assert lot.expires_at is not None
        if lot.expires_at - at > timedelta(days=days):
            continue
        remaining: dict[str, object]
        if lot.kind == PACKAGE:
            remaining = {"tokens": lot.remaining}
        else:
            remaining = {"amount": lot.remaining_amount.format(), "currency": lot.unit}
        data = {
            "account_id": lot.account_id,
            "lot_id": lot.id,
            "kind": lot.kind,
            "expires_at": lot.expires_at.isoformat(),
            "remaining": remaining,
        }
        if emit(
            session,
            account_id=lot.account_id,
            type="credits.expiring",
            data=data,
            dedupe_key=f"credits.expiring:{lot.id}",
        ):
            sent += 1
    return sent
