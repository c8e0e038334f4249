"""Immutable, exact amounts of one unit.

An :class:`Amount` is an integer count of atoms plus its :class:`~ledger.units.Unit`.
Arithmetic between amounts of different units raises :class:`~ledger.errors.MixedUnits`;
nothing here ever touches a float.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Literal

from ledger.errors import InvalidAmount, MixedUnits
from ledger.units import Unit

RoundingMode = Literal["half_even", "half_up", "down", "up"]

#: The one rounding mode used where money leaves the ledger for a document (banker's rounding).
DOCUMENT_ROUNDING: RoundingMode = "half_even"


#: A decimal string as money is written: ASCII digits only (``Decimal`` alone would also read
#: Arabic-Indic or full-width digits, underscores and surrounding spaces).
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)

#: No amount from outside may reach this many whole units (a quadrillion): sums of them still
#: fit the ledger's 38-digit columns, and token counts fit a 64-bit integer.
MAX_WHOLE_UNITS = 10**15


def exact_decimal(value: str | int | Decimal) -> Decimal:
    """A finite ``Decimal`` from a decimal string (ASCII digits), an int or a Decimal.

    Raises:
        InvalidAmount: a float, a boolean, or anything else that is not such a number.
    """
    if isinstance(value, bool):
        raise InvalidAmount("a boolean is not an amount")
    if isinstance(value, float):  # float-ok: rejecting floats is the point
        raise InvalidAmount("amounts must be decimal strings or integers, never floats")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise InvalidAmount(
            f"{value!r} is not a decimal number written with the ASCII digits 0-9 (e.g. '12.50')"
        )
    try:
        dec = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise InvalidAmount(f"{value!r} is not a decimal number") from None
    if not dec.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number")
    return dec


@dataclass(frozen=True, slots=True, order=False)
class Amount:
    """An exact amount: ``atoms`` of ``unit``.

    Attributes:
        atoms: integer count of the unit's atom (may be negative).
        unit: the unit of account.
    """

    atoms: int
    unit: Unit

    def __post_init__(self) -> None:
        """Refuse atoms that are not an int (a bool, a float, a Decimal)."""
        if not isinstance(self.atoms, int) or isinstance(self.atoms, bool):
            raise InvalidAmount(f"atoms must be an int, got {type(self.atoms).__name__}")

    # -- construction -------------------------------------------------------------------
    @classmethod
    def zero(cls, unit: Unit) -> Amount:
        """The zero amount of ``unit``."""
        return cls(0, unit)

    @classmethod
    def parse(cls, value: str | int | Decimal, unit: Unit) -> Amount:
        """Parse a decimal string (``"12.50"``) in whole units into an exact amount.

        Raises:
            InvalidAmount: not a number, a float, or finer than the unit's atom.
        """
        dec = exact_decimal(value)
        if abs(dec.adjusted()) > 40 or abs(dec) >= MAX_WHOLE_UNITS:
            raise InvalidAmount(
                f"{value} is out of range: amounts must be below {MAX_WHOLE_UNITS:,} {unit.code}"
            )
        with localcontext() as ctx:
            ctx.prec = 100  # exact: the default 28 digits would round large amounts
            scaled = dec.scaleb(unit.atom_exponent)
        if scaled != scaled.to_integral_value():
            raise InvalidAmount(
                f"{value} has more decimal places than {unit.code} allows ({unit.atom_exponent})"
            )
        return cls(int(scaled), unit)

    @classmethod
    def of_minor(cls, minor_units: int, unit: Unit) -> Amount:
        """An amount from a count of minor units (cents), as payment processors report it."""
        return cls(minor_units * unit.atoms_per_minor, unit)

    @classmethod
    def from_fraction(cls, value: Fraction, unit: Unit) -> Amount:
        """An amount from an exact rational number of whole units.

        Raises:
            InvalidAmount: the value is not a whole number of atoms.
        """
        atoms = value * unit.atoms_per_unit
        if atoms.denominator != 1:
            raise InvalidAmount(f"{value} {unit.code} is finer than one atom")
        return cls(atoms.numerator, unit)

    # -- views --------------------------------------------------------------------------
    def to_decimal(self) -> Decimal:
        """The exact value in whole units as a Decimal."""
        with localcontext() as ctx:
            ctx.prec = 80
            return Decimal(self.atoms).scaleb(-self.unit.atom_exponent)

    def to_fraction(self) -> Fraction:
        """The exact value in whole units as a Fraction."""
        return Fraction(self.atoms, self.unit.atoms_per_unit)

    def format(self) -> str:
        """A decimal string with at least the minor-unit decimals and no trailing noise.

        ``Amount.parse("12.5", USD).format() == "12.50"``; sub-cent values keep their digits.
        """
        return format_atoms(self.atoms, self.unit)

    def round_to_minor(self, mode: RoundingMode = DOCUMENT_ROUNDING) -> Amount:
        """Round to the currency's minor unit (the only place rounding happens)."""
        q, r = divmod(self.atoms, self.unit.atoms_per_minor)
        step = self.unit.atoms_per_minor
        if r == 0:
            return self
        # divmod floors: q*step <= atoms < (q+1)*step
        twice = 2 * r
        if mode == "down":  # toward zero
            up = self.atoms < 0
        elif mode == "up":  # away from zero
            up = self.atoms > 0
        elif mode == "half_up":  # half away from zero
            up = twice > step or (twice == step and self.atoms > 0)
        else:  # half_even
            up = twice > step or (twice == step and q % 2 == 1)
        return Amount((q + 1) * step if up else q * step, self.unit)

    def minor_units(self) -> int:
        """The amount as an integer count of minor units; it must already be rounded."""
        q, r = divmod(self.atoms, self.unit.atoms_per_minor)
        if r:
            raise InvalidAmount(f"{self} is not a whole number of minor units; round it first")
        return q

    # -- arithmetic ---------------------------------------------------------------------
    def _same(self, other: object) -> Amount:
        if not isinstance(other, Amount):
            raise TypeError(f"cannot combine Amount with {type(other).__name__}")
        if other.unit != self.unit:
            raise MixedUnits(f"cannot combine {self.unit.code} with {other.unit.code}")
        return other

    def __add__(self, other: Amount) -> Amount:
        """The sum; both of one unit."""
        return Amount(self.atoms + self._same(other).atoms, self.unit)

    def __sub__(self, other: Amount) -> Amount:
        """The difference; both of one unit."""
        return Amount(self.atoms - self._same(other).atoms, self.unit)

    def __neg__(self) -> Amount:
        """The opposite amount."""
        return Amount(-self.atoms, self.unit)

    def __abs__(self) -> Amount:
        """The absolute amount."""
        return Amount(abs(self.atoms), self.unit)

    def __mul__(self, factor: int) -> Amount:
        """Multiply by a whole number (``scale`` takes ratios)."""
        if not isinstance(factor, int) or isinstance(factor, bool):
            raise TypeError("an Amount can only be multiplied by an int; use scale() for ratios")
        return Amount(self.atoms * factor, self.unit)

    __rmul__ = __mul__

    def scale(self, ratio: Fraction | Decimal | int) -> Amount:
        """Multiply by an exact ratio; the result must be a whole number of atoms.

        Raises:
            InvalidAmount: the product is finer than one atom.
        """
        frac = ratio if isinstance(ratio, Fraction) else Fraction(ratio)
        product = frac * self.atoms
        if product.denominator != 1:
            raise InvalidAmount(f"{self} x {ratio} is finer than one atom of {self.unit.code}")
        return Amount(product.numerator, self.unit)

    def __lt__(self, other: Amount) -> bool:
        """Compare amounts of one unit."""
        return self.atoms < self._same(other).atoms

    def __le__(self, other: Amount) -> bool:
        """Compare amounts of one unit."""
        return self.atoms <= self._same(other).atoms

    def __gt__(self, other: Amount) -> bool:
        """Compare amounts of one unit."""
        return self.atoms > self._same(other).atoms

    def __ge__(self, other: Amount) -> bool:
        """Compare amounts of one unit."""
        return self.atoms >= self._same(other).atoms

    def __bool__(self) -> bool:
        """True unless zero."""
        return self.atoms != 0

    def is_zero(self) -> bool:
        """True when the amount is exactly zero."""
        return self.atoms == 0

    def __str__(self) -> str:
        """The amount and its unit's code (``12.50 USD``)."""
        return f"{self.format()} {self.unit.code}"

    def __repr__(self) -> str:
        """``Amount('12.50', USD)``."""
        return f"Amount({self.format()!r}, {self.unit.code})"


