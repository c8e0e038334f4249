"""Currency formatting for documents (pure, with Babel): minor units, grouping, symbols or codes.

``format_money(Amount.parse("1234.5", USD)) == "$1,234.50"``; JPY has no decimals
(``"¥1,235"`` after rounding), KWD three. Currencies whose symbol is ambiguous or unknown are
written with their ISO code (``"CHF 12.00"``). Document amounts are already rounded to the minor
unit; exact amounts with more digits keep them (for unit prices and statements).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

from babel.numbers import format_decimal, get_currency_symbol

from ledger.amounts import Amount

#: Where documents print another symbol than CLDR's English one (CLDR: ``CN¥``, and the ISO
#: code for the others). Currencies whose symbol is the ISO code are written with the code.
_SYMBOL_OVERRIDES: dict[str, str] = {
    "CNY": "¥",
    "SGD": "S$",
    "THB": "฿",
    "TRY": "₺",
    "UAH": "₴",
}
#: digits Babel's arithmetic keeps (an amount's atoms have up to 18 decimals)
_PRECISION = 100


def currency_symbol(code: str) -> str | None:
    """The symbol printed before an amount in ``code``, or None (the ISO code is printed)."""
    symbol = _SYMBOL_OVERRIDES.get(code) or get_currency_symbol(code, locale="en")
    return None if symbol == code else symbol


def format_number(amount: Amount) -> str:
    """The amount with thousands separators and at least the minor-unit decimals.

    Exact: an amount with more digits than its minor unit keeps them.
    """
    minor = amount.unit.minor_exponent
    pattern = "#,##0" + ("." + "0" * minor if minor else "")
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return format_decimal(
            Decimal(amount.format()), format=pattern, locale="en_US", decimal_quantization=False
        )


def format_money(amount: Amount, *, code: bool = False) -> str:
    """A document amount: ``"$1,234.50"``, ``"-€3.00"``, ``"CHF 12.00"``.

    With ``code`` the ISO code follows a symbol (``"$1,234.50 USD"``) so a reader never has to
    guess the currency.
    """
    number = format_number(amount)
    sign = "-" if number.startswith("-") else ""
    number = number.lstrip("-")
    symbol = currency_symbol(amount.unit.code)
    if symbol is None:
        return f"{sign}{amount.unit.code} {number}"
    text = f"{sign}{symbol}{number}"
    return f"{text} {amount.unit.code}" if code else text
