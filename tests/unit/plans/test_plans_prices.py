"""Model prices, rate cards and the card in force (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.units import TOKENS, currency
from plans.errors import InvalidCatalog, InvalidPrice, InvalidUsage, NoRateInForce, UnknownModel
from plans.pricebook import card_in_force
from plans.prices import PRICE_FIELDS, ModelPrice, RateCard, price_for

USD = currency("USD")
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)


def card(card_id: str, effective_from: datetime, **prices: ModelPrice) -> RateCard:
    return RateCard(
        id=card_id,
        currency=USD,
        effective_from=effective_from,
        prices=prices or {"m": ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="2")},
    )


# -- defaults ----------------------------------------------------------------------------------


def test_defaults_from_input_and_output() -> None:
    p = ModelPrice.from_spec(input_per_mtok="3.00", output_per_mtok="15.00")
    assert p.input_per_mtok == Decimal("3.00")
    assert p.output_per_mtok == Decimal("15.00")
    assert p.cache_read_per_mtok == Decimal("0.30")
    assert p.cache_write_5m_per_mtok == Decimal("3.75")
    assert p.cache_write_1h_per_mtok == Decimal("6.00")
    assert p.reasoning_per_mtok == Decimal("15.00")
    assert p.batch_discount_pct == Decimal(50)


def test_defaults_are_exact_for_six_decimal_input() -> None:
    p = ModelPrice.from_spec(input_per_mtok="0.000001", output_per_mtok="0.000003")
    assert p.cache_read_per_mtok == Decimal("0.0000001")
    assert p.cache_write_5m_per_mtok == Decimal("0.00000125")
    assert p.cache_write_1h_per_mtok == Decimal("0.000002")


def test_defaults_do_not_round_large_prices() -> None:
    big = "999999999999.999999"  # the largest price accepted, to the last decimal
    p = ModelPrice.from_spec(input_per_mtok=big, output_per_mtok="1")
    assert Fraction(p.cache_write_5m_per_mtok) == Fraction(Decimal(big)) * Fraction(5, 4)
    assert Fraction(p.cache_read_per_mtok) == Fraction(Decimal(big)) / 10


def test_prices_beyond_what_storage_holds_are_refused() -> None:
    with pytest.raises(InvalidPrice, match="at most"):
        ModelPrice.from_spec(input_per_mtok="1000000000000.000001", output_per_mtok="1")


def test_explicit_components_override_defaults() -> None:
    p = ModelPrice.from_spec(
        input_per_mtok="3",
        output_per_mtok="15",
        cache_read_per_mtok="0.25",
        cache_write_5m_per_mtok="4",
        cache_write_1h_per_mtok="5.5",
        reasoning_per_mtok="20",
        batch_discount_pct="12.5",
    )
    assert (p.cache_read_per_mtok, p.cache_write_5m_per_mtok, p.cache_write_1h_per_mtok) == (
        Decimal("0.25"),
        Decimal(4),
        Decimal("5.5"),
    )
    assert p.reasoning_per_mtok == Decimal(20)
    assert p.batch_discount_pct == Decimal("12.5")


def test_accepts_decimal_int_and_zero() -> None:
    p = ModelPrice.from_spec(
        input_per_mtok=Decimal("2.5"), output_per_mtok=0, batch_discount_pct="0"
    )
    assert p.input_per_mtok == Decimal("2.5")
    assert p.output_per_mtok == 0 and p.reasoning_per_mtok == 0
    assert p.batch_discount_pct == 0
    assert (
        ModelPrice.from_spec(
            input_per_mtok="1", output_per_mtok="1", batch_discount_pct="100"
        ).batch_discount_pct
        == 100
    )


def test_trailing_zeros_do_not_count_as_places() -> None:
    p = ModelPrice.from_spec(input_per_mtok="5.000000000", output_per_mtok="1")
    assert p.input_per_mtok == 5


def test_all_fields_are_decimal() -> None:
    p = ModelPrice.from_spec(input_per_mtok="1.1", output_per_mtok="2")
    for name in (*PRICE_FIELDS, "batch_discount_pct"):
        assert type(getattr(p, name)) is Decimal


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        1.5,  # a float, never
        "NaN",
        Decimal("NaN"),
        Decimal("Infinity"),
        "inf",
        "-1",
        Decimal("-0.01"),
        "1.0000001",  # 7 decimals
        Decimal("0.0000005"),
        "abc",
        "",
        "1e3",
        "1_000",
        True,
        None,
        [1],
    ],
)
def test_input_price_rejects(bad: object) -> None:
    with pytest.raises(InvalidPrice) as info:
        ModelPrice.from_spec(input_per_mtok=bad, output_per_mtok="1")  # type: ignore[arg-type]
    assert info.value.code == "invalid_price"


@pytest.mark.parametrize("name", [f for f in PRICE_FIELDS if f != "input_per_mtok"])
def test_every_given_price_is_validated(name: str) -> None:
    kwargs: dict[str, object] = {"input_per_mtok": "1", "output_per_mtok": "1", name: "-0.5"}
    with pytest.raises(InvalidPrice):
        ModelPrice.from_spec(**kwargs)  # type: ignore[arg-type]
    kwargs[name] = 0.5
    with pytest.raises(InvalidPrice):
        ModelPrice.from_spec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["100.01", "-1", "10.005", 50.0, "NaN", "fifty", 101])
def test_batch_discount_rejects(bad: object) -> None:
    with pytest.raises(InvalidPrice):
        ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="1", batch_discount_pct=bad)  # type: ignore[arg-type]


def test_constructor_requires_decimals() -> None:
    with pytest.raises(InvalidPrice):
        ModelPrice(*(["1"] * 6))  # type: ignore[arg-type]


def test_constructor_rejects_prices_finer_than_an_atom_per_token() -> None:
    fine = Decimal("0.0000000000001")  # 13 decimals per Mtok = 10**-19 per token
    ok = Decimal(1)
    with pytest.raises(InvalidPrice):
        ModelPrice(fine, ok, ok, ok, ok, ok, Decimal(0))


def test_constructor_rejects_inexact_batch_discount() -> None:
    twelve_places = [Decimal("0.000000000001")] * 6
    with pytest.raises(InvalidPrice):
        ModelPrice(*twelve_places, Decimal(50))
    ModelPrice(*twelve_places, Decimal(0))


@given(
    inp=st.decimals(min_value=0, max_value=10_000, places=6),
    out=st.decimals(min_value=0, max_value=10_000, places=6),
    pct=st.decimals(min_value=0, max_value=100, places=2),
)
def test_six_decimal_prices_with_defaults_always_fit(
    inp: Decimal, out: Decimal, pct: Decimal
) -> None:
    # The claim the design rests on: 6-decimal prices x (0.1, 1.25, 2) x any 2-decimal
    # batch discount stay whole atoms per token.
    ModelPrice.from_spec(input_per_mtok=inp, output_per_mtok=out, batch_discount_pct=pct)


def test_discount_that_would_not_be_exact_is_refused() -> None:
    p = ModelPrice.from_spec(
        input_per_mtok="1.000001", output_per_mtok="1", batch_discount_pct="12.34"
    )
    assert p.cache_write_5m_per_mtok == Decimal("1.25000125")
    with pytest.raises(InvalidPrice):
        p.with_discount("12.34")
    assert p.with_discount("50").input_per_mtok == Decimal("0.5000005")


def test_with_discount_and_markup() -> None:
    p = ModelPrice.from_spec(input_per_mtok="3", output_per_mtok="15")
    d = p.with_discount("20")
    assert (d.input_per_mtok, d.output_per_mtok, d.cache_read_per_mtok) == (
        Decimal("2.4"),
        Decimal(12),
        Decimal("0.24"),
    )
    assert d.batch_discount_pct == 50
    m = p.with_markup("150")
    assert (m.input_per_mtok, m.cache_write_1h_per_mtok) == (Decimal("7.5"), Decimal(15))
    with pytest.raises(InvalidPrice):
        p.with_discount("101")
    with pytest.raises(InvalidPrice):
        p.with_markup("-1")


# -- rate cards --------------------------------------------------------------------------------


def test_rate_card_from_spec() -> None:
    c = RateCard.from_spec(
        id="list-2025-01",
        currency="usd",
        effective_from=JAN,
        prices=[
            {"model": "a", "input_per_mtok": "3", "output_per_mtok": "15"},
            {
                "model": "b",
                "input_per_mtok": "1",
                "output_per_mtok": "2",
                "cache_read_per_mtok": None,
                "batch_discount_pct": "0",
            },
        ],
    )
    assert c.currency == USD
    assert price_for(c, "a").cache_write_5m_per_mtok == Decimal("3.75")
    assert price_for(c, "b").cache_read_per_mtok == Decimal("0.1")
    assert price_for(c, "b").batch_discount_pct == 0
    with pytest.raises(TypeError):
        c.prices["c"] = price_for(c, "a")  # type: ignore[index]


@pytest.mark.parametrize(
    ("prices", "error"),
    [
        ([{"model": "a", "input_per_mtok": "1", "output_per_mtok": "1"}] * 2, InvalidCatalog),
        ([{"model": "a", "input_per_mtok": "1", "output_per_mtok": "1", "x": "1"}], InvalidCatalog),
        ([{"model": "a", "input_per_mtok": "1"}], InvalidCatalog),
        ([{"input_per_mtok": "1", "output_per_mtok": "1"}], InvalidCatalog),
        ([], InvalidCatalog),
        ([{"model": "a", "input_per_mtok": 1.0, "output_per_mtok": "1"}], InvalidPrice),
        ([{"model": "a", "input_per_mtok": "1", "output_per_mtok": "-1"}], InvalidPrice),
    ],
)
def test_rate_card_from_spec_rejects(
    prices: list[dict[str, object]], error: type[Exception]
) -> None:
    with pytest.raises(error):
        RateCard.from_spec(id="c", currency="USD", effective_from=JAN, prices=prices)


def test_rate_card_structure() -> None:
    with pytest.raises(InvalidCatalog):
        card("c", datetime(2025, 1, 1))  # naive
    with pytest.raises(InvalidCatalog):
        RateCard(id="c", currency=TOKENS, effective_from=JAN, prices={})
    with pytest.raises(InvalidCatalog):
        RateCard.from_spec(
            id="c",
            currency="XXX",
            effective_from=JAN,
            prices=[{"model": "a", "input_per_mtok": "1", "output_per_mtok": "1"}],
        )
    assert InvalidCatalog.code == "validation_error"


def test_price_for_unknown_model() -> None:
    with pytest.raises(UnknownModel) as info:
        price_for(card("c", JAN), "nope")
    assert info.value.code == "unknown_model"
    assert info.value.extra == {"model": "nope", "card_id": "c"}


# -- card in force -----------------------------------------------------------------------------


CARDS = [card("mar", MAR), card("jan", JAN), card("feb", FEB)]


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (JAN, "jan"),
        (FEB - timedelta(microseconds=1), "jan"),
        (FEB, "feb"),  # the boundary instant belongs to the new card
        (FEB + timedelta(microseconds=1), "feb"),
        (MAR, "mar"),
        (datetime(2030, 1, 1, tzinfo=UTC), "mar"),
        # same instant as FEB, written in UTC+08:00
        (datetime(2025, 2, 1, 8, tzinfo=timezone(timedelta(hours=8))), "feb"),
        (datetime(2025, 2, 1, 7, 59, 59, tzinfo=timezone(timedelta(hours=8))), "jan"),
    ],
)
def test_card_in_force(at: datetime, expected: str) -> None:
    assert card_in_force(CARDS, at).id == expected


def test_no_card_before_the_first() -> None:
    with pytest.raises(NoRateInForce) as info:
        card_in_force(CARDS, JAN - timedelta(microseconds=1))
    assert info.value.code == "no_rate_in_force"
    with pytest.raises(NoRateInForce):
        card_in_force([], JAN)


def test_card_in_force_rejects_ties_and_naive_instants() -> None:
    with pytest.raises(InvalidCatalog):
        card_in_force([card("a", JAN), card("b", JAN)], FEB)
    # a tie that is not in force yet does not matter
    assert card_in_force([card("a", JAN), card("b", MAR), card("c", MAR)], FEB).id == "a"
    with pytest.raises(InvalidUsage):
        card_in_force(CARDS, datetime(2025, 2, 1))
