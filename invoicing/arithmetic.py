"""Invoice arithmetic: one rounding per line, tax per line, totals (pure, no database).

Rounding happens here and only here, when exact ledger amounts become document amounts:

* every line's exact amount (atoms, 10^-18 of the major unit) is rounded once to the currency's
  minor unit with :data:`ledger.amounts.DOCUMENT_ROUNDING` (half-even, "banker's rounding");
* tax is computed per line on its *rounded* taxable amount and rounded the same way. A line's
  taxable amount is the whole line for overage, the part paid from paid credit for lines
  settled from the prepaid balance (bonus credit is a promotional discount and carries no tax),
  nothing for debts that are not a supply (refund and dispute reversals); see
  docs/invoicing.md, "Tax";
* totals are sums of rounded line amounts, so the document adds up exactly as printed;
* the rounding difference of the lines that are due (rounded minus exact) is what the close
  posts to ``revenue:rounding``, so the amount due ties to the ledger to the atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from invoicing.errors import InvalidBilling
from ledger.amounts import DOCUMENT_ROUNDING, Amount, exact_decimal, sum_amounts
from ledger.units import Unit

#: How a line is settled: ``due`` (billed on this invoice), ``prepaid`` (charged, already paid
#: from the prepaid balance) or ``info`` (a statement: shown, never totalled).
Settlement = Literal["due", "prepaid", "info"]

MAX_TAX_DECIMALS = 4


def parse_tax_rate(value: str | Decimal) -> Decimal:
    """A tax rate in percent: a decimal string from 0 to 100 with at most 4 decimals.

    Raises:
        InvalidBilling: not a number, out of range or too precise.
    """
    if isinstance(value, float):  # float-ok: rejecting floats is the point
        raise InvalidBilling("tax rates are decimal strings, never floats")
    try:
        rate = exact_decimal(value)
    except Exception:
        raise InvalidBilling(f"tax rate {value!r} is not a decimal number") from None
    if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(100):
        raise InvalidBilling(f"tax rate must be between 0 and 100 percent; got {value}")
    if rate != rate.quantize(Decimal(1).scaleb(-MAX_TAX_DECIMALS)):
        raise InvalidBilling(f"tax rate takes at most {MAX_TAX_DECIMALS} decimals; got {value}")
    return rate


def round_line(exact: Amount) -> Amount:
    """The document amount of a line: rounded once to the minor unit (half-even)."""
    return exact.round_to_minor(DOCUMENT_ROUNDING)


def tax_on(net: Amount, rate_pct: Decimal) -> Amount:
    """Tax on a rounded net line amount at ``rate_pct`` percent, rounded half-even."""
    exact = Amount.from_fraction(net.to_fraction() * Fraction(rate_pct) / 100, net.unit)
    return round_line(exact)


def round_fraction(value: Fraction, unit: Unit) -> Amount:
    """Round an exact rational amount of whole units to the minor unit.

    The rounding is :data:`ledger.amounts.DOCUMENT_ROUNDING`; for values that need not be whole
    atoms.
    """
    minor = value * 10**unit.minor_exponent
    q = minor.numerator // minor.denominator  # floor
    r = minor - q
    if r == 0:
        up = False
    elif DOCUMENT_ROUNDING == "down":
        up = minor < 0
    elif DOCUMENT_ROUNDING == "up":
        up = minor > 0
    elif DOCUMENT_ROUNDING == "half_up":
        up = r > Fraction(1, 2) or (r == Fraction(1, 2) and minor > 0)
    else:  # half_even
        up = r > Fraction(1, 2) or (r == Fraction(1, 2) and q % 2 == 1)
    return Amount((q + 1 if up else q) * unit.atoms_per_minor, unit)


def tax_on_share(net: Amount, *, amount: Amount, taxable: Amount, rate_pct: Decimal) -> Amount:
    """Tax on ``net`` credited out of a line, in the share of the line that is taxable.

    The line's rounded amount is ``amount`` and its rounded taxable part ``taxable``: the same share
    of ``net`` is taxable (all of it when the whole line is).
    """
    if amount.is_zero() or taxable.is_zero():
        return Amount.zero(net.unit)
    if taxable == amount:
        return tax_on(net, rate_pct)
    share = net.to_fraction() * taxable.to_fraction() / amount.to_fraction()
    return round_fraction(share * Fraction(rate_pct) / 100, net.unit)


@dataclass(frozen=True, slots=True)
class PricedLine:
    """A line's money.

    Exact amount, rounded amount, rounded taxable part, tax and how it is settled.
    """

    settlement: Settlement
    exact: Amount
    amount: Amount
    tax: Amount
    taxable: Amount


def price_line(
    exact: Amount,
    settlement: Settlement,
    rate_pct: Decimal | None,
    *,
    taxable: Amount | None = None,
) -> PricedLine:
    """Round a line and tax it.

    Lines that are charged (``due``, and ``prepaid``: consumed and paid from the prepaid
    balance) are taxed on their rounded taxable part at ``rate_pct``; statements (``info``) and
    accounts without a tax profile (``rate_pct`` None) carry no tax.

    Args:
        exact: the line's exact amount.
        settlement: ``due``, ``prepaid`` or ``info`` (statements are not taxed).
        rate_pct: the tax rate in percent; None for an account without a tax profile.
        taxable: the exact part of ``exact`` that is taxable (default: all of it). It is
            rounded on its own, then taxed: ``tax = round(round(taxable) x rate)``.

    Raises:
        InvalidBilling: ``taxable`` is negative or more than the line.
    """
    unit = exact.unit
    amount = round_line(exact)
    base = exact if taxable is None else taxable
    if base.unit != unit or base.atoms < 0 or base.atoms > max(exact.atoms, 0):
        raise InvalidBilling(f"a line's taxable part {base} must be within its amount {exact}")
    if settlement == "info" or rate_pct is None:
        return PricedLine(settlement, exact, amount, Amount.zero(unit), Amount.zero(unit))
    rounded_base = round_line(base)
    return PricedLine(settlement, exact, amount, tax_on(rounded_base, rate_pct), rounded_base)


@dataclass(frozen=True, slots=True)
class Totals:
    """An invoice's totals, all in whole minor units except ``exact_due``.

    Attributes:
        subtotal: rounded amounts of due and prepaid lines.
        tax: sum of the lines' tax.
        total: ``subtotal + tax``.
        prepaid_applied: what the prepaid balance already paid (prepaid lines).
        amount_due: ``total - prepaid_applied``: what the customer owes.
        exact_due: the exact (unrounded) amounts of the due lines, as the ledger holds them.
        rounding: ``(amount_due - tax) - exact_due``, posted so the invoice ties to the ledger.
    """

    subtotal: Amount
    tax: Amount
    total: Amount
    prepaid_applied: Amount
    amount_due: Amount
    exact_due: Amount
    rounding: Amount


def totals(lines: Sequence[PricedLine], unit: Unit) -> Totals:
    """Sum priced lines into invoice totals (info lines are left out)."""
    due = [line for line in lines if line.settlement == "due"]
    prepaid = [line for line in lines if line.settlement == "prepaid"]
    due_net = sum_amounts([line.amount for line in due], unit)
    prepaid_net = sum_amounts([line.amount for line in prepaid], unit)
    tax = sum_amounts([line.tax for line in due + prepaid], unit)
    exact_due = sum_amounts([line.exact for line in due], unit)
    subtotal = due_net + prepaid_net
    total = subtotal + tax
    return Totals(
        subtotal=subtotal,
        tax=tax,
        total=total,
        prepaid_applied=prepaid_net,
        amount_due=total - prepaid_net,
        exact_due=exact_due,
        rounding=due_net - exact_due,
    )