def parse_money(value: object, unit: Unit, *, what: str, positive: bool = False) -> Amount:
    """Money from outside: an amount in whole minor units of ``unit`` (cents for USD, yen for JPY).

    Prices, fees, top-ups and refunds are shown to customers and invoiced, so they may not be
    finer than the currency's minor unit. Errors name ``what`` and carry it as ``field``.

    Args:
        value: a decimal string such as ``"9.00"`` (surrounding spaces ignored), a Decimal or an
            int.
        unit: the currency.
        what: the field's name, for the error.
        positive: refuse zero too (money paid or refunded); otherwise only negatives are refused
            (a price or a threshold may be zero).

    Raises:
        InvalidAmount: not such a value, a malformed, negative (or, ``positive``, zero) amount,
            or one finer than a minor unit.
    """
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        raise InvalidAmount(
            f"{what} must be a decimal string such as '9.00', not {type(value).__name__}",
            field=what,
        )
    try:
        amount = Amount.parse(value.strip() if isinstance(value, str) else value, unit)
    except InvalidAmount as exc:
        raise InvalidAmount(f"{what}: {exc.detail}", field=what) from None
    if positive and amount.atoms <= 0:
        raise InvalidAmount(f"{what} must be greater than zero; got {value}", field=what)
    if amount.atoms < 0:
        raise InvalidAmount(f"{what} must not be negative, got {value}", field=what)
    if amount.atoms % unit.atoms_per_minor:
        raise InvalidAmount(
            f"{what} must be a whole number of {unit.code} minor units "
            f"(at most {unit.minor_exponent} decimals), got {value}",
            field=what,
        )
    return amount


def sum_amounts(amounts: list[Amount], unit: Unit) -> Amount:
    """Sum amounts of one unit (the zero of ``unit`` for an empty list)."""
    total = Amount.zero(unit)
    for a in amounts:
        total = total + a
    return total


def format_atoms(atoms: int, unit: Unit) -> str:
    """``Amount.format`` without building the amount.

    For hot paths that format many integers already known to be atoms of ``unit``.
    """
    exp = unit.atom_exponent
    if exp == 0:
        return str(atoms)
    digits = str(-atoms if atoms < 0 else atoms).rjust(exp + 1, "0")
    whole = digits[:-exp]
    frac = digits[-exp:].rstrip("0")
    minor = unit.minor_exponent
    if len(frac) < minor:
        frac = frac.ljust(minor, "0")
    text = f"{whole}.{frac}" if frac else whole
    return f"-{text}" if atoms < 0 else text
