"""Document money formatting, with Babel underneath.

Every supported currency prints as it did before Babel, and grouping never changes an amount's
digits.
"""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from invoicing.formatting import format_money, format_number
from ledger.amounts import Amount
from ledger.units import SUPPORTED_CURRENCIES, currency

#: ``format_money(1234.5)`` per currency, as the hand-written symbol table printed it
BEFORE_BABEL = {
    "AED": "AED 1,234.50",
    "AUD": "A$1,234.50",
    "BHD": "BHD 1,234.500",
    "BRL": "R$1,234.50",
    "CAD": "CA$1,234.50",
    "CHF": "CHF 1,234.50",
    "CLP": "CLP 1,234.5",
    "CNY": "¥1,234.50",
    "CZK": "CZK 1,234.50",
    "DKK": "DKK 1,234.50",
    "EUR": "€1,234.50",
    "GBP": "£1,234.50",
    "HKD": "HK$1,234.50",
    "HUF": "HUF 1,234.50",
    "IDR": "IDR 1,234.50",
    "ILS": "₪1,234.50",
    "INR": "₹1,234.50",
    "ISK": "ISK 1,234.5",
    "JOD": "JOD 1,234.500",
    "JPY": "¥1,234.5",
    "KRW": "₩1,234.5",
    "KWD": "KWD 1,234.500",
    "MXN": "MX$1,234.50",
    "MYR": "MYR 1,234.50",
    "NOK": "NOK 1,234.50",
    "NZD": "NZ$1,234.50",
    "OMR": "OMR 1,234.500",
    "PHP": "₱1,234.50",
    "PLN": "PLN 1,234.50",
    "PYG": "PYG 1,234.5",
    "RON": "RON 1,234.50",
    "RUB": "RUB 1,234.50",
    "SAR": "SAR 1,234.50",
    "SEK": "SEK 1,234.50",
    "SGD": "S$1,234.50",
    "THB": "฿1,234.50",
    "TND": "TND 1,234.500",
    "TRY": "₺1,234.50",
    "TWD": "NT$1,234.50",
    "UAH": "₴1,234.50",
    "UGX": "UGX 1,234.5",
    "USD": "$1,234.50",
    "VND": "₫1,234.5",
    "ZAR": "ZAR 1,234.50",
}


def test_every_supported_currency_prints_as_before():
    assert set(BEFORE_BABEL) == set(SUPPORTED_CURRENCIES)
    for code, expected in BEFORE_BABEL.items():
        assert format_money(Amount.parse("1234.5", currency(code))) == expected


@given(
    atoms=st.integers(min_value=-(10**40), max_value=10**40),
    code=st.sampled_from(SUPPORTED_CURRENCIES),
)
def test_grouping_keeps_every_digit_and_groups_by_three(atoms: int, code: str):
    amount = Amount(atoms, currency(code))
    text = format_number(amount)
    assert text.replace(",", "") == amount.format()
    assert re.fullmatch(r"-?\d{1,3}(,\d{3})*(\.\d+)?", text)
