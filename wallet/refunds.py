"""Refunds of a top-up's money (bonus clawed back with it) and their undoing.

The rule (:func:`reverse_topup`): returning ``amount`` of a top-up of ``P`` that came with bonus
``B`` takes back ``B x amount / P`` of bonus (cumulative over refunds, rounded down to the atom
in the customer's favour). It comes out of the top-up's unspent bonus first; bonus already spent
is the customer's to repay: kept back from what is paid out when the money has not left yet
(``withheld``), or booked as owed in ``receivable:reversals`` when it has. A bonus lot that
expired is not charged for (what it had left went back at expiry). A refund larger than the
unspent paid credit is refused or its excess booked as owed. Frozen credit is not unspent.

Undoing a refund that failed at the provider (:func:`undo_refund`) is its exact inverse: the
money is back in the cash account it left; the paid credit goes back to the top-up's paid lot,
the bonus to its bonus lot (same expiry; a bonus lot that has expired since gets nothing: the
bonus would have lapsed); what it booked as owed is cancelled while ``receivable:reversals``
still holds it, and what an invoice has billed already (the customer owes or paid it there)
becomes paid credit instead.

The arithmetic is :mod:`wallet.clawbacks`; this module locks, reads, posts and updates the
lots. Lock order: the account row, the top-up, its lots (:func:`wallet.topups.lock_topup`),
then ledger accounts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.accounts import AccountRef
from ledger.amounts import Amount
from ledger.errors import InvalidAmount, NotFound
from ledger.journal import Leg, post_entry
from ledger.models import JournalEntry, LedgerAccount, Posting
from ledger.units import Unit
from wallet.accounts import EVERYTHING, Scope, get_account
from wallet.burn_order import PAID
from wallet.clawbacks import RefundSplit, TopupSoFar, UndoSplit, split_refund, split_undo
from wallet.errors import InvalidRequest, RefundTooLarge
from wallet.ledger_accounts import (
    book_of,
    cash_for_method,
    currency_of,
    customer_ledger,
    house_ledger,
    reversal_receivable,
)
from wallet.models import Account, CreditFreeze, CreditLot, Topup
from wallet.topups import lock_topup, lock_topup_lots, parse_money

Excess = Literal["reject", "receivable"]


@dataclass(frozen=True, slots=True)
class Refund:
    """What a refund gave back and took back.

    Attributes:
        refunded: unspent paid credit reversed.
        bonus_clawed_back: the bonus taken back with it (unspent bonus, plus spent bonus
            withheld or owed).
        receivable: what the customer now owes (``receivable:reversals``): the part of a refund
            that exceeded the unspent credit, and spent bonus, when the money had already left.
        withheld: spent bonus kept back from the payout (money not paid out yet); the payout is
            ``refunded - withheld``.
    """

    topup_id: str
    refunded: Amount
    bonus_clawed_back: Amount
    entry_id: int
    receivable: Amount | None = None
    withheld: Amount | None = None


def unspent_paid(session: Session, topup_id: str) -> Amount:
    """The top-up's paid credit that is still unspent (and not frozen).

    Raises:
        NotFound: no such top-up, or nothing was credited yet.
    """
    topup = session.get(Topup, topup_id)
    if topup is None or topup.paid_lot_id is None:
        raise NotFound(f"top-up {topup_id} does not exist or was not credited")
    return session.get_one(CreditLot, topup.paid_lot_id).remaining_amount


class _Roles:
    """The ledger accounts a refund's legs name by role (:mod:`wallet.clawbacks`).

    The customer's ``receivable:reversals`` is opened only when a leg needs it.
    """

    def __init__(self, session: Session, account: Account, topup: Topup) -> None:
        self.session, self.account = session, account
        cust = customer_ledger(session, account)
        house = house_ledger(session, book_of(account), currency_of(account))
        self.ids: dict[str, int] = {
            "prepaid": cust.prepaid.id,
            "bonus": cust.bonus.id,
            "cash": cash_for_method(house, topup.method).id,
            "promotions": house.promotions.id,
        }

    def reversals(self) -> AccountRef:
        """The customer's ``receivable:reversals`` (opened on first use)."""
        owed = reversal_receivable(self.session, self.account)
        self.ids["reversals"] = owed.id
        return owed

    def legs(self, legs: list[tuple[str, int]], unit: Unit) -> list[Leg]:
        """Ledger legs for ``(role, atoms)`` pairs, in the same order."""
        if any(role == "reversals" for role, _ in legs) and "reversals" not in self.ids:
            self.reversals()
        return [Leg(self.ids[role], Amount(atoms, unit)) for role, atoms in legs]


