"""Contract discounts, standing discounts and markup checks (pure, no database)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from plans.discounts import (
    ContractDiscount,
    all_models_pct,
    check_markups,
    parse_discounts,
    standing_contract,
)
from plans.errors import InvalidCatalog, InvalidPrice
from plans.prices import ModelPrice


def test_discount_items_parse_to_one_discount_per_model_and_one_for_all_models() -> None:
    parsed = parse_discounts([{"model": "m", "pct": "12.5"}, {"pct": "5"}])
    assert parsed == [ContractDiscount("m", Decimal("12.5")), ContractDiscount(None, Decimal(5))]
    assert all_models_pct(parsed) == Decimal(5)
    assert all_models_pct(parsed[:1]) is None


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"model": "m", "pct": "1", "note": "x"}], r"discounts\[0\]: unknown fields \['note'\]"),
        ([{"model": 7, "pct": "1"}], r"discounts\[0\].model must be a model id"),
        ([{"pct": "1"}, {"pct": "2"}], "discounts list the all-models discount twice"),
        ([{"model": "m", "pct": "1"}, {"model": "m", "pct": "2"}], "model 'm' twice"),
    ],
)
def test_malformed_discount_items_are_refused(items: list[dict[str, object]], message: str) -> None:
    with pytest.raises(InvalidCatalog, match=message):
        parse_discounts(items)


def test_a_discount_percentage_is_checked() -> None:
    with pytest.raises(InvalidPrice):
        parse_discounts([{"pct": "101"}])


def test_standing_discounts_are_a_contract_without_a_card_named_after_the_account() -> None:
    contract = standing_contract("acc_1", [{"model": "m", "pct": "10"}, {"pct": "2"}])
    assert contract is not None
    assert contract.id == "account:acc_1"
    assert contract.card is None
    assert contract.discount_pct_for("m") == Decimal(10)
    assert contract.discount_pct_for("other") == Decimal(2)
    assert standing_contract("acc_1", []) is None


def test_a_markup_that_would_not_rate_exactly_is_refused_naming_the_book() -> None:
    fine = ModelPrice.from_spec(input_per_mtok="1", output_per_mtok="2")
    check_markups([fine], [("rb_1", Decimal("12.5"))])
    fine_grained = ModelPrice.from_spec(input_per_mtok="0.000001", output_per_mtok="0.000001")
    with pytest.raises(InvalidPrice, match=r"reseller price book rb_2: a 33\.33% markup"):
        check_markups([fine, fine_grained], [("rb_2", Decimal("33.33"))])
