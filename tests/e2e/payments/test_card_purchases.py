"""Packages and plans bought by card.

Also: who sees which payments, a server without Stripe keys, and frozen credit.
"""

from __future__ import annotations

from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from api.settings import Settings
from invoicing.payments.stripe_gateway import StripeGateway
from ledger.base import utcnow
from tests.e2e.payments.card import (
    WEBHOOK,
    balance,
    deliver,
    dispute_event,
    ledger_balance,
    money,
    pay,
    payment_of,
    start_topup,
)
from tests.helpers import authorize, ok, problem


def test_package_bought_by_card(catalog, acc, fake, engine):
    ok(
        catalog.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "100.00", "method": "bank_transfer"}
        )
    )
    before = balance(catalog, acc["id"])
    assert money(before) == ("100.00", "5.00", "0.00", "105.00")
    p = ok(
        catalog.post(
            f"/v1/accounts/{acc['id']}/package-purchases",
            json={"package_id": "pk-1m", "method": "stripe"},
        ),
        202,
    )
    assert (p["purpose"], p["purpose_ref"], p["status"]) == ("package", "pk-1m", "pending")
    assert (
        fake.calls("POST", "/v1/checkout/sessions")[0].params[
            "line_items[0][price_data][unit_amount]"
        ]
        == "900"
    )
    pay(catalog, fake, p["id"])
    done = payment_of(catalog, p["id"])
    assert done["status"] == "succeeded" and done["fulfilled_ref"].startswith("pkp_")
    after = balance(catalog, acc["id"])
    # The card money paid the package: the wallet's own bonus and paid credit are untouched.
    assert money(after) == money(before)
    assert [pk["tokens_remaining"] for pk in after["packages"]] == [1_000_000]
    assert ledger_balance(engine, "cash:stripe") == 9 * 10**18


def test_plan_bought_by_card_and_conflict_leaves_the_money_as_credit(catalog, acc, fake):
    p = ok(
        catalog.post(
            f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder", "method": "stripe"}
        ),
        202,
    )
    second = ok(
        catalog.post(
            f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder", "method": "stripe"}
        ),
        202,
    )
    pay(catalog, fake, p["id"])
    b = balance(catalog, acc["id"])
    assert b["subscription"]["plan_id"] == "coder" and b["paid"] == "0.00"
    # The second checkout is paid too, but the account has a live plan now: the money stays.
    pay(catalog, fake, second["id"])
    s = payment_of(catalog, second["id"])
    assert s["status"] == "succeeded" and s["fulfilled_ref"] is None
    assert s["fulfillment_error"].startswith("conflict:")
    assert money(balance(catalog, acc["id"])) == ("20.00", "0.00", "0.00", "20.00")
    # A third checkout is refused up front while the plan is live.
    problem(
        catalog.post(
            f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder", "method": "stripe"}
        ),
        409,
        "conflict",
    )


# -- visibility and configuration ----------------------------------------------------------


def test_customer_sees_only_its_own_payments(catalog, acc, engine, client):
    other = ok(catalog.post("/v1/accounts", json={"name": "Other", "currency": "USD"}))
    t = start_topup(catalog, acc["id"], "10.00")
    with Session(engine) as s:
        k = create_key(s, role="customer", account_id=other["id"])
        s.commit()
    h = {"Authorization": f"Bearer {k.secret}"}
    assert client.get(f"/v1/payments/{t['payment_id']}", headers=h).status_code == 404
    listed = ok(catalog.get(f"/v1/payments?account_id={acc['id']}"), 200)
    assert [p["id"] for p in listed["data"]] == [t["payment_id"]]


def test_without_stripe_keys_card_methods_answer_422_and_the_rest_works(engine, admin_key):
    ApiKeyAuthMiddleware._cache.clear()
    bare = create_app(engine, settings=Settings(stripe_api_key=None, stripe_webhook_secret=None))
    with TestClient(bare) as c:
        c.headers["Authorization"] = f"Bearer {admin_key}"
        a = ok(c.post("/v1/accounts", json={"name": "A", "currency": "USD"}))
        body = problem(
            c.post(f"/v1/accounts/{a['id']}/topups", json={"amount": "10.00", "method": "stripe"}),
            422,
            "payments_not_configured",
        )
        assert "STRIPE_API_KEY" in body["detail"]
        problem(c.post(WEBHOOK, content=b"{}"), 422, "payments_not_configured")
        problem(
            c.post(
                f"/v1/accounts/{a['id']}/package-purchases",
                json={"package_id": "x", "method": "stripe"},
            ),
            422,
            "payments_not_configured",
        )
        ok(
            c.post(
                f"/v1/accounts/{a['id']}/topups",
                json={"amount": "10.00", "method": "bank_transfer"},
            )
        )
        assert ok(c.get(f"/v1/accounts/{a['id']}/balance"), 200)["paid"] == "10.00"


def test_secrets_are_not_shown():
    s = Settings(stripe_api_key="sk_live_secret123", stripe_webhook_secret="whsec_secret456")
    gw = StripeGateway("sk_live_secret123", "whsec_secret456")
    for text in (repr(s), str(s), repr(gw), s.model_dump_json()):
        assert "secret123" not in text and "secret456" not in text


def test_frozen_credit_cannot_be_spent_by_usage_or_holds(catalog, acc, fake, engine):
    ok(
        catalog.post(
            "/v1/rate-cards",
            json={
                "currency": "USD",
                "effective_from": "2026-01-01T00:00:00+00:00",
                "prices": [{"model": "m-1", "input_per_mtok": "3", "output_per_mtok": "15"}],
            },
        )
    )
    with Session(engine) as s:
        gw = {"Authorization": f"Bearer {create_key(s, role='gateway').secret}"}
        s.commit()
    t = start_topup(catalog, acc["id"], "100.00")  # bonus 5.00
    pi = pay(catalog, fake, t["payment_id"])
    opened = dispute_event(
        "charge.dispute.created", "dp_u", pi, amount=10000, status="needs_response"
    )
    ok(deliver(catalog, opened), 200)
    assert money(balance(catalog, acc["id"])) == ("100.00", "5.00", "105.00", "0.00")
    hold = authorize(catalog, gw, acc, 1000, 1000, "m-1")
    assert hold["status"] == "declined"
    usage = {
        "id": "u-1",
        "account_id": acc["id"],
        "model": "m-1",
        "occurred_at": utcnow().isoformat(),
        "input_tokens": 1000,
        "output_tokens": 1000,
    }
    (first,) = ok(catalog.post("/v1/usage", json={"records": [usage]}, headers=gw), 200)["results"]
    assert (first["status"], first["reason"]) == ("rejected", "insufficient_funds")
    won = dispute_event(
        "charge.dispute.closed", "dp_u", pi, amount=10000, status="won", reinstated=True
    )
    ok(deliver(catalog, won), 200)
    usage["id"] = "u-2"
    (second,) = ok(catalog.post("/v1/usage", json={"records": [usage]}, headers=gw), 200)["results"]
    assert second["status"] == "charged" and second["billed"]["amount"] == "0.018"
    assert money(balance(catalog, acc["id"])) == ("100.00", "4.982", "0.00", "104.982")