def _locked_for_refund(
    session: Session, topup_id: str, amount: Amount, scope: Scope
) -> tuple[Topup, Account]:
    """Check visibility, lock the account and the top-up, and check the refund can apply.

    Raises:
        NotFound: no such top-up visible to the caller.
        InvalidRequest: the top-up was never credited.
        InvalidAmount: not a positive amount of the account's currency.
    """
    seen = session.get(Topup, topup_id)
    if seen is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    get_account(session, seen.account_id, scope=scope)  # visibility before any lock
    topup = lock_topup(session, topup_id)
    account = get_account(session, topup.account_id, scope=scope)
    unit = currency_of(account)
    if topup.status != "succeeded" or topup.paid_lot_id is None:
        raise InvalidRequest(f"top-up {topup_id} is {topup.status}: nothing was credited")
    if amount.unit.code != unit.code or amount.atoms <= 0:
        raise InvalidAmount(f"a refund of top-up {topup_id} is a positive {unit.code} amount")
    return topup, account


def _frozen_bonus(session: Session, topup: Topup) -> int:
    """Bonus of the top-up held by its open credit freezes."""
    return sum(
        f.frozen_bonus
        for f in session.scalars(
            select(CreditFreeze).where(
                CreditFreeze.topup_id == topup.id, CreditFreeze.status == "frozen"
            )
        )
    )


def _split(
    session: Session,
    topup: Topup,
    amount: Amount,
    lots: tuple[CreditLot, CreditLot | None],
    on_excess: Excess,
) -> RefundSplit:
    """Decide the refund's parts from the locked lots.

    Raises:
        RefundTooLarge: more than the unspent paid credit, with ``on_excess="reject"``.
    """
    paid, bonus_lot = lots
    unspent = Amount(paid.remaining, amount.unit)
    if amount > unspent and on_excess == "reject":
        raise RefundTooLarge(
            f"top-up {topup.id} has {unspent} of unspent paid credit; cannot refund {amount}",
            unspent=unspent.format(),
        )
    live = bonus_lot is not None and bonus_lot.expired_at is None
    return split_refund(
        amount.atoms,
        TopupSoFar(topup.amount, topup.bonus, topup.refunded, topup.bonus_clawed_back),
        unspent=paid.remaining,
        bonus_left=bonus_lot.remaining if live and bonus_lot is not None else None,
        bonus_frozen=_frozen_bonus(session, topup) if live else 0,
        withhold=on_excess == "reject",
    )


def reverse_topup(
    session: Session,
    topup_id: str,
    amount: Amount,
    *,
    on_excess: Excess = "reject",
    reason: str = "",
    idempotency_key: str | None = None,
    effective_at: datetime | None = None,
    scope: Scope = EVERYTHING,
) -> Refund:
    """Give back ``amount`` of a top-up's money.

    Reverse unspent paid credit and take back the bonus that came with the money returned (the rule
    is in this module's docstring).

    Args:
        session: the caller's transaction.
        topup_id: the top-up whose money is given back.
        amount: the money given back, in the top-up's currency.
        on_excess: ``"reject"`` refuses a refund beyond the unspent paid credit and withholds
            spent bonus from the payout (the money has not left yet, e.g. a bank refund);
            ``"receivable"`` books both as owed (a card refund made at the provider).
        reason: free text kept on the refund.
        idempotency_key: a repeat with the same key returns the first refund unchanged.
        effective_at: when the money moved, for the ledger entry (default: now).
        scope: accounts outside it are unknown to the caller.

    Raises:
        NotFound: no such top-up visible to the caller.
        InvalidRequest: the top-up was never credited.
        RefundTooLarge: more than the unspent paid credit, with ``on_excess="reject"``.
    """
    topup, account = _locked_for_refund(session, topup_id, amount, scope)
    unit = currency_of(account)
    paid, bonus_lot = lots = lock_topup_lots(session, topup)
    split = _split(session, topup, amount, lots, on_excess)
    entry = post_entry(
        session,
        _Roles(session, account, topup).legs(split.legs(), unit),
        description=f"refund of top-up {topup_id}: {reason}".strip(": "),
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        metadata=_refund_metadata(topup_id, reason, split, unit),
    )
    if not entry.replayed:
        paid.remaining -= split.refunded
        if bonus_lot is not None:
            bonus_lot.remaining -= split.bonus_from_lot
        topup.refunded += amount.atoms
        topup.bonus_clawed_back += split.bonus_clawed_back
    session.flush()
    return Refund(
        topup_id,
        Amount(split.refunded, unit),
        Amount(split.bonus_clawed_back, unit),
        entry.id,
        Amount(split.receivable, unit),
        Amount(split.withheld, unit),
    )


