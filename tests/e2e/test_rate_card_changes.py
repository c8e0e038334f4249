"""Changing prices safely over HTTP on real PostgreSQL.

A new card changes what it lists and inherits the rest; removing a model that is still in use
(recent usage, an open contract's discount, a reseller book's price) is refused unless confirmed; a
preview writes nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.auth import create_key
from ledger.base import utcnow
from tests.helpers import add_models, add_rate_card, ok, price, problem


@pytest.fixture
def cat(admin):
    add_models(admin, "m-a", "m-b", "m-c", provider="p")
    prices = [price("m-a", "1", "2"), price("m-b", "3", "4")]
    add_rate_card(admin, prices, utcnow() - timedelta(days=30))
    return admin


def later(minutes: int = 30) -> str:
    return (utcnow() + timedelta(minutes=minutes)).isoformat()


def quote(admin, acc, model, at):
    return admin.get(
        "/v1/price-quotes",
        params={"account_id": acc["id"], "currency": "USD", "model": model, "at": at},
    )


def card_count(engine) -> int:
    with engine.connect() as c:
        return c.execute(sa.text("SELECT count(*) FROM catalog_rate_cards")).scalar_one()


def test_a_card_changes_what_it_lists_and_inherits_the_rest(cat, engine):
    acc = ok(cat.post("/v1/accounts", json={"name": "C", "currency": "USD"}))
    at = later(20)
    card = ok(
        cat.post(
            "/v1/rate-cards",
            json={
                "currency": "USD",
                "effective_from": later(10),
                "prices": [price("m-a", "5", "6")],
            },
        )
    )
    by_model = {p["model"]: p for p in card["prices"]}
    assert by_model["m-a"]["input_per_mtok"] == "5.00"
    assert by_model["m-b"]["input_per_mtok"] == "3.00"  # inherited, not dropped
    q = ok(quote(cat, acc, "m-b", at), 200)
    assert q["prices"]["input_per_mtok"] == "3.00" and q["card_id"] == card["id"]


def test_preview_shows_every_change_and_writes_nothing(cat, engine):
    before = card_count(engine)
    body = {
        "currency": "USD",
        "effective_from": later(),
        "prices": [price("m-a", "1", "2.5"), price("m-c", "7", "8")],
        "inherit": False,
    }
    plan = ok(cat.post("/v1/rate-cards/preview", json=body), 200)
    changes = {c["model"]: c["change"] for c in plan["changes"]}
    assert changes == {"m-a": "changed", "m-c": "added", "m-b": "removed"}
    assert plan["refused"] is False  # m-b has no usage, contract or book
    assert {p["model"] for p in plan["card"]["prices"]} == {"m-a", "m-c"}
    same = ok(
        cat.post(
            "/v1/rate-cards/preview",
            json={"currency": "USD", "effective_from": later(), "prices": [price("m-a", "1", "2")]},
        ),
        200,
    )
    assert {c["model"]: c["change"] for c in same["changes"]} == {
        "m-a": "unchanged",
        "m-b": "inherited",
    }
    assert card_count(engine) == before


def test_removing_a_model_with_recent_usage_needs_confirming(cat, engine):
    acc = ok(cat.post("/v1/accounts", json={"name": "C", "currency": "USD"}))
    ok(
        cat.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "10.00", "method": "bank_transfer"}
        )
    )
    with Session(engine) as s:
        key = create_key(s, role="gateway")
        s.commit()
    gw = {"Authorization": f"Bearer {key.secret}"}
    used = {
        "id": "u1",
        "account_id": acc["id"],
        "model": "m-b",
        "occurred_at": (utcnow() - timedelta(minutes=5)).isoformat(),
        "input_tokens": 1000,
        "output_tokens": 10,
    }
    r = ok(cat.post("/v1/usage", json={"records": [used]}, headers=gw), 200)["results"][0]
    assert r["status"] == "charged"
    body = {"currency": "USD", "effective_from": later(), "remove_models": ["m-b"]}
    plan = ok(cat.post("/v1/rate-cards/preview", json=body), 200)
    (removed,) = [c for c in plan["changes"] if c["change"] == "removed"]
    assert plan["refused"] and "1 usage records" in removed["blockers"][0]
    before = card_count(engine)
    p = problem(cat.post("/v1/rate-cards", json=body), 409, "model_removal_unconfirmed")
    assert "m-b" in p["detail"] and "confirm_removals" in p["detail"]
    assert card_count(engine) == before
    card = ok(cat.post("/v1/rate-cards", json={**body, "confirm_removals": True}))
    assert [p["model"] for p in card["prices"]] == ["m-a"]


def test_removing_a_model_a_contract_discounts_or_a_reseller_prices_needs_confirming(cat):
    acc = ok(cat.post("/v1/accounts", json={"name": "C", "currency": "USD"}))
    ok(
        cat.post(
            "/v1/contracts",
            json={
                "account_id": acc["id"],
                "currency": "USD",
                "discounts": [{"model": "m-b", "pct": "10"}],
            },
        )
    )
    reseller = ok(
        cat.post("/v1/accounts", json={"name": "R", "currency": "USD", "kind": "reseller"})
    )
    ok(
        cat.post(
            "/v1/reseller-price-books",
            json={
                "reseller_account_id": reseller["id"],
                "currency": "USD",
                "prices": [price("m-b", "9", "9")],
            },
        )
    )
    body = {
        "currency": "USD",
        "effective_from": later(),
        "prices": [price("m-a", "1", "2")],
        "inherit": False,
    }
    p = problem(cat.post("/v1/rate-cards", json=body), 409, "model_removal_unconfirmed")
    assert "contract" in p["detail"] and "reseller price book" in p["detail"]
    ok(cat.post("/v1/rate-cards", json={**body, "confirm_removals": True}))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"remove_models": ["m-c"]}, "nothing to remove"),
        ({"prices": [price("m-a", "1", "2")], "remove_models": ["m-a"]}, "both priced"),
        ({"inherit": False, "remove_models": ["m-b"]}, "remove_models is for a card"),
        ({}, "needs prices"),
    ],
)
def test_bad_changes_are_refused(cat, engine, body, fragment):
    before = card_count(engine)
    p = problem(
        cat.post("/v1/rate-cards", json={"currency": "USD", "effective_from": later(), **body}),
        400,
        "validation_error",
    )
    assert fragment in p["detail"]
    assert card_count(engine) == before
