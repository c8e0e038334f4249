"""How money given back out of a top-up splits (pure; no database).

Three decisions, in currency atoms:

* :func:`split_refund`: returning ``amount`` of a top-up reverses unspent paid credit (the rest
  is excess) and takes back the bonus that came with the money returned: from the unspent bonus
  first; bonus already spent is withheld from the payout or owed;
* :func:`split_undo`: undoing such a refund (it failed at the provider) gives exactly that back;
  owed parts are cancelled while the receivable still holds them, the rest becomes paid credit;
* :func:`freeze_shares`: freezing a share of unspent paid credit freezes the same share of the
  unspent bonus.

The ledger legs are listed as ``(role, atoms)`` pairs, debit positive, in the order they are
posted; the roles name the ledger accounts the caller resolves: ``prepaid`` and ``bonus`` (the
customer's), ``cash`` (the top-up's cash account), ``promotions`` (the book's) and
``reversals`` (the customer's ``receivable:reversals``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: A ledger account the caller resolves: prepaid, bonus, cash, promotions or reversals.
Role = str


@dataclass(frozen=True, slots=True)
class TopupSoFar:
    """A top-up's paid money and bonus, and what earlier refunds took back (atoms)."""

    amount: int
    bonus: int
    refunded: int
    bonus_clawed_back: int

    def bonus_due(self, returned: int) -> int:
        """The bonus that goes with ``returned`` more atoms of money and is not reclaimed yet.

        Returning ``x`` of a top-up of ``P`` that came with bonus ``B`` takes back ``B x / P``,
        cumulative over refunds, rounded down to the atom (in the customer's favour).
        """
        total = self.bonus * min(self.refunded + returned, self.amount) // self.amount
        return max(0, total - self.bonus_clawed_back)


@dataclass(frozen=True, slots=True)
class RefundSplit:
    """The parts of one refund of a top-up (atoms of its currency).

    Attributes:
        amount: what was asked for (``refunded + excess``).
        refunded: unspent paid credit reversed.
        excess: the part beyond the unspent paid credit, owed by the customer.
        bonus_from_lot: unspent bonus taken back from the top-up's bonus lot.
        bonus_owed: spent bonus owed by the customer (``receivable:reversals``).
        withheld: spent bonus kept back from the payout.
    """

    amount: int
    refunded: int
    excess: int
    bonus_from_lot: int
    bonus_owed: int
    withheld: int

    @property
    def receivable(self) -> int:
        """What the customer now owes: the excess and the spent bonus not withheld."""
        return self.excess + self.bonus_owed

    @property
    def bonus_clawed_back(self) -> int:
        """All bonus taken back: from the lot, withheld and owed."""
        return self.bonus_from_lot + self.withheld + self.bonus_owed

    def atoms(self) -> dict[str, int]:
        """The parts by name, as kept in the refund entry's metadata."""
        return {
            "amount": self.amount,
            "refunded": self.refunded,
            "excess": self.excess,
            "bonus_from_lot": self.bonus_from_lot,
            "bonus_owed": self.bonus_owed,
            "withheld": self.withheld,
        }

    @classmethod
    def from_atoms(cls, atoms: Mapping[str, int]) -> RefundSplit:
        """The parts kept by :meth:`atoms`."""
        return cls(
            amount=atoms["amount"],
            refunded=atoms["refunded"],
            excess=atoms["excess"],
            bonus_from_lot=atoms["bonus_from_lot"],
            bonus_owed=atoms["bonus_owed"],
            withheld=atoms["withheld"],
        )

    @classmethod
    def from_postings(cls, *, prepaid: int, cash: int, bonus: int, reversals: int) -> RefundSplit:
        """The parts of a refund entry written without them, from its posted totals per role.

        They are determined when nothing was withheld (as for every card refund).
        """
        refunded = prepaid
        excess = -cash - refunded
        return cls(
            amount=refunded + excess,
            refunded=refunded,
            excess=excess,
            bonus_from_lot=bonus,
            bonus_owed=reversals - excess,
            withheld=0,
        )

    def legs(self) -> list[tuple[Role, int]]:
        """The refund entry's legs, in posting order (none of zero)."""
        legs: list[tuple[Role, int]] = []
        if self.refunded:
            legs.append(("prepaid", self.refunded))
            if self.refunded - self.withheld:
                legs.append(("cash", self.withheld - self.refunded))
            if self.withheld:
                legs.append(("promotions", -self.withheld))
        if self.bonus_from_lot:
            legs += [("bonus", self.bonus_from_lot), ("promotions", -self.bonus_from_lot)]
        if self.excess:
            legs += [("reversals", self.excess), ("cash", -self.excess)]
        if self.bonus_owed:
            legs += [("reversals", self.bonus_owed), ("promotions", -self.bonus_owed)]
        return legs