def _refund_metadata(topup_id: str, reason: str, split: RefundSplit, unit: Unit) -> dict[str, Any]:
    """The refund entry's metadata.

    The parts formatted, and exact (so a refund that fails later is undone exactly,
    :func:`undo_refund`).
    """
    return {
        "topup_id": topup_id,
        "reason": reason,
        "refunded": Amount(split.refunded, unit).format(),
        "receivable": Amount(split.receivable, unit).format(),
        "withheld": Amount(split.withheld, unit).format(),
        "atoms": split.atoms(),
    }


def refund_topup(
    session: Session,
    topup_id: str,
    *,
    amount: str | None = None,
    reason: str = "",
    scope: Scope = EVERYTHING,
) -> Refund:
    """Refund unspent paid credit of a top-up, clawing back the proportional unspent bonus.

    The rule: at most the top-up's unspent paid credit can be refunded (a larger refund is
    rejected, ``refund_exceeds_unspent``). Refunding a share ``r`` of the unspent paid credit
    claws back the same share of the top-up's unspent bonus (rounded down to the atom, in the
    customer's favour). See :func:`reverse_topup`.

    Raises:
        NotFound: no such top-up visible to the caller.
        RefundTooLarge: more than the unspent paid credit.
    """
    topup = session.get(Topup, topup_id)
    if topup is None:
        raise NotFound(f"top-up {topup_id} does not exist")
    account = get_account(session, topup.account_id, scope=scope)
    if topup.method == "stripe":
        raise InvalidRequest(
            f"top-up {topup_id} was paid by card: refund it through the payment provider"
        )
    if amount:
        wanted = parse_money(amount, account, what="refund amount")
    else:
        wanted = unspent_paid(session, topup_id)
        if wanted.atoms == 0:
            raise RefundTooLarge(f"top-up {topup_id} has no unspent paid credit left to refund")
    return reverse_topup(session, topup_id, wanted, reason=reason, scope=scope)


@dataclass(frozen=True, slots=True)
class RefundUndone:
    """What undoing a refund gave back (a refund that failed at the provider).

    Attributes:
        cash: the money that came back (debited to the cash account it left).
        paid: paid credit restored (to the top-up's paid lot, and a new paid lot for debt the
            refund had booked that could no longer be cancelled, e.g. already invoiced).
        bonus: bonus restored to the top-up's bonus lot (with its expiry; nothing when that lot
            has expired since: it would have lapsed).
        debt_cancelled: what the refund had booked as owed (``receivable:reversals``) and is
            cancelled.
    """

    topup_id: str
    cash: Amount
    paid: Amount
    bonus: Amount
    debt_cancelled: Amount
    entry_id: int | None


