"""Pure invoice arithmetic: periods, one rounding per line (half-even), tax per line, totals,
currency formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.arithmetic import parse_tax_rate, price_line, round_line, tax_on, totals
from invoicing.errors import InvalidBilling, InvalidPeriod
from invoicing.formatting import format_money
from invoicing.periods import Period
from ledger.amounts import Amount
from ledger.units import currency

USD, JPY, KWD = currency("USD"), currency("JPY"), currency("KWD")


def usd(v: str) -> Amount:
    return Amount.parse(v, USD)


def test_periods():
    p = Period.parse("2026-12")
    assert (p.start, p.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert str(p.next()) == "2027-01" and str(Period.parse("2026-01").previous()) == "2025-12"
    assert Period.containing(datetime(2026, 11, 30, 23, 59, tzinfo=UTC)) == Period(2026, 11)
    for bad in ("2026-13", "2026-1", "26-11", "2026-00", "nope"):
        with pytest.raises(InvalidPeriod):
            Period.parse(bad)


def test_lines_round_once_half_even_and_tax_on_the_rounded_amount():
    assert round_line(usd("0.125")).format() == "0.12"  # half to even
    assert round_line(usd("0.135")).format() == "0.14"
    assert round_line(usd("1.090014")).format() == "1.09"
    assert tax_on(usd("1.09"), Decimal("20")).format() == "0.22"  # 0.218
    assert tax_on(usd("0.25"), Decimal("10")).format() == "0.02"  # 0.025 -> even
    line = price_line(usd("1.090014"), "due", Decimal("20"))
    assert (line.amount.format(), line.tax.format()) == ("1.09", "0.22")
    assert price_line(usd("20"), "prepaid", Decimal("20")).tax.is_zero()
    assert round_line(Amount.parse("1234.5", JPY)).format() == "1234"
    assert round_line(Amount.parse("0.0125", KWD)).format() == "0.012"


def test_totals_and_the_rounding_difference():
    lines = [
        price_line(usd("1.090014"), "due", Decimal("20")),
        price_line(usd("0.004"), "due", Decimal("20")),
        price_line(usd("20.00"), "prepaid", None),
        price_line(usd("5.123"), "info", None),
    ]
    t = totals(lines, USD)
    assert t.subtotal.format() == "21.09"
    assert t.tax.format() == "0.22"
    assert t.total.format() == "21.31"
    assert t.prepaid_applied.format() == "20.00"
    assert t.amount_due.format() == "1.31"
    assert t.exact_due.format() == "1.094014"
    assert t.rounding.format() == "-0.004014"
    # the amount due ties to the ledger: exact + rounding + tax
    assert t.exact_due + t.rounding + t.tax == t.amount_due


@given(st.lists(st.integers(min_value=0, max_value=10**22), max_size=20), st.integers(0, 25))
def test_amount_due_always_ties_to_the_exact_amounts(atoms, rate):
    lines = [price_line(Amount(a, USD), "due", Decimal(rate)) for a in atoms]
    t = totals(lines, USD)
    assert t.exact_due + t.rounding + t.tax == t.amount_due
    assert t.amount_due.atoms % USD.atoms_per_minor == 0
    assert abs(t.rounding.atoms) <= len(atoms) * USD.atoms_per_minor // 2


def test_tax_rates_are_exact_decimals_in_range():
    assert parse_tax_rate("7.25") == Decimal("7.25")
    for bad in ("-1", "100.01", "abc", "1.00001"):
        with pytest.raises(InvalidBilling):
            parse_tax_rate(bad)
    with pytest.raises(InvalidBilling):
        parse_tax_rate(7.5)  # type: ignore[arg-type]  # float-ok: refusing floats


def test_currency_formatting():
    assert format_money(usd("1234567.5")) == "$1,234,567.50"
    assert format_money(usd("1.31"), code=True) == "$1.31 USD"
    assert format_money(usd("-3")) == "-$3.00"
    assert format_money(Amount.parse("1235", JPY)) == "¥1,235"
    assert format_money(Amount.parse("12", currency("CHF"))) == "CHF 12.00"
    assert format_money(Amount.parse("1.5", KWD)) == "KWD 1.500"
    assert format_money(Amount.parse("100", currency("EUR")), code=True) == "€100.00 EUR"
