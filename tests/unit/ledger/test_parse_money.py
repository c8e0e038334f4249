"""Money from outside: one parse for catalog prices and for money paid or refunded."""

from decimal import Decimal

import pytest

from ledger.amounts import Amount, parse_money
from ledger.errors import InvalidAmount
from ledger.units import currency

USD = currency("USD")
JPY = currency("JPY")


def test_whole_minor_units_are_read_from_a_string_a_decimal_or_an_int():
    assert parse_money(" 9.50 ", USD, what="price") == Amount.parse("9.5", USD)
    assert parse_money(Decimal("0"), USD, what="price") == Amount.zero(USD)
    assert parse_money(120, JPY, what="amount", positive=True) == Amount.parse("120", JPY)


@pytest.mark.parametrize(
    ("value", "unit", "positive", "message"),
    [
        (True, USD, False, "price must be a decimal string such as '9.00', not bool"),
        (1.5, USD, False, "price must be a decimal string such as '9.00', not float"),
        ("nine", USD, False, "price: 'nine' is not a decimal number"),
        ("-1", USD, False, "price must not be negative, got -1"),
        ("0", USD, True, "price must be greater than zero; got 0"),
        ("0.001", USD, False, "price must be a whole number of USD minor units"),
        ("1.5", JPY, True, "price must be a whole number of JPY minor units"),
    ],
)
def test_anything_else_is_refused_naming_the_field(value, unit, positive, message):
    with pytest.raises(InvalidAmount, match=message.replace(".", r"\.")) as refused:
        parse_money(value, unit, what="price", positive=positive)
    assert refused.value.extra == {"field": "price"}
