"""Credit note arithmetic (pure, no database).

How much of a line is left, its tax and bonus share, and where the credit goes.

A credit note credits invoice lines (or, without a line, the invoice's due part) with their tax.
Amounts are atoms of the invoice's currency; the lines' amounts are already rounded to the minor
unit, so a credit is a whole number of minor units and its tax is rounded once (see
:func:`invoicing.arithmetic.tax_on_share`). Crediting what is left of a line credits exactly its
remaining tax and bonus, so the credits of a line add up to the line.

Where a credit goes (:func:`split_credit`): what the invoice billed (due lines with their tax,
and the tax of prepaid lines) first reduces what is still owed on it (``receivable:invoiced``);
the rest goes back to the prepaid balance, as bonus credit for the part bonus credit paid and as
paid credit for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from invoicing.arithmetic import tax_on_share
from invoicing.errors import CreditTooLarge
from ledger.amounts import Amount
from ledger.errors import InvalidAmount
from ledger.units import Unit


@dataclass(frozen=True, slots=True)
class Credit:
    """Net, tax and bonus part (of the net) of a credit, in atoms."""

    net: int
    tax: int
    bonus: int = 0


@dataclass(frozen=True, slots=True)
class Creditable:
    """What a credit is taken from: a line, or the invoice's due part as a whole.

    Attributes:
        amount: the rounded amount the credit is a share of.
        taxable: the rounded taxable part of ``amount``.
        rate_pct: the tax rate (None: untaxed).
        tax: the tax charged on ``amount``.
        bonus: the part of ``amount`` bonus credit paid (see :func:`bonus_share`).
        done: what earlier credit notes credited of it.
    """

    amount: int
    taxable: int
    rate_pct: Decimal | None
    tax: int
    bonus: int = 0
    done: Credit = Credit(0, 0, 0)

    @property
    def net_left(self) -> int:
        """The net still creditable."""
        return self.amount - self.done.net

    @property
    def tax_left(self) -> int:
        """The tax still creditable."""
        return self.tax - self.done.tax

    @property
    def bonus_left(self) -> int:
        """The bonus part still creditable (never negative)."""
        return max(self.bonus - self.done.bonus, 0)


def bonus_share(amount: int, amount_exact: int, exact_bonus: int) -> int:
    """The part of a prepaid line's rounded ``amount`` that bonus credit paid.

    The exact bonus share (``exact_bonus`` of ``amount_exact``) applied to the rounded amount,
    rounded down to the atom, at most the amount (0 for a line with no exact amount).
    """
    if amount_exact <= 0 or not exact_bonus:
        return 0
    return min(amount * exact_bonus // amount_exact, amount)


def check_credit_amount(net: Amount, unit: Unit, invoice_id: str) -> None:
    """Refuse a requested credit in another currency, non-positive or finer than the minor unit.

    Raises:
        InvalidAmount: the amount is not a positive whole number of ``unit`` minor units.
    """
    if net.unit != unit:
        raise InvalidAmount(f"invoice {invoice_id} is in {unit.code}")
    if net.atoms <= 0 or net.atoms % unit.atoms_per_minor:
        raise InvalidAmount(f"credit amounts are positive whole {unit.code} minor units; got {net}")


def credit_of(
    of: Creditable, requested: int | None, unit: Unit, *, subject: str, noun: str = ""
) -> Credit:
    """The credit of ``requested`` atoms (None: everything left) taken from ``of``.

    The tax is the same share of the taxable part (all that is left when the whole rest is
    credited), never more than the tax left; the bonus part is the line's bonus share of the
    net, never more than the bonus left or the net.

    Args:
        of: what is credited (a line or an invoice) and what is left of it.
        requested: the net atoms to credit; None credits everything left.
        unit: the invoice's currency.
        subject: who has the amount left, for the error (``line 7``, ``invoice INV-...``).
        noun: what is left, for the error (e.g. `` of billed amounts``).

    Raises:
        CreditTooLarge: nothing or less than ``requested`` is left to credit.
    """
    left = of.net_left
    net = requested if requested is not None else left
    if net <= 0 or net > left:
        creditable = Amount(max(left, 0), unit)
        raise CreditTooLarge(
            f"{subject} has {creditable}{noun} left to credit; cannot credit {Amount(net, unit)}",
            creditable=creditable.format(),
        )
    if net == left:
        return Credit(net, of.tax_left, min(of.bonus_left, net))
    tax = 0
    if of.rate_pct is not None:
        tax = tax_on_share(
            Amount(net, unit),
            amount=Amount(of.amount, unit),
            taxable=Amount(of.taxable, unit),
            rate_pct=of.rate_pct,
        ).atoms
    bonus = min(net * of.bonus // of.amount, of.bonus_left) if of.amount else 0
    return Credit(net, min(tax, of.tax_left), min(bonus, net))


@dataclass(frozen=True, slots=True)
class CreditSplit:
    """A credit note's totals and where they go, in atoms.

    Attributes:
        net: the credited net.
        tax: the credited tax.
        total: ``net + tax``.
        to_receivable: what reduces the invoice's open balance.
        to_wallet: ``total - to_receivable``: back to the prepaid balance.
        to_bonus: the part of ``to_wallet`` that goes back as bonus credit.
        to_paid: ``to_wallet - to_bonus``: back as paid credit.
    """

    net: int
    tax: int
    total: int
    to_receivable: int
    to_wallet: int
    to_bonus: int
    to_paid: int


def split_credit(items: Sequence[tuple[str, Credit]], open_balance: int) -> CreditSplit:
    """Total the credited items and split the total between the open and the prepaid balance.

    The items are ``(settlement, credit)`` pairs.

    What the invoice billed (due items with their tax, the tax of prepaid items) reduces the
    open balance, up to ``open_balance``; the rest goes to the prepaid balance: what bonus
    credit paid as bonus, the rest as paid credit.
    """
    net = sum(c.net for _, c in items)
    tax = sum(c.tax for _, c in items)
    billed = sum(c.net + c.tax if settlement == "due" else c.tax for settlement, c in items)
    to_receivable = min(billed, open_balance)
    to_wallet = net + tax - to_receivable
    to_bonus = sum(c.bonus for _, c in items)
    return CreditSplit(
        net=net,
        tax=tax,
        total=net + tax,
        to_receivable=to_receivable,
        to_wallet=to_wallet,
        to_bonus=to_bonus,
        to_paid=to_wallet - to_bonus,
    )
