"""Rating usage against a model price: exact, linear, no floats (pure, no database)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.amounts import Amount
from ledger.units import TOKENS, currency
from plans.errors import InvalidPrice, InvalidUsage
from plans.prices import ModelPrice
from plans.rating import Charge, ChargeLine, Component, UsageQuantities, rate

USD = currency("USD")
CNY = currency("CNY")
PRICE = ModelPrice.from_spec(input_per_mtok="3.00", output_per_mtok="15.00")  # defaults


def usd(text: str) -> Amount:
    return Amount.parse(text, USD)


def assert_consistent(charge: Charge) -> None:
    total = Amount.zero(charge.total.unit)
    for line in charge.lines:
        total = total + line.amount
    assert total == charge.total


# -- each component alone ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "component", "tokens", "per_mtok", "amount"),
    [
        (UsageQuantities(input_tokens=1_000_000), "input", 1_000_000, "3", "3"),
        (UsageQuantities(input_tokens=1), "input", 1, "3", "0.000003"),
        (UsageQuantities(cache_read_tokens=1_000), "cache_read", 1_000, "0.3", "0.0003"),
        (UsageQuantities(cache_write_5m_tokens=1_000), "cache_write_5m", 1_000, "3.75", "0.00375"),
        (UsageQuantities(cache_write_1h_tokens=7), "cache_write_1h", 7, "6", "0.000042"),
        (UsageQuantities(output_tokens=2_500), "output", 2_500, "15", "0.0375"),
        (UsageQuantities(output_tokens=10, reasoning_tokens=10), "reasoning", 10, "15", "0.00015"),
    ],
)
def test_component_alone(
    usage: UsageQuantities, component: str, tokens: int, per_mtok: str, amount: str
) -> None:
    charge = rate(usage, PRICE, USD)
    assert len(charge.lines) == 1
    (line,) = charge.lines
    assert line.component == component
    assert line.tokens == tokens
    assert line.price_per_mtok == Decimal(per_mtok)
    assert line.amount == usd(amount)
    assert charge.total == usd(amount)


def test_output_and_reasoning_split() -> None:
    p = ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="10", reasoning_per_mtok="4")
    charge = rate(UsageQuantities(output_tokens=1_000, reasoning_tokens=250), p, USD)
    out, reasoning = charge.lines
    assert (out.component, out.tokens, out.amount) == (Component.OUTPUT, 750, usd("0.0075"))
    assert (reasoning.component, reasoning.tokens, reasoning.amount) == (
        Component.REASONING,
        250,
        usd("0.001"),
    )
    assert charge.total == usd("0.0085")


def test_sub_atom_rates_are_exact() -> None:
    p = ModelPrice.from_spec(input_per_mtok="0.000001", output_per_mtok="0.000001")
    charge = rate(
        UsageQuantities(input_tokens=1, cache_read_tokens=1, cache_write_5m_tokens=1, batch=True),
        p,
        USD,
    )
    # 1e-12 + 1e-13 + 1.25e-12 = 2.35e-12 USD, half off for batch
    assert charge.line("input").amount.atoms == 1_000_000  # type: ignore[union-attr]
    assert charge.line("cache_read").amount.atoms == 100_000  # type: ignore[union-attr]
    assert charge.line("cache_write_5m").amount.atoms == 1_250_000  # type: ignore[union-attr]
    assert charge.total.atoms == 1_175_000


def test_cheapest_cny_price_is_exact() -> None:
    # 0.0008 CNY per 1,000 tokens = 0.8 CNY per Mtok
    p = ModelPrice.from_spec(
        input_per_mtok="0.8", output_per_mtok="0.8", batch_discount_pct="33.33"
    )
    charge = rate(UsageQuantities(cache_read_tokens=1, batch=True), p, CNY)
    # 0.08/Mtok per cached token = 8e-8 CNY; minus 33.33%
    assert charge.total.to_fraction() == Fraction(8, 10**8) * Fraction(6667, 10_000)


# -- combination -------------------------------------------------------------------------------


def test_cached_batch_reasoning_combination_hand_computed() -> None:
    p = ModelPrice.from_spec(
        input_per_mtok="3.00", output_per_mtok="15.00", reasoning_per_mtok="20"
    )
    usage = UsageQuantities(
        input_tokens=1_234,
        cache_read_tokens=50_000,
        cache_write_5m_tokens=2_000,
        cache_write_1h_tokens=1_000,
        output_tokens=800,
        reasoning_tokens=300,
        batch=True,
    )
    charge = rate(usage, p, USD)
    expected = [
        ("input", 1_234, "3.00", "0.003702"),  # 1234 * 3 / 1e6
        ("cache_read", 50_000, "0.3", "0.015"),  # 0.1 x 3.00
        ("cache_write_5m", 2_000, "3.75", "0.0075"),  # 1.25 x 3.00
        ("cache_write_1h", 1_000, "6", "0.006"),  # 2 x 3.00
        ("output", 500, "15.00", "0.0075"),  # 800 - 300 reasoning
        ("reasoning", 300, "20", "0.006"),
    ]
    got = [
        (ln.component.value, ln.tokens, ln.price_per_mtok, ln.amount) for ln in charge.lines[:-1]
    ]
    assert got == [(c, t, Decimal(pr), usd(a)) for c, t, pr, a in expected]
    discount = charge.lines[-1]
    # subtotal 0.045702, 50% off
    assert discount == ChargeLine(
        Component.BATCH_DISCOUNT, 55_034, None, usd("-0.022851"), Decimal(50)
    )
    assert charge.total == usd("0.022851")
    assert charge.total.format() == "0.022851"
    assert_consistent(charge)


def test_batch_discount_takes_percent_off_every_component() -> None:
    p = ModelPrice.from_spec(input_per_mtok="2", output_per_mtok="8", batch_discount_pct="12.5")
    usage = UsageQuantities(
        input_tokens=1_000,
        cache_read_tokens=1_000,
        cache_write_1h_tokens=1_000,
        output_tokens=1_000,
        batch=True,
    )
    charge = rate(usage, p, USD)
    # 0.002 + 0.0002 + 0.004 + 0.008 = 0.0142; 12.5% of it = 0.001775
    assert charge.line(Component.BATCH_DISCOUNT).amount == usd("-0.001775")  # type: ignore[union-attr]
    assert charge.total == usd("0.012425")
    assert rate(dataclasses.replace(usage, batch=False), p, USD).total == usd("0.0142")


def test_no_discount_line_when_not_batch_or_zero_pct() -> None:
    usage = UsageQuantities(input_tokens=10)
    assert rate(usage, PRICE, USD).line("batch_discount") is None
    p0 = ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="1", batch_discount_pct="0")
    assert rate(dataclasses.replace(usage, batch=True), p0, USD).line("batch_discount") is None


def test_full_batch_discount_is_free() -> None:
    p = ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="1", batch_discount_pct="100")
    assert rate(UsageQuantities(input_tokens=5, batch=True), p, USD).total.is_zero()


def test_zero_usage_rates_to_zero_without_lines() -> None:
    charge = rate(UsageQuantities(batch=True), PRICE, USD)
    assert charge == Charge(total=Amount.zero(USD), lines=())


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_tokens": -1},
        {"cache_read_tokens": -5},
        {"input_tokens": 1.0},
        {"output_tokens": True},
        {"output_tokens": "10"},
        {"output_tokens": 5, "reasoning_tokens": 6},
        {"reasoning_tokens": 1},
        {"batch": 1},
    ],
)
def test_invalid_usage(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidUsage) as info:
        UsageQuantities(**kwargs)  # type: ignore[arg-type]
    assert info.value.code == "invalid_usage"


def test_rating_needs_a_currency() -> None:
    with pytest.raises(InvalidPrice):
        rate(UsageQuantities(input_tokens=1), PRICE, TOKENS)


# -- properties --------------------------------------------------------------------------------

counts = st.integers(min_value=0, max_value=10**9)
prices6 = st.decimals(min_value=0, max_value=1_000, places=6)
pcts2 = st.decimals(min_value=0, max_value=100, places=2)


@st.composite
def usages(draw: st.DrawFn, batch: bool) -> UsageQuantities:
    output = draw(counts)
    return UsageQuantities(
        input_tokens=draw(counts),
        output_tokens=output,
        cache_read_tokens=draw(counts),
        cache_write_5m_tokens=draw(counts),
        cache_write_1h_tokens=draw(counts),
        reasoning_tokens=draw(st.integers(min_value=0, max_value=output)),
        batch=batch,
    )


@st.composite
def model_prices(draw: st.DrawFn) -> ModelPrice:
    def optional() -> Decimal | None:
        return draw(st.none() | prices6)

    return ModelPrice.from_spec(
        input_per_mtok=draw(prices6),
        output_per_mtok=draw(prices6),
        cache_read_per_mtok=optional(),
        cache_write_5m_per_mtok=optional(),
        cache_write_1h_per_mtok=optional(),
        reasoning_per_mtok=optional(),
        batch_discount_pct=draw(st.none() | pcts2),
    )


def add(a: UsageQuantities, b: UsageQuantities) -> UsageQuantities:
    return UsageQuantities(
        **{
            f.name: getattr(a, f.name) + getattr(b, f.name)
            for f in dataclasses.fields(UsageQuantities)
            if f.name != "batch"
        },
        batch=a.batch,
    )


def assert_no_float(value: object) -> None:
    assert not isinstance(value, float)
    if isinstance(value, Amount):
        assert type(value.atoms) is int
    elif isinstance(value, tuple):
        for item in value:
            assert_no_float(item)
    elif dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            assert_no_float(getattr(value, f.name))


def oracle(usage: UsageQuantities, price: ModelPrice) -> Fraction:
    """Independent formula for the total, in whole currency units."""
    per_mtok = (
        usage.input_tokens * Fraction(price.input_per_mtok)
        + usage.cache_read_tokens * Fraction(price.cache_read_per_mtok)
        + usage.cache_write_5m_tokens * Fraction(price.cache_write_5m_per_mtok)
        + usage.cache_write_1h_tokens * Fraction(price.cache_write_1h_per_mtok)
        + (usage.output_tokens - usage.reasoning_tokens) * Fraction(price.output_per_mtok)
        + usage.reasoning_tokens * Fraction(price.reasoning_per_mtok)
    )
    factor = 1 - Fraction(price.batch_discount_pct) / 100 if usage.batch else Fraction(1)
    return per_mtok / 1_000_000 * factor


@given(st.booleans().flatmap(lambda b: st.tuples(usages(b), usages(b))), model_prices())
def test_rating_is_linear_exact_and_float_free(
    parts: tuple[UsageQuantities, UsageQuantities], price: ModelPrice
) -> None:
    a, b = parts
    whole = add(a, b)
    ca, cb, cw = rate(a, price, USD), rate(b, price, USD), rate(whole, price, USD)

    assert ca.total + cb.total == cw.total
    for component in Component:
        amounts = [c.line(component) for c in (ca, cb, cw)]
        la, lb, lw = (Amount.zero(USD) if ln is None else ln.amount for ln in amounts)
        assert la + lb == lw, component

    assert cw.total.to_fraction() == oracle(whole, price)
    for charge in (ca, cb, cw):
        assert_consistent(charge)
        assert_no_float(charge)
        for line in charge.lines:
            assert line.price_per_mtok is None or type(line.price_per_mtok) is Decimal
            assert (line.amount.atoms < 0) == (line.component is Component.BATCH_DISCOUNT)


@given(usages(True), model_prices(), pcts2, st.decimals(min_value=0, max_value=500, places=2))
def test_discounted_and_marked_up_prices_rate_exactly_or_refuse_up_front(
    usage: UsageQuantities, price: ModelPrice, discount: Decimal, markup: Decimal
) -> None:
    try:
        derived = price.with_discount(discount).with_markup(markup)
    except InvalidPrice:
        return  # refused when the price is built, never rounded: that is the contract
    factor = (1 - Fraction(discount) / 100) * (1 + Fraction(markup) / 100)
    assert rate(usage, derived, USD).total.to_fraction() == oracle(usage, price) * factor
