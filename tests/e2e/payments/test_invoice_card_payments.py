"""Paying a finalized invoice by card, end to end.

The real Stripe SDK over an offline HTTP client, real-shaped and correctly signed webhooks,
real PostgreSQL, a real month-end close. October 2026 is billed through the API (the app's
clock is injected): two postpaid customers use 18.00 USD of tokens each, taxed at 20 %, so
each invoice owes 21.60 USD.
"""

from __future__ import annotations

import threading

import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware
from api.settings import Settings
from tests.e2e.payments.card import deliver_at_once
from tests.e2e.payments.invoice_world import USD, World
from tests.helpers import ok, problem
from tests.stripe_fakes import (
    T0,
    charge_obj,
    event,
    new_id,
    payment_intent_obj,
)

# -- paying once ---------------------------------------------------------------------------


def check_the_checkout(w: World, p: dict, inv: dict) -> None:
    """One Checkout Session at Stripe for the invoice's 21.60, tagged with our ids; no card data."""
    assert (p["purpose"], p["purpose_ref"], p["status"]) == ("invoice", inv["id"], "pending")
    assert p["amount"] == {"amount": "21.60", "currency": "USD"} and p["topup_id"] is None
    assert p["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    (call,) = w.fake.calls("POST", "/v1/checkout/sessions")
    assert call.idempotency_key == f"tokenwallet-checkout-{p['id']}"
    params = call.params
    assert params["line_items[0][price_data][unit_amount]"] == "2160"
    assert params["line_items[0][price_data][currency]"] == "usd"
    assert params["client_reference_id"] == p["id"]
    number = w.invoice("acme")["number"]
    assert params["line_items[0][price_data][product_data][name]"] == f"Invoice {number}"
    for prefix in ("metadata", "payment_intent_data[metadata]"):
        assert params[f"{prefix}[tw_payment_id]"] == p["id"]
        assert params[f"{prefix}[tw_invoice_id]"] == inv["id"]
        assert params[f"{prefix}[tw_purpose]"] == "invoice"
    assert not any("card" in k for k in params)


def test_invoice_paid_by_card_once_even_when_the_webhook_arrives_three_times_concurrently(
    world,
):
    """A card payment started, its webhook delivered three times at once, the books checked."""
    w = world
    inv = w.invoices["acme"]
    p = w.start("acme", key="pay-oct")
    check_the_checkout(w, p, inv)
    # Nothing is recorded before Stripe confirms the payment.
    assert w.invoice("acme")["totals"]["balance_due"]["amount"] == "21.60"
    assert w.ledger("cash:stripe") == 0
    # A repeat with the same key replays the answer: no second checkout at Stripe.
    again = w.client.post(
        w.pay_url("acme"),
        json={"method": "stripe"},
        headers={**w.keys["acme"], "Idempotency-Key": "pay-oct"},
    )
    assert again.status_code == 202 and again.json() == p

    answers = deliver_at_once(w.client, w.completed(p["id"]))
    assert sorted(a["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    (first,) = [a for a in answers if a["status"] == "processed"]
    assert first["outcome"] == f"invoice {inv['id']} payment recorded"
    # The PaymentIntent's own success event finds it recorded.
    with Session(w.engine) as s:
        pi = s.scalar(sa.text("SELECT payment_intent_id FROM payments"))
    late = w.deliver(
        event(
            "payment_intent.succeeded",
            payment_intent_obj(pi, amount=2160, metadata={"tw_payment_id": p["id"]}),
        )
    )
    assert ok(late, 200)["outcome"] == "invoice payment already recorded"

    paid = w.invoice("acme")
    assert paid["status"] == "paid" and paid["totals"]["balance_due"]["amount"] == "0.00"
    (rec,) = paid["payments"]
    assert (rec["method"], rec["reference"], rec["amount"]["amount"]) == ("stripe", pi, "21.60")
    assert rec["reversed"]["amount"] == "0.00"
    card = w.get(f"/v1/payments/{p['id']}", "acme")
    assert (card["status"], card["fulfilled_ref"], card["topup_id"]) == (
        "succeeded",
        rec["id"],
        None,
    )
    assert card["checkout_url"] is None
    assert w.ledger("cash:stripe") == 2160 * USD // 100
    assert w.receivable("acme") == 0
    # The wallet is untouched: invoice money is not prepaid credit.
    assert w.balance("acme")["paid"] == "0.00"
    w.books_tie()
    # Paid: another card payment is refused.
    w.refused("acme", "acme", 409, "invoice_state")


def test_a_second_start_returns_the_open_checkout_and_an_expired_one_is_replaced(world):
    w = world
    first = w.start("acme")
    assert w.start("acme")["id"] == first["id"]
    assert w.start("acme", who="finance")["id"] == first["id"]
    assert len(w.fake.calls("POST", "/v1/checkout/sessions")) == 1
    # A part of what is owed is another checkout.
    part = w.start("acme", amount="10.00")
    assert part["id"] != first["id"] and part["amount"]["amount"] == "10.00"
    session = next(
        s for s in w.fake.sessions.values() if s["metadata"]["tw_payment_id"] == first["id"]
    )
    expired = {**session, "status": "expired", "url": None}
    assert ok(w.deliver(event("checkout.session.expired", expired)), 200)["outcome"] == (
        "payment expired"
    )
    fresh = w.start("acme")
    assert fresh["id"] not in (first["id"], part["id"])
    assert len(w.fake.calls("POST", "/v1/checkout/sessions")) == 3
    # Paying the part leaves the rest owed; the full checkout then pays more than is owed.
    w.pay(part["id"])
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "11.60")
    w.pay(fresh["id"])
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("paid", "0.00")
    assert [p["amount"]["amount"] for p in inv["payments"]] == ["10.00", "11.60"]
    assert w.balance("acme")["paid"] == "10.00"
    w.books_tie()


def test_two_concurrent_starts_open_one_checkout(world):
    w = world
    barrier = threading.Barrier(2)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def start_once(who):
        try:
            barrier.wait(timeout=30)
            r = w.client.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys[who])
            answers.append(ok(r, 202))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start_once, args=(who,)) for who in ("acme", "finance")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert answers[0]["id"] == answers[1]["id"]
    assert len(w.fake.calls("POST", "/v1/checkout/sessions")) == 1
    assert w.count("payments") == 1


