"""Price-book resolution: contract -> reseller retail -> list (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from ledger.units import currency
from plans.errors import InvalidCatalog, InvalidPrice, InvalidUsage, NoRateInForce, UnknownModel
from plans.pricebook import Contract, PriceSource, ResellerRetail, resolve_price
from plans.prices import ModelPrice, RateCard
from plans.rating import UsageQuantities, rate

USD = currency("USD")
EUR = currency("EUR")
JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)
APR = datetime(2025, 4, 1, tzinfo=UTC)


def mp(inp: str, out: str) -> ModelPrice:
    return ModelPrice.from_spec(input_per_mtok=inp, output_per_mtok=out)


LIST_JAN = RateCard(id="list-jan", currency=USD, effective_from=JAN, prices={"m": mp("10", "30")})
LIST_MAR = RateCard(
    id="list-mar",
    currency=USD,
    effective_from=MAR,
    prices={"m": mp("8", "24"), "new": mp("1", "2")},
)
LIST = [LIST_JAN, LIST_MAR]

CONTRACT = Contract(
    id="ctr-1", card=LIST_JAN, starts_at=JAN, ends_at=APR, discounts_pct={"m": "20"}
)
RETAIL = ResellerRetail(id="rr-1", currency=USD, markup_pct="25")


def test_list_price_follows_the_card_in_force() -> None:
    feb = resolve_price("m", FEB, list_cards=LIST)
    assert (feb.source, feb.source_id, feb.card_id) == (PriceSource.LIST, "list-jan", "list-jan")
    assert feb.price.input_per_mtok == 10
    assert feb.wholesale is None and feb.discount_pct == 0 and feb.markup_pct == 0
    mar = resolve_price("m", MAR, list_cards=LIST)
    assert (mar.card_id, mar.price.input_per_mtok) == ("list-mar", Decimal(8))
    assert mar.currency == USD


def test_contract_beats_reseller_retail_beats_list() -> None:
    at = FEB
    got = resolve_price("m", at, list_cards=LIST, contract=CONTRACT, reseller_retail=RETAIL)
    assert (got.source, got.source_id, got.card_id) == ("contract", "ctr-1", "list-jan")
    assert got.price.input_per_mtok == Decimal(8)  # 10 - 20%
    assert got.discount_pct == 20
    assert got.wholesale is not None and got.wholesale.source == "list"

    retail = resolve_price("m", at, list_cards=LIST, reseller_retail=RETAIL)
    assert (retail.source, retail.source_id, retail.card_id) == (
        "reseller_retail",
        "rr-1",
        "list-jan",
    )
    assert retail.price.input_per_mtok == Decimal("12.5")  # 10 + 25%
    assert retail.markup_pct == 25

    assert resolve_price("m", at, list_cards=LIST).source == "list"


def test_contract_locks_its_card_version() -> None:
    # the list moved to 8/24 on 1 March; the contract keeps January's 10 less 20%
    got = resolve_price("m", MAR + timedelta(days=1), list_cards=LIST, contract=CONTRACT)
    assert (got.card_id, got.price.input_per_mtok, got.price.output_per_mtok) == (
        "list-jan",
        Decimal(8),
        Decimal(24),
    )
    assert got.price.cache_read_per_mtok == Decimal("0.8")


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (JAN - timedelta(microseconds=1), None),  # no list card either
        (JAN, "contract"),
        (APR - timedelta(microseconds=1), "contract"),
        (APR, "list"),  # ends_at is exclusive: expired falls back
        (APR + timedelta(days=30), "list"),
    ],
)
def test_contract_term(at: datetime, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(NoRateInForce):
            resolve_price("m", at, list_cards=LIST, contract=CONTRACT)
        return
    assert resolve_price("m", at, list_cards=LIST, contract=CONTRACT).source == expected


def test_expired_contract_falls_back_to_reseller_retail() -> None:
    got = resolve_price("m", APR, list_cards=LIST, contract=CONTRACT, reseller_retail=RETAIL)
    assert got.source == "reseller_retail"
    assert got.price.input_per_mtok == Decimal(10)  # 8 (March list) + 25%


def test_contract_not_started_falls_back() -> None:
    later = Contract(id="c2", card=LIST_JAN, starts_at=MAR, discounts_pct={"m": "50"})
    assert resolve_price("m", FEB, list_cards=LIST, contract=later).source == "list"
    assert resolve_price("m", MAR, list_cards=LIST, contract=later).source == "contract"


def test_model_newer_than_the_locked_card_is_not_covered() -> None:
    got = resolve_price("new", MAR, list_cards=LIST, contract=CONTRACT)
    assert (got.source, got.card_id) == ("list", "list-mar")


def test_per_model_discount_replaces_all_models_discount() -> None:
    c = Contract(id="c", discounts_pct={"m": "10"}, all_models_discount_pct="50")
    m = resolve_price("m", MAR, list_cards=LIST, contract=c)
    new = resolve_price("new", MAR, list_cards=LIST, contract=c)
    assert (m.discount_pct, m.price.input_per_mtok) == (Decimal(10), Decimal("7.2"))
    assert (new.discount_pct, new.price.input_per_mtok) == (Decimal(50), Decimal("0.5"))
    # without a locked card the contract discounts the list card in force
    assert (m.source, m.card_id) == ("contract", "list-mar")


def test_reseller_overrides_then_markup_then_list() -> None:
    override = mp("11", "33")
    rr = ResellerRetail(
        id="rr", currency=USD, overrides={"m": override}, wholesale_contract=CONTRACT
    )
    got = resolve_price("m", FEB, list_cards=LIST, reseller_retail=rr)
    assert (got.source, got.card_id, got.price) == ("reseller_retail", None, override)
    # wholesale is what the reseller pays: its own contract
    assert got.wholesale is not None
    assert (got.wholesale.source, got.wholesale.source_id) == ("contract", "ctr-1")
    assert got.wholesale.price.input_per_mtok == 8
    # no override and no markup for "new": the list price applies
    new = resolve_price("new", MAR, list_cards=LIST, reseller_retail=rr)
    assert new.source == "list" and new.wholesale is not None


def test_markup_is_over_the_resellers_wholesale_contract() -> None:
    rr = ResellerRetail(id="rr", currency=USD, markup_pct="50", wholesale_contract=CONTRACT)
    got = resolve_price("m", FEB, list_cards=LIST, reseller_retail=rr)
    assert got.price.input_per_mtok == 12  # 10 - 20% = 8, + 50%
    assert got.card_id == "list-jan"
    # the margin is exact: retail minus wholesale on a usage record
    usage = UsageQuantities(input_tokens=1_000, output_tokens=500)
    assert got.wholesale is not None
    retail = rate(usage, got.price, got.currency).total
    wholesale = rate(usage, got.wholesale.price, got.wholesale.currency).total
    assert (retail - wholesale).format() == "0.01"  # 0.024 - 0.016


def test_unknown_model_everywhere() -> None:
    with pytest.raises(UnknownModel):
        resolve_price("ghost", FEB, list_cards=LIST)
    with pytest.raises(UnknownModel):  # the operator has no wholesale price for it
        resolve_price(
            "ghost",
            FEB,
            list_cards=LIST,
            reseller_retail=ResellerRetail(
                id="rr", currency=USD, overrides={"ghost": mp("1", "1")}
            ),
        )


def test_resolution_rejects_naive_instants_and_mixed_currencies() -> None:
    with pytest.raises(InvalidUsage):
        resolve_price("m", datetime(2025, 2, 1), list_cards=LIST)
    eur = RateCard(id="eur", currency=EUR, effective_from=JAN, prices={"m": mp("1", "1")})
    with pytest.raises(InvalidCatalog):
        resolve_price("m", FEB, list_cards=[*LIST, eur])
    with pytest.raises(InvalidCatalog):
        resolve_price(
            "m", FEB, list_cards=LIST, contract=Contract(id="c", card=eur, discounts_pct={"m": "1"})
        )
    with pytest.raises(InvalidCatalog):
        resolve_price(
            "m",
            FEB,
            list_cards=LIST,
            reseller_retail=ResellerRetail(id="rr", currency=EUR, markup_pct="1"),
        )


def test_contract_validation() -> None:
    with pytest.raises(InvalidCatalog):
        Contract(id="c", card=LIST_JAN, discounts_pct={"other": "5"})
    with pytest.raises(InvalidCatalog):
        Contract(id="c", starts_at=FEB, ends_at=FEB, all_models_discount_pct="5")
    with pytest.raises(InvalidCatalog):
        Contract(id="c", ends_at=datetime(2025, 1, 1), all_models_discount_pct="5")
    with pytest.raises(InvalidCatalog):
        Contract(id="c")
    with pytest.raises(InvalidPrice):
        Contract(id="c", all_models_discount_pct="100.5")
    with pytest.raises(InvalidPrice):
        Contract(id="c", discounts_pct={"m": 0.2})  # type: ignore[dict-item]
    with pytest.raises(InvalidCatalog):
        ResellerRetail(id="rr", currency=USD)
    with pytest.raises(InvalidPrice):
        ResellerRetail(id="rr", currency=USD, markup_pct="-5")
    assert ResellerRetail(id="rr", currency=USD, markup_pct="300").markup_pct == 300


def test_contract_that_cannot_rate_exactly_is_refused_when_created() -> None:
    odd = RateCard(
        id="odd",
        currency=USD,
        effective_from=JAN,
        prices={
            "m": ModelPrice.from_spec(
                input_per_mtok="1.000001", output_per_mtok="1", batch_discount_pct="12.34"
            )
        },
    )
    with pytest.raises(InvalidPrice):
        Contract(id="c", card=odd, discounts_pct={"m": "12.34"})
    # the same discount without a locked card is refused when the price is resolved
    lazy = Contract(id="c", all_models_discount_pct="12.34")
    with pytest.raises(InvalidPrice):
        resolve_price("m", FEB, list_cards=[odd], contract=lazy)
    assert resolve_price(
        "m", FEB, list_cards=[odd], contract=Contract(id="c", all_models_discount_pct="50")
    ).price.input_per_mtok == Decimal("0.5000005")
