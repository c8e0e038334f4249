from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.amounts import Amount
from ledger.errors import InvalidAmount, MixedUnits, UnknownUnit
from ledger.units import CURRENCY_ATOM_EXPONENT, TOKENS, currency, unit

USD = currency("USD")
CNY = currency("CNY")
JPY = currency("JPY")


def test_currency_exponents_and_atoms():
    assert USD.minor_exponent == 2 and JPY.minor_exponent == 0
    assert currency("kwd").minor_exponent == 3
    assert USD.atom_exponent == CURRENCY_ATOM_EXPONENT
    assert unit("TOKENS") is TOKENS
    with pytest.raises(UnknownUnit):
        currency("XYZ")


def test_per_token_price_is_exact():
    # 0.0008 CNY per 1,000 tokens -> one token costs 0.0000008 CNY
    per_token = Amount.parse("0.0008", CNY).scale(Fraction(1, 1000))
    assert per_token.to_decimal() == Decimal("0.0000008")
    # the cheapest cached and batched price still has whole atoms per token
    assert per_token.scale(Fraction(1, 10)).scale(Fraction(1, 2)).atoms > 0


def test_parse_rejects_floats_and_excess_precision():
    with pytest.raises(InvalidAmount):
        Amount.parse(1.5, USD)  # type: ignore[arg-type]
    with pytest.raises(InvalidAmount):
        Amount.parse("1e-19", USD)
    with pytest.raises(InvalidAmount):
        Amount.parse("abc", USD)
    with pytest.raises(InvalidAmount):
        Amount.parse("1.5", TOKENS)


def test_mixed_units_rejected():
    with pytest.raises(MixedUnits):
        Amount.parse("1", USD) + Amount.parse("1", CNY)
    with pytest.raises(MixedUnits):
        _ = Amount.parse("1", USD) < Amount.parse("1", TOKENS)


def test_format_keeps_minor_digits_and_sub_cent_precision():
    assert Amount.parse("12.5", USD).format() == "12.50"
    assert Amount.parse("0.000005", USD).format() == "0.000005"
    assert Amount.parse("-3", USD).format() == "-3.00"
    assert Amount.parse("1000", JPY).format() == "1000"
    assert Amount(42, TOKENS).format() == "42"


@pytest.mark.parametrize(
    ("value", "half_even", "half_up"),
    [
        ("0.005", "0.00", "0.01"),
        ("0.015", "0.02", "0.02"),
        ("-0.005", "0.00", "-0.01"),
        ("1.004999", "1.00", "1.00"),
        ("2.675", "2.68", "2.68"),
        ("-2.665", "-2.66", "-2.67"),
    ],
)
def test_rounding_modes(value, half_even, half_up):
    a = Amount.parse(value, USD)
    assert a.round_to_minor("half_even").format() == half_even
    assert a.round_to_minor("half_up").format() == half_up


@given(st.integers(min_value=-(10**30), max_value=10**30))
def test_format_parse_roundtrip(atoms):
    a = Amount(atoms, USD)
    assert Amount.parse(a.format(), USD) == a
    assert a.round_to_minor().atoms % USD.atoms_per_minor == 0
    assert abs(a.round_to_minor().atoms - atoms) <= USD.atoms_per_minor // 2
