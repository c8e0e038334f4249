"""Freezing a top-up's credit while a claim on its money is open (e.g. a card dispute).

A freeze takes the disputed share of the top-up's unspent paid credit, and the same share of its
unspent bonus, out of the top-up's lots, so usage, gateway holds and purchases cannot spend it,
and puts a pending entry in the ledger for the same amounts (``customer:prepaid`` and
``customer:bonus`` keep agreeing with the lots: both exclude what is held). Exactly one
resolution follows:

* :func:`release_freeze`: the claim failed (dispute won); the lots get the amounts back and the
  hold is voided. A lot that lapsed meanwhile does not come back: its frozen share lapses too
  (bonus to ``promotions``, paid credit to ``revenue:breakage``), as it would have unfrozen.
* :func:`forfeit_freeze`: the claim succeeded (dispute lost); the hold is posted, so the frozen
  paid credit goes to the account the caller named (where the money went) and the bonus back
  to ``promotions``.

What the freeze could not cover (the credit was already spent) is not frozen; the caller books
it as a receivable with :func:`book_receivable` if the money is lost.

The wallet knows nothing of the payment provider: the caller names the ledger account that
receives the forfeited paid credit.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.amounts import Amount
from ledger.base import utcnow
from ledger.holds import create_hold, post_hold, void_hold
from ledger.ids import new_id
from ledger.journal import Leg, post_entry
from wallet.accounts import get_account, lock_owned
from wallet.burn_order import BONUS
from wallet.clawbacks import freeze_shares
from wallet.errors import InvalidRequest
from wallet.ledger_accounts import (
    book_of,
    currency_of,
    customer_ledger,
    house_ledger,
    reversal_receivable,
)
from wallet.models import Account, CreditFreeze, CreditLot
from wallet.topups import lock_topup, lock_topup_lots

#: A freeze lasts until its claim is settled, however long that takes: the ledger's hold expiry
#: job must never release it behind the wallet's back.
FREEZE_HOLD_EXPIRES_AT = datetime(9999, 12, 31, tzinfo=UTC)


def get_freeze(session: Session, key: str, *, lock: bool = False) -> CreditFreeze | None:
    """The freeze made under ``key``, if any."""
    stmt = select(CreditFreeze).where(CreditFreeze.key == key)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def freeze_topup_credit(
    session: Session,
    topup_id: str,
    amount: Amount,
    *,
    key: str,
    forfeit_to_account_id: int,
    reason: str = "",
) -> CreditFreeze:
    """Freeze up to ``amount`` of a top-up's unspent paid credit and the proportional bonus.

    Idempotent per ``key``: a second call returns the first freeze unchanged.

    Args:
        session: the caller's transaction.
        topup_id: the top-up whose credit is frozen.
        amount: the amount under claim; at most the unspent paid credit is frozen.
        key: what the freeze is for (e.g. ``dispute:<id>``), unique.
        forfeit_to_account_id: the ledger account (same book and currency) that receives the
            paid credit if the freeze is forfeited.
        reason: free text kept on the freeze.

    Raises:
        NotFound: no such top-up.
        InvalidRequest: the top-up was never credited, or the amount is not positive.
    """
    existing = get_freeze(session, key, lock=True)
    if existing is not None:
        return existing
    topup = lock_topup(session, topup_id)
    if topup.status != "succeeded" or topup.paid_lot_id is None:
        raise InvalidRequest(f"top-up {topup_id} is {topup.status}: there is no credit to freeze")
    account = get_account(session, topup.account_id)
    unit = currency_of(account)
    if amount.unit.code != unit.code or amount.atoms <= 0:
        raise InvalidRequest(f"a freeze of top-up {topup_id} is a positive {unit.code} amount")
    paid, bonus_lot = lock_topup_lots(session, topup)
    live_bonus = (
        bonus_lot.remaining if bonus_lot is not None and bonus_lot.expired_at is None else 0
    )
    frozen_paid, frozen_bonus = freeze_shares(
        amount.atoms, paid_left=paid.remaining, bonus_left=live_bonus
    )
    freeze = CreditFreeze(
        id=new_id("frz"),
        key=key,
        account_id=account.id,
        topup_id=topup.id,
        status="frozen",
        reason=reason,
        requested=amount.atoms,
        frozen_paid=frozen_paid,
        frozen_bonus=frozen_bonus,
        reserved=[],
        forfeit_account_id=forfeit_to_account_id,
    )
    _hold_frozen(session, account, freeze, (paid, bonus_lot))
    session.add(freeze)
    session.flush()
    return freeze


def _hold_frozen(
    session: Session,
    account: Account,
    freeze: CreditFreeze,
    lots: tuple[CreditLot, CreditLot | None],
) -> None:
    """Take the frozen amounts out of the top-up's lots and hold them in the ledger.

    Recorded in ``freeze.reserved``. Paid credit towards the forfeit account, bonus to promotions.
    """
    paid, bonus_lot = lots
    unit = currency_of(account)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    legs: list[Leg] = []
    reserved: list[list[int]] = []
    if freeze.frozen_paid:
        legs += [
            Leg(cust.prepaid.id, Amount(freeze.frozen_paid, unit)),
            Leg(freeze.forfeit_account_id, Amount(-freeze.frozen_paid, unit)),
        ]
        paid.remaining -= freeze.frozen_paid
        reserved.append([paid.id, freeze.frozen_paid])
    if freeze.frozen_bonus and bonus_lot is not None:
        legs += [
            Leg(cust.bonus.id, Amount(freeze.frozen_bonus, unit)),
            Leg(house.promotions.id, Amount(-freeze.frozen_bonus, unit)),
        ]
        bonus_lot.remaining -= freeze.frozen_bonus
        reserved.append([bonus_lot.id, freeze.frozen_bonus])
    if legs:
        hold = create_hold(
            session,
            legs,
            expires_at=FREEZE_HOLD_EXPIRES_AT,
            description=f"credit of top-up {freeze.topup_id} frozen: {freeze.reason}".strip(": "),
            idempotency_key=f"freeze:{freeze.id}",
            metadata={"freeze_id": freeze.id, "topup_id": freeze.topup_id, "key": freeze.key},
        )
        freeze.hold_entry_id = hold.id
    freeze.reserved = reserved


def _lock(session: Session, freeze_id: str) -> CreditFreeze:
    """Lock the freeze's account row, then the freeze row.

    The wallet's first lock: usage rewrites lots under it alone.
    """
    return lock_owned(session, CreditFreeze, freeze_id, "freeze")


def release_freeze(session: Session, freeze_id: str, *, at: datetime | None = None) -> CreditFreeze:
    """Give frozen credit back to its lots (a freeze already resolved is left as it is).

    Raises:
        NotFound: no such freeze.
    """
    freeze = _lock(session, freeze_id)
    if freeze.status != "frozen":
        return freeze
    when = at or utcnow()
    account = get_account(session, freeze.account_id)
    unit = currency_of(account)
    cust = customer_ledger(session, account)
    house = house_ledger(session, book_of(account), unit)
    lapsed: list[Leg] = []
    if freeze.reserved:
        lots = {
            lot.id: lot
            for lot in session.scalars(
                select(CreditLot)
                .where(CreditLot.id.in_([lot_id for lot_id, _ in freeze.reserved]))
                .order_by(CreditLot.id)
                .with_for_update()
            )
        }
        for lot_id, atoms in freeze.reserved:
            lot = lots[lot_id]
            if lot.expired_at is None:
                lot.remaining += atoms
                continue
            amt = Amount(atoms, unit)
            if lot.kind == BONUS:
                lapsed += [Leg(cust.bonus.id, amt), Leg(house.promotions.id, -amt)]
            else:
                lapsed += [Leg(cust.prepaid.id, amt), Leg(house.revenue_breakage.id, -amt)]
    if freeze.hold_entry_id is not None:
        description = f"freeze {freeze.id} released"
        if lapsed:
            entry = post_hold(
                session,
                freeze.hold_entry_id,
                lapsed,
                allow_exceed=True,
                description=description + " (lapsed lots expire)",
                now=when,
            )
        else:
            entry = void_hold(session, freeze.hold_entry_id, description=description, now=when)
        freeze.resolution_entry_id = entry.id
    freeze.status, freeze.resolved_at = "released", when
    session.flush()
    return freeze


def forfeit_freeze(session: Session, freeze_id: str, *, at: datetime | None = None) -> CreditFreeze:
    """Let frozen credit go.

    Post the hold (paid credit to the forfeit account, bonus back to promotions). A freeze already
    resolved is left as it is.

    Raises:
        NotFound: no such freeze.
    """
    freeze = _lock(session, freeze_id)
    if freeze.status != "frozen":
        return freeze
    when = at or utcnow()
    if freeze.hold_entry_id is not None:
        entry = post_hold(
            session,
            freeze.hold_entry_id,
            description=f"freeze {freeze.id} forfeited",
            now=when,
        )
        freeze.resolution_entry_id = entry.id
    freeze.status, freeze.resolved_at = "forfeited", when
    session.flush()
    return freeze


def book_receivable(
    session: Session,
    account_id: str,
    amount: Amount,
    *,
    credit_account_id: int,
    key: str,
    description: str,
    effective_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """Record money the customer owes because a payment was reversed after its credit was spent.

    Debit the account's ``receivable:reversals``, credit ``credit_account_id`` (where the money
    went). Idempotent per ``key``; returns the entry id.

    Raises:
        NotFound: no such account.
        InvalidRequest: the amount is not positive.
    """
    account = get_account(session, account_id)
    if amount.atoms <= 0 or amount.unit.code != account.currency:
        raise InvalidRequest(f"a receivable of account {account_id} is a positive amount")
    owed = reversal_receivable(session, account)
    entry = post_entry(
        session,
        [Leg(owed.id, amount), Leg(credit_account_id, -amount)],
        description=description,
        idempotency_key=key,
        effective_at=effective_at,
        metadata={"account_id": account_id, **(metadata or {})},
    )
    return entry.id
