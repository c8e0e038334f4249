"""Percentages as plain digits."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from ledger.decimals import format_pct


def test_percentages_print_without_padding_or_exponent():
    assert format_pct(Decimal("12.50")) == "12.5"
    assert format_pct(Decimal("1E+2")) == "100"
    assert format_pct(Decimal("20.000")) == "20"
    assert format_pct(Decimal("0.000")) == "0"
    assert format_pct(None) is None


@given(st.decimals(min_value=-1000, max_value=1000, places=12))
def test_the_text_reads_back_as_the_same_number(value: Decimal):
    text = format_pct(value)
    assert Decimal(text) == value
    assert "E" not in text and not (text.endswith("0") and "." in text)