# -- bad states -----------------------------------------------------------------------------


def refuse_whom_and_how_much(w: World) -> None:
    """A draft, someone else's or an unknown invoice, bad amounts, and the wrong method or role."""
    draft = w.refused("globex", "globex", 409, "invoice_state")
    assert "draft" in draft["detail"] and draft["invoice_status"] == "draft"
    # Another customer's invoice does not exist for it; finance and admin may pay any.
    w.refused("acme", "globex", 404, "not_found")
    w.refused("acme", "other", 404, "not_found")
    problem(
        w.client.post(
            "/v1/invoices/inv_nope/payments", json={"method": "stripe"}, headers=w.keys["acme"]
        ),
        404,
        "not_found",
    )
    # More than is owed, an amount finer than a cent, nothing at all.
    too_much = w.refused("acme", "acme", 422, "payment_exceeds_balance", amount="21.61")
    assert too_much["open_balance"] == "21.60"
    for amount in ("10.001", "0", "-1"):
        w.refused("acme", "acme", 400, "invalid_amount", amount=amount)
    # A card payment is recorded by Stripe's confirmation, not by the caller.
    w.refused("acme", "finance", 400, "validation_error", reference="pi_mine")
    # Customers may not record bank transfers; finance must name the amount and reference.
    transfer = {"method": "bank_transfer", "amount": "21.60", "reference": "TX"}
    w.refused("acme", "acme", 403, "forbidden", **transfer)
    w.refused("acme", "finance", 400, "validation_error", method="bank_transfer")