def _parts_of_refund(session: Session, entry_id: int, ids: dict[str, int]) -> RefundSplit:
    """The exact parts of a refund entry written by :func:`reverse_topup`.

    Its metadata keeps them; older entries are read from their postings, which determine them when
    nothing was withheld, as for every card refund.
    """
    entry = session.get_one(JournalEntry, entry_id)
    atoms = (entry.metadata_ or {}).get("atoms")
    if isinstance(atoms, dict):
        return RefundSplit.from_atoms({k: int(v) for k, v in atoms.items()})
    rows = session.execute(
        select(Posting.account_id, Posting.amount).where(
            Posting.entry_id == entry_id, Posting.phase == 0
        )
    ).all()
    by_account: dict[int, int] = {}
    for account_id, amt in rows:
        by_account[account_id] = by_account.get(account_id, 0) + int(amt)
    total = {role: by_account.get(ids[role], 0) for role in ("prepaid", "cash", "bonus")}
    return RefundSplit.from_postings(**total, reversals=by_account.get(ids["reversals"], 0))


def _posted_balance(session: Session, ledger_account_id: int) -> int:
    """A tracked asset account's posted balance (debits - credits), read fresh."""
    row = session.execute(
        select(LedgerAccount.debits_posted, LedgerAccount.credits_posted)
        .where(LedgerAccount.id == ledger_account_id)
        .execution_options(populate_existing=True)
    ).one()
    return int(row.debits_posted) - int(row.credits_posted)


def undo_refund(
    session: Session,
    topup_id: str,
    refund_entry_id: int,
    *,
    idempotency_key: str,
    reason: str = "",
    effective_at: datetime | None = None,
) -> RefundUndone:
    """Undo one refund of a top-up whose money came back (the refund failed at the provider).

    The exact inverse of what :func:`reverse_topup` booked (see this module's docstring).

    Idempotent per ``idempotency_key``.

    Raises:
        NotFound: no such top-up.
    """
    topup = lock_topup(session, topup_id)
    account = get_account(session, topup.account_id)
    unit = currency_of(account)
    prior = session.scalar(
        select(JournalEntry.id).where(JournalEntry.idempotency_key == idempotency_key)
    )
    if prior is not None:
        zero = Amount(0, unit)
        return RefundUndone(topup_id, zero, zero, zero, zero, None)
    roles = _Roles(session, account, topup)
    owed = roles.reversals()
    refund = _parts_of_refund(session, refund_entry_id, roles.ids)
    paid_lot, bonus_lot = lock_topup_lots(session, topup)
    undo = split_undo(
        refund,
        bonus_lot_live=bonus_lot is not None and bonus_lot.expired_at is None,
        reversals_held=_posted_balance(session, owed.id),
    )
    entry = post_entry(
        session,
        roles.legs(undo.legs(), unit),
        description=f"refund of top-up {topup_id} undone: {reason}".strip(": "),
        idempotency_key=idempotency_key,
        effective_at=effective_at,
        metadata={
            "topup_id": topup_id,
            "undoes_entry_id": refund_entry_id,
            "reason": reason,
            "atoms": undo.atoms(),
        },
    )
    _restore_lots(session, topup, refund, undo, (paid_lot, bonus_lot), roles.ids["prepaid"])
    return RefundUndone(
        topup_id,
        Amount(undo.cash_back, unit),
        Amount(undo.paid, unit),
        Amount(undo.bonus_back, unit),
        Amount(undo.debt_cancelled, unit),
        entry.id,
    )


def _restore_lots(
    session: Session,
    topup: Topup,
    refund: RefundSplit,
    undo: UndoSplit,
    lots: tuple[CreditLot, CreditLot | None],
    prepaid_id: int,
) -> None:
    """Give the lots back what the refund took and take the refund off the top-up's totals.

    A new paid lot for owed parts that could not be cancelled.
    """
    paid_lot, bonus_lot = lots
    paid_lot.remaining += refund.refunded
    if undo.extra_paid:
        session.add(
            CreditLot(
                account_id=topup.account_id,
                kind=PAID,
                unit=paid_lot.unit,
                ledger_account_id=prepaid_id,
                granted=undo.extra_paid,
                remaining=undo.extra_paid,
                source_type="refund_undone",
                source_id=topup.id,
            )
        )
    if bonus_lot is not None and undo.bonus_back:
        bonus_lot.remaining += undo.bonus_back
    topup.refunded -= refund.refunded + refund.excess
    # all the bonus reverse_topup counted as clawed back, the withheld part included: the undo
    # cancels the withheld part too (back to promotions), so a later refund reclaims it again
    topup.bonus_clawed_back -= refund.bonus_clawed_back
    session.flush()
