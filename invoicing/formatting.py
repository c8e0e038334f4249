"""Currency formatting for documents (pure): minor units, grouping, symbols or codes.

``format_money(Amount.parse("1234.5", USD)) == "$1,234.50"``; JPY has no decimals
(``"¥1,235"`` after rounding), KWD three. Currencies whose symbol is ambiguous or unknown are
written with their ISO code (``"CHF 12.00"``). Document amounts are already rounded to the minor
unit; exact amounts with more digits keep them (for unit prices and statements).
"""

from __future__ import annotations

from ledger.amounts import Amount

#: Symbols printed before the amount; everything else uses its ISO code.
_SYMBOLS: dict[str, str] = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "CNY": "¥",
    "KRW": "₩",
    "INR": "₹",
    "HKD": "HK$",
    "TWD": "NT$",
    "SGD": "S$",
    "AUD": "A$",
    "CAD": "CA$",
    "NZD": "NZ$",
    "BRL": "R$",
    "MXN": "MX$",
    "ILS": "₪",
    "VND": "₫",
    "PHP": "₱",
    "THB": "฿",
    "UAH": "₴",
    "TRY": "₺",
}


def group_thousands(digits: str) -> str:
    """``"1234567"`` → ``"1,234,567"``."""
    out = []
    for i, ch in enumerate(reversed(digits)):
        if i and i % 3 == 0:
            out.append(",")
        out.append(ch)
    return "".join(reversed(out))


def format_number(amount: Amount) -> str:
    """The amount with thousands separators and at least the minor-unit decimals."""
    text = amount.format()
    sign = "-" if text.startswith("-") else ""
    whole, _, frac = text.lstrip("-").partition(".")
    body = group_thousands(whole) + (f".{frac}" if frac else "")
    return sign + body


def format_money(amount: Amount, *, code: bool = False) -> str:
    """A document amount: ``"$1,234.50"``, ``"-€3.00"``, ``"CHF 12.00"``; with ``code`` the ISO
    code follows a symbol (``"$1,234.50 USD"``) so a reader never has to guess the currency."""
    number = format_number(amount)
    sign = "-" if number.startswith("-") else ""
    number = number.lstrip("-")
    symbol = _SYMBOLS.get(amount.unit.code)
    if symbol is None:
        return f"{sign}{amount.unit.code} {number}"
    text = f"{sign}{symbol}{number}"
    return f"{text} {amount.unit.code}" if code else text
