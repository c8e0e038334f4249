"""Units of account: currencies and entitlement units.

Every amount in tokenwallet is an exact integer count of its unit's *atom*. For currencies the
atom is 10**-18 of the major unit, so a per-token price such as 0.0008 CNY per 1,000 tokens
(0.0000008 CNY per token = 800,000,000,000 atoms) is still exact after cache and batch
multipliers and contract discounts. Tokens and requests are whole counts (atom = 1).

The ISO 4217 ``minor_exponent`` says where money leaves the ledger for a document: an invoice
line is rounded to 10**-minor_exponent of the major unit, and only there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from ledger.errors import UnknownUnit

#: Atom exponent for every currency: 1 atom = 10**-18 major units.
CURRENCY_ATOM_EXPONENT = 18


class UnitKind(StrEnum):
    """What a unit counts."""

    CURRENCY = "currency"
    TOKENS = "tokens"
    REQUESTS = "requests"


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit of account.

    Attributes:
        code: ``USD``, ``CNY`` ... for currencies; ``TOKENS`` or ``REQUESTS`` for entitlements.
        kind: what the unit counts.
        minor_exponent: ISO 4217 exponent (2 for USD, 0 for JPY); 0 for counts.
        atom_exponent: one atom is ``10**-atom_exponent`` of the unit.
    """

    code: str
    kind: UnitKind
    minor_exponent: int
    atom_exponent: int

    @property
    def atoms_per_unit(self) -> int:
        """How many atoms make one whole unit (1 USD, 1 token)."""
        atoms: int = 10**self.atom_exponent
        return atoms

    @property
    def atoms_per_minor(self) -> int:
        """How many atoms make one minor unit (1 cent, 1 fen, 1 yen)."""
        atoms: int = 10 ** (self.atom_exponent - self.minor_exponent)
        return atoms

    @property
    def is_currency(self) -> bool:
        """True for money, False for token and request entitlements."""
        return self.kind is UnitKind.CURRENCY

    def __str__(self) -> str:
        """The unit's code."""
        return self.code


# ISO 4217 minor-unit exponents for the currencies an operator is likely to sell in.
# Anything not listed here uses exponent 2 only if explicitly registered; unknown codes fail.
_ISO_4217_EXPONENTS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CNY": 2, "HKD": 2, "TWD": 2, "SGD": 2, "AUD": 2, "CAD": 2,
    "CHF": 2, "INR": 2, "BRL": 2, "MXN": 2, "SEK": 2, "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2,
    "NZD": 2, "ZAR": 2, "THB": 2, "MYR": 2, "PHP": 2, "IDR": 2, "AED": 2, "SAR": 2, "TRY": 2,
    "ILS": 2, "RUB": 2, "UAH": 2, "HUF": 2, "RON": 2,
    "JPY": 0, "KRW": 0, "VND": 0, "ISK": 0, "CLP": 0, "PYG": 0, "UGX": 0,
    "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip

#: The currency codes :func:`currency` accepts (in any letter case).
SUPPORTED_CURRENCIES: tuple[str, ...] = tuple(sorted(_ISO_4217_EXPONENTS))

TOKENS = Unit("TOKENS", UnitKind.TOKENS, 0, 0)
REQUESTS = Unit("REQUESTS", UnitKind.REQUESTS, 0, 0)

_CODE_RE = re.compile(r"^[A-Z]{3}$")


@lru_cache(maxsize=512)
def currency(code: str) -> Unit:
    """Return the currency unit for an ISO 4217 code (units are immutable, so cached).

    Args:
        code: three-letter code, case-insensitive.

    Raises:
        UnknownUnit: the code is not a supported ISO 4217 currency.
    """
    upper = code.upper()
    exponent = _ISO_4217_EXPONENTS.get(upper)
    if exponent is None or not _CODE_RE.match(upper):
        raise UnknownUnit(
            f"unknown or unsupported currency {code!r}; use an ISO 4217 code such as USD"
        )
    return Unit(upper, UnitKind.CURRENCY, exponent, CURRENCY_ATOM_EXPONENT)


def unit(code: str) -> Unit:
    """Return the unit for a stored unit code (a currency, ``TOKENS`` or ``REQUESTS``).

    Raises:
        UnknownUnit: the code names no unit.
    """
    if code == TOKENS.code:
        return TOKENS
    if code == REQUESTS.code:
        return REQUESTS
    return currency(code)


def supported_currencies() -> list[str]:
    """All currency codes this build knows, sorted."""
    return sorted(_ISO_4217_EXPONENTS)
