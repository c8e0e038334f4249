"""What a new rate card changes against the card in force (pure, no database)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.units import currency
from plans.card_diff import check_removals, check_request, diff_card, merge_prices
from plans.errors import InvalidCatalog
from plans.prices import ModelPrice

USD = currency("USD")
JAN = datetime(2026, 1, 1, tzinfo=UTC)


def mp(inp: str) -> ModelPrice:
    return ModelPrice.from_spec(input_per_mtok=inp, output_per_mtok="1")


def test_listed_models_are_added_changed_or_unchanged_and_the_rest_inherited() -> None:
    old = {"a": mp("1"), "b": mp("2"), "c": mp("3")}
    final, changes, removed = diff_card(
        {"a": mp("1"), "b": mp("5"), "d": mp("4")}, old, inherit=True, remove=[]
    )
    assert [(c.model, c.change) for c in changes] == [
        ("a", "unchanged"),
        ("b", "changed"),
        ("d", "added"),
        ("c", "inherited"),
    ]
    assert final == {"a": mp("1"), "b": mp("5"), "d": mp("4"), "c": mp("3")}
    assert removed == []


def test_a_card_that_does_not_inherit_removes_every_model_it_does_not_list() -> None:
    final, _, removed = diff_card(
        {"a": mp("1")}, {"a": mp("1"), "b": mp("2"), "c": mp("3")}, inherit=False, remove=[]
    )
    assert final == {"a": mp("1")}
    assert removed == ["b", "c"]


def test_an_inheriting_card_removes_only_the_models_it_names() -> None:
    final, _, removed = diff_card({}, {"a": mp("1"), "b": mp("2")}, inherit=True, remove=["b"])
    assert final == {"a": mp("1")}
    assert removed == ["b"]


def test_removals_are_for_cards_that_inherit_and_a_card_needs_something_to_do() -> None:
    with pytest.raises(InvalidCatalog, match="remove_models is for a card that inherits"):
        check_request(listed=True, resolved=False, inherit=False, remove=["a"])
    with pytest.raises(InvalidCatalog, match="needs prices"):
        check_request(listed=False, resolved=False, inherit=True, remove=[])
    check_request(listed=False, resolved=False, inherit=True, remove=["a"])
    check_request(listed=False, resolved=True, inherit=False, remove=[])


def test_a_model_given_and_already_built_is_priced_twice() -> None:
    assert merge_prices({"a": mp("1")}, {"b": mp("2")}) == {"a": mp("1"), "b": mp("2")}
    with pytest.raises(InvalidCatalog, match="model a is priced twice"):
        merge_prices({"a": mp("1")}, {"a": mp("2")})


def test_a_removed_model_must_be_on_the_card_in_force_and_not_priced_again() -> None:
    with pytest.raises(InvalidCatalog, match="both priced and removed"):
        check_removals({"a": mp("1")}, {"a": mp("1")}, ["a"], currency=USD, at=JAN)
    with pytest.raises(InvalidCatalog, match="not priced by the USD card in force at 2026-01-01"):
        check_removals({}, {"a": mp("1")}, ["b"], currency=USD, at=JAN)
    check_removals({}, {"a": mp("1")}, ["a"], currency=USD, at=JAN)


MODELS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
PRICES = st.dictionaries(MODELS, st.sampled_from(["1", "2", "3"]).map(mp), max_size=6)


@given(given_=PRICES, old=PRICES, inherit=st.booleans(), remove=st.lists(MODELS, unique=True))
def test_every_model_is_accounted_for_once_and_the_card_keeps_what_it_does_not_remove(
    given_: dict[str, ModelPrice], old: dict[str, ModelPrice], inherit: bool, remove: list[str]
) -> None:
    remove = [m for m in remove if m in old and m not in given_] if inherit else []
    final, changes, removed = diff_card(given_, old, inherit=inherit, remove=remove)
    seen = [c.model for c in changes] + removed
    assert sorted(seen) == sorted(set(given_) | set(old))
    assert set(final) == set(seen) - set(removed)
    assert all(final[m] == p for m, p in given_.items())
    assert all(final[c.model] == old[c.model] for c in changes if c.change == "inherited")
    assert set(removed) == (set(remove) if inherit else set(old) - set(given_))
