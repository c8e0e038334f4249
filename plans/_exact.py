"""Exact-number helpers shared by the catalog modules (private).

Prices and percentages enter as decimal strings, ``Decimal`` or ``int`` and are kept as
``Decimal``; every computation on them goes through ``Fraction`` and comes back to ``Decimal``
only when the result terminates. Floats are refused on the way in.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from ledger.errors import DomainError

#: Decimal strings accepted for prices and percentages: digits, an optional fraction, a sign.
_DECIMAL_RE = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")

DecimalInput = str | Decimal | int


def parse_decimal(
    value: object,
    *,
    what: str,
    max_places: int,
    error: type[DomainError],
    maximum: Decimal | None = None,
) -> Decimal:
    """Parse a non-negative exact decimal with at most ``max_places`` significant decimals.

    Args:
        value: a decimal string (``"5.00"``), a ``Decimal`` or an ``int``.
        what: the field name, for the error message.
        max_places: the most decimal places the *value* may need (trailing zeros are free).
        error: the domain error class to raise.
        maximum: an inclusive upper bound, if any.

    Returns:
        The value as a finite, non-negative ``Decimal`` (``-0`` becomes ``0``).

    Raises:
        DomainError: ``error`` for a float, bool, malformed string, NaN/infinity, a negative
            number, too many decimal places, or a value above ``maximum``.
    """
    if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
        kind = type(value).__name__
        raise error(f"{what} must be a decimal string, Decimal or int, not {kind}", field=what)
    if isinstance(value, str):
        text = value.strip()
        if not _DECIMAL_RE.match(text):
            raise error(
                f"{what} must be a decimal string such as '5.00', got {value!r}", field=what
            )
        dec = Decimal(text)
    elif isinstance(value, int):
        dec = Decimal(value)
    else:
        dec = value
    if not dec.is_finite():
        raise error(f"{what} must be a finite number, got {value!r}", field=what)
    if dec < 0:
        raise error(f"{what} must not be negative, got {value}", field=what)
    if dec.is_zero():
        dec = Decimal(0)
    if not has_places(Fraction(dec), max_places):
        raise error(f"{what} has more than {max_places} decimal places: {value}", field=what)
    if maximum is not None and dec > maximum:
        raise error(f"{what} must be at most {maximum}, got {value}", field=what)
    return dec


def has_places(value: Fraction, places: int) -> bool:
    """True when ``value`` is a whole multiple of ``10**-places``."""
    scale: int = 10**places
    return (value * scale).denominator == 1


def to_decimal(value: Fraction, *, what: str, error: type[DomainError]) -> Decimal:
    """Convert a terminating fraction to an exactly equal ``Decimal`` (no context rounding).

    Raises:
        DomainError: ``error`` when the fraction has no finite decimal expansion.
    """
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    if den != 1:
        raise error(f"{what} = {value} has no exact decimal representation", field=what)
    places = max(twos, fives)
    digits = value.numerator * (10**places // value.denominator)
    if digits == 0:
        return Decimal(0)
    while places > 0 and digits % 10 == 0:
        digits //= 10
        places -= 1
    # Built from a string, so no context precision or rounding is involved.
    return Decimal(f"{digits}E-{places}")


def is_aware(moment: datetime) -> bool:
    """True for a timezone-aware datetime."""
    return moment.tzinfo is not None and moment.tzinfo.utcoffset(moment) is not None