def refuse_void_and_paid(w: World) -> None:
    """Globex's invoice finalized then voided, Acme's paid by bank transfer: no card for either."""
    globex = w.invoices["globex"]
    w.post(f"/v1/invoices/{globex['id']}/finalize", who="finance", status=200)
    w.post(
        f"/v1/invoices/{globex['id']}/void",
        {"reason": "billed in error"},
        who="finance",
        status=200,
    )
    void = w.refused("globex", "globex", 409, "invoice_state")
    assert "void" in void["detail"]
    # Paid (by bank transfer, which finance still records as before).
    w.post(
        w.pay_url("acme"),
        {"method": "bank_transfer", "amount": "21.60", "reference": "TX-1"},
        who="finance",
    )
    paid = w.refused("acme", "acme", 409, "invoice_state")
    assert "paid" in paid["detail"]


def test_bad_states_are_refused_with_problem_json_and_change_nothing(world):
    """Every refused state against one world, then one check that none of them changed anything."""
    refuse_whom_and_how_much(world)
    refuse_void_and_paid(world)
    assert world.fake.calls("POST", "/v1/checkout/sessions") == []
    assert world.count("payments") == 0
    assert world.ledger("cash:stripe") == 0
    world.books_tie()


def test_without_stripe_keys_an_invoice_card_payment_answers_422(world, engine):
    w = world
    ApiKeyAuthMiddleware._cache.clear()
    bare = create_app(engine, settings=Settings(stripe_api_key=None, stripe_webhook_secret=None))
    with TestClient(bare) as c:
        body = problem(
            c.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["acme"]),
            422,
            "payments_not_configured",
        )
        assert "STRIPE_API_KEY" in body["detail"]
        # Other customers still get 404 first: no hint the invoice exists.
        problem(
            c.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["other"]),
            404,
            "not_found",
        )


# -- the amount owed changed before the money arrived ---------------------------------------


def test_money_beyond_what_is_owed_at_settlement_becomes_paid_credit(world):
    w = world
    p = w.start("acme")
    # Meanwhile the customer also paid 10.00 by bank transfer.
    w.post(
        w.pay_url("acme"),
        {"method": "bank_transfer", "amount": "10.00", "reference": "TX-part"},
        who="finance",
    )
    evt = w.completed(p["id"])
    out = ok(w.deliver(evt), 200)
    assert out["outcome"].startswith(f"invoice {w.invoices['acme']['id']} payment recorded;")
    assert "11.60 USD recorded on it, 10.00 USD kept as paid credit" in out["outcome"]
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("paid", "0.00")
    assert sorted(x["amount"]["amount"] for x in inv["payments"]) == ["10.00", "11.60"]
    card = w.get(f"/v1/payments/{p['id']}")
    assert card["topup_id"] is not None and "kept as paid credit" in card["fulfillment_error"]
    b = w.balance("acme")
    assert (b["paid"], b["bonus"]) == ("10.00", "0.00")  # no top-up bonus on it
    assert w.ledger("cash:stripe") == 2160 * USD // 100
    w.books_tie()
    # Stripe refunds all of it: the credit goes first, then the invoice owes 11.60 again.
    pi = evt["data"]["object"]["payment_intent"]
    ch = charge_obj(new_id("ch"), pi, amount=2160, amount_refunded=2160)
    r = ok(w.deliver(event("charge.refunded", ch, created=T0 + 3600)), 200)
    assert r["outcome"] == (
        f"refunded: invoice {w.invoices['acme']['id']} owes 11.60 USD again,"
        " paid credit reversed 10.00 USD"
    )
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "11.60")
    assert w.balance("acme")["paid"] == "0.00"
    assert w.ledger("cash:stripe") == 0
    assert w.receivable("acme") == 1160 * USD // 100
    w.books_tie()


def test_a_payment_for_a_voided_invoice_becomes_paid_credit(world):
    w = world
    p = w.start("acme")
    w.post(
        f"/v1/invoices/{w.invoices['acme']['id']}/void",
        {"reason": "wrong rate"},
        who="finance",
        status=200,
    )
    out = ok(w.deliver(w.completed(p["id"])), 200)
    assert "it is void" in out["outcome"] and "21.60 USD kept as paid credit" in out["outcome"]
    assert w.invoice("acme")["payments"] == []
    assert w.balance("acme")["paid"] == "21.60"
    w.books_tie()
