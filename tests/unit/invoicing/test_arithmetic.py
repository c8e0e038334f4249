"""Pure invoice arithmetic.

Periods, one rounding per line (half-even), tax per line, totals, currency formatting.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from invoicing.arithmetic import (
    parse_tax_rate,
    price_line,
    round_fraction,
    round_line,
    tax_on,
    tax_on_share,
    totals,
)
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
    assert round_line(Amount.parse("1234.5", JPY)).format() == "1234"
    assert round_line(Amount.parse("0.0125", KWD)).format() == "0.012"


def test_prepaid_lines_are_taxed_on_their_taxable_part_and_statements_never():
    # consumed from the prepaid balance: taxed like anything consumed
    plan = price_line(usd("20"), "prepaid", Decimal("20"))
    assert (plan.amount.format(), plan.taxable.format(), plan.tax.format()) == (
        "20.00",
        "20.00",
        "4.00",
    )
    # 9.00 package paid 7.50 from paid credit and 1.50 from bonus: only 7.50 is taxed
    pkg = price_line(usd("9"), "prepaid", Decimal("20"), taxable=usd("7.5"))
    assert (pkg.taxable.format(), pkg.tax.format()) == ("7.50", "1.50")
    # the taxable part is rounded on its own before the rate: 0.125 -> 0.12 -> 0.024 -> 0.02
    odd = price_line(usd("0.3"), "prepaid", Decimal("20"), taxable=usd("0.125"))
    assert (odd.taxable.format(), odd.tax.format()) == ("0.12", "0.02")
    assert price_line(usd("5"), "info", Decimal("20")).tax.is_zero()
    untaxed = price_line(usd("5"), "prepaid", None)
    assert untaxed.tax.is_zero() and untaxed.taxable.is_zero()
    zero_rate = price_line(usd("5"), "prepaid", Decimal("0"))
    assert zero_rate.tax.is_zero() and zero_rate.taxable.format() == "5.00"
    with pytest.raises(InvalidBilling):
        price_line(usd("5"), "prepaid", Decimal("20"), taxable=usd("5.01"))


def test_tax_on_a_share_of_a_partly_taxable_line():
    rate = Decimal("20")
    # the whole line taxable: the same as tax_on
    assert tax_on_share(usd("3"), amount=usd("9"), taxable=usd("9"), rate_pct=rate) == tax_on(
        usd("3"), rate
    )
    # 3.00 of a 9.00 line of which 7.50 is taxable: 2.50 taxable -> 0.50
    assert (
        tax_on_share(usd("3"), amount=usd("9"), taxable=usd("7.5"), rate_pct=rate).format()
        == "0.50"
    )
    # 1.00 of 3.00 with 1.00 taxable: 1/3 x 20 % = 0.0666... -> 0.07 (not finer than the rounding)
    assert (
        tax_on_share(usd("1"), amount=usd("3"), taxable=usd("1"), rate_pct=rate).format() == "0.07"
    )
    assert tax_on_share(usd("1"), amount=usd("3"), taxable=usd("0"), rate_pct=rate).is_zero()
    assert round_fraction(Fraction(1, 200), USD).format() == "0.00"  # half to even
    assert round_fraction(Fraction(3, 200), USD).format() == "0.02"
    assert round_fraction(Fraction(1, 3), USD).format() == "0.33"
    assert round_fraction(Fraction(-1, 3), USD).format() == "-0.33"


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


def test_the_tax_of_prepaid_lines_is_due_and_their_net_is_paid_from_the_balance():
    rate = Decimal("20")
    lines = [
        price_line(usd("1.040014"), "due", rate),
        price_line(usd("0.05"), "prepaid", rate),
        price_line(usd("9"), "prepaid", rate, taxable=usd("7.5")),
    ]
    t = totals(lines, USD)
    assert (t.subtotal.format(), t.tax.format(), t.total.format()) == ("10.09", "1.72", "11.81")
    assert (t.prepaid_applied.format(), t.amount_due.format()) == ("9.05", "2.76")
    assert t.exact_due + t.rounding + t.tax == t.amount_due


@given(st.lists(st.integers(min_value=0, max_value=10**22), max_size=20), st.integers(0, 25))
def test_amount_due_always_ties_to_the_exact_amounts(atoms, rate):
    lines = [price_line(Amount(a, USD), "due", Decimal(rate)) for a in atoms]
    t = totals(lines, USD)
    assert t.exact_due + t.rounding + t.tax == t.amount_due
    assert t.amount_due.atoms % USD.atoms_per_minor == 0
    assert abs(t.rounding.atoms) <= len(atoms) * USD.atoms_per_minor // 2


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**22),
            st.sampled_from(["due", "prepaid", "info"]),
            st.integers(min_value=0, max_value=100),
        ),
        max_size=20,
    ),
    st.integers(0, 25),
)
def test_prepaid_tax_keeps_the_invoice_tied(specs, rate):
    lines = [
        price_line(Amount(a, USD), kind, Decimal(rate), taxable=Amount(a * pct // 100, USD))
        for a, kind, pct in specs
    ]
    t = totals(lines, USD)
    # what the customer owes: due lines and every charged line's tax; the ledger holds the exact
    # due amounts, the rounding is posted
    assert t.exact_due + t.rounding + t.tax == t.amount_due
    assert t.amount_due == t.total - t.prepaid_applied
    assert all(line.taxable <= line.amount for line in lines)
    assert t.tax.atoms % USD.atoms_per_minor == 0


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