def split_refund(
    amount: int,
    topup: TopupSoFar,
    *,
    unspent: int,
    bonus_left: int | None,
    bonus_frozen: int,
    withhold: bool,
) -> RefundSplit:
    """Split a refund of ``amount`` atoms of a top-up.

    Args:
        amount: the money returned (positive).
        topup: the top-up and what earlier refunds took back.
        unspent: its paid lot's unspent credit; anything beyond it is excess.
        bonus_left: its bonus lot's unspent bonus, or None without a live bonus lot (none, or
            expired: what it had left went back at expiry, so nothing is taken back).
        bonus_frozen: bonus of the top-up held by open credit freezes (not spent).
        withhold: spent bonus is kept back from the payout (the money has not left yet);
            otherwise it is owed.
    """
    excess = max(0, amount - unspent)
    refunded = amount - excess
    from_lot = spent_share = 0
    if bonus_left is not None:
        due = topup.bonus_due(amount)
        from_lot = min(due, bonus_left)
        # spent bonus not reclaimed yet: granted - left - frozen - reclaimed so far
        spent = topup.bonus - bonus_left - bonus_frozen - topup.bonus_clawed_back
        spent_share = max(0, min(due - from_lot, spent))
    withheld = min(spent_share, refunded) if withhold else 0
    return RefundSplit(amount, refunded, excess, from_lot, spent_share - withheld, withheld)


@dataclass(frozen=True, slots=True)
class UndoSplit:
    """What undoing a refund gives back (atoms).

    Attributes:
        cash_back: the money that came back, to the cash account it left.
        paid: paid credit restored: the refunded credit plus ``extra_paid``.
        extra_paid: owed parts that could not be cancelled any more (already billed); they
            become a new paid lot.
        bonus_back: bonus restored to the top-up's bonus lot (none once that lot expired).
        debt_cancelled: what the refund booked as owed and is cancelled.
        promotions: what goes back to promotions (withheld, restored and owed bonus).
    """

    cash_back: int
    paid: int
    extra_paid: int
    bonus_back: int
    debt_cancelled: int
    promotions: int

    def atoms(self) -> dict[str, int]:
        """What came back by name, as kept in the undo entry's metadata."""
        return {
            "cash": self.cash_back,
            "paid": self.paid,
            "bonus": self.bonus_back,
            "debt_cancelled": self.debt_cancelled,
        }

    def legs(self) -> list[tuple[Role, int]]:
        """The undo entry's legs, in posting order (none of zero)."""
        legs = [
            ("cash", self.cash_back),
            ("promotions", self.promotions),
            ("prepaid", -self.paid),
            ("bonus", -self.bonus_back),
            ("reversals", -self.debt_cancelled),
        ]
        return [(role, atoms) for role, atoms in legs if atoms]


def split_undo(refund: RefundSplit, *, bonus_lot_live: bool, reversals_held: int) -> UndoSplit:
    """Split the undoing of ``refund``.

    Args:
        refund: the refund's parts.
        bonus_lot_live: the top-up's bonus lot exists and has not expired.
        reversals_held: what ``receivable:reversals`` holds now; owed parts are cancelled up to
            it (excess first), the rest was billed and becomes paid credit.
    """
    bonus_back = refund.bonus_from_lot if bonus_lot_live else 0
    cancel_excess = min(refund.excess, reversals_held)
    cancel_bonus = min(refund.bonus_owed, reversals_held - cancel_excess)
    extra_paid = (refund.excess - cancel_excess) + (refund.bonus_owed - cancel_bonus)
    return UndoSplit(
        cash_back=refund.refunded - refund.withheld + refund.excess,
        paid=refund.refunded + extra_paid,
        extra_paid=extra_paid,
        bonus_back=bonus_back,
        debt_cancelled=cancel_excess + cancel_bonus,
        promotions=refund.withheld + bonus_back + refund.bonus_owed,
    )


def freeze_shares(amount: int, *, paid_left: int, bonus_left: int) -> tuple[int, int]:
    """The paid credit and bonus a freeze of ``amount`` atoms of a top-up takes.

    At most the unspent paid credit is frozen, with the same share of the unspent bonus
    (rounded down); freezing all of the paid credit that is left (none included) freezes all of
    the bonus left.

    Args:
        amount: the amount under claim (positive).
        paid_left: the paid lot's unspent credit.
        bonus_left: the live bonus lot's unspent bonus (0 without one).

    Returns:
        ``(frozen paid, frozen bonus)``.
    """
    frozen_paid = min(amount, paid_left)
    if not bonus_left:
        return frozen_paid, 0
    if frozen_paid >= paid_left:
        return frozen_paid, bonus_left
    return frozen_paid, bonus_left * frozen_paid // paid_left
