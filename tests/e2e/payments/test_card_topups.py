"""Card top-ups end to end.

The real Stripe SDK over an offline HTTP client, real-shaped and correctly signed webhooks,
real PostgreSQL: checkouts, crediting once with the bonus, webhook signatures and retries,
failures and expiry.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

import invoicing.payments.settlement as settlement
from tests.e2e.payments.card import (
    WEBHOOK,
    balance,
    completed,
    deliver,
    deliver_at_once,
    event_rows,
    ledger_balance,
    money,
    payment_of,
    start_topup,
)
from tests.helpers import ok, problem
from tests.stripe_fakes import (
    event,
    payment_intent_obj,
    signed,
)

# -- starting a card payment ---------------------------------------------------------------


def test_card_topup_creates_checkout_with_our_key_and_metadata_and_credits_nothing(
    catalog, acc, fake
):
    t = start_topup(catalog, acc["id"], "500.00", **{"Idempotency-Key": "buy-500"})
    assert t["status"] == "pending" and t["method"] == "stripe"
    assert t["credited_total"]["amount"] == "0.00"
    assert t["checkout_url"].startswith("https://checkout.stripe.com/c/pay/cs_test_")
    (call,) = fake.calls("POST", "/v1/checkout/sessions")
    assert call.idempotency_key == f"tokenwallet-checkout-{t['payment_id']}"
    p = call.params
    assert p["mode"] == "payment"
    assert p["line_items[0][price_data][unit_amount]"] == "50000"
    assert p["line_items[0][price_data][currency]"] == "usd"
    assert p["client_reference_id"] == t["payment_id"]
    for prefix in ("metadata", "payment_intent_data[metadata]"):
        assert p[f"{prefix}[tw_payment_id]"] == t["payment_id"]
        assert p[f"{prefix}[tw_topup_id]"] == t["id"]
        assert p[f"{prefix}[tw_account_id]"] == acc["id"]
        assert p[f"{prefix}[tw_purpose]"] == "topup"
    assert not any("card" in k for k in p)  # no card data: Stripe's hosted page collects it
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    # The same request again replays the first answer: no second session at Stripe.
    again = catalog.post(
        f"/v1/accounts/{acc['id']}/topups",
        json={"amount": "500.00", "method": "stripe"},
        headers={"Idempotency-Key": "buy-500"},
    )
    assert again.status_code == 201 and again.json() == t
    assert len(fake.calls("POST", "/v1/checkout/sessions")) == 1
    assert payment_of(catalog, t["payment_id"])["status"] == "pending"


def test_checkout_refused_by_stripe_keeps_nothing(catalog, acc, fake, engine):
    fake.fail_next = (
        400,
        {"error": {"type": "invalid_request_error", "message": "Amount too large"}},
    )
    body = problem(
        catalog.post(
            f"/v1/accounts/{acc['id']}/topups", json={"amount": "99999999.00", "method": "stripe"}
        ),
        502,
        "payment_provider_error",
    )
    assert "Amount too large" in body["detail"]
    with Session(engine) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM payments")) == 0
        assert s.scalar(sa.text("SELECT count(*) FROM wallet_topups")) == 0


def test_card_payments_are_for_top_level_accounts_and_whole_cents(catalog, acc, fake):
    reseller = ok(
        catalog.post("/v1/accounts", json={"name": "R", "currency": "USD", "kind": "reseller"})
    )
    sub = ok(
        catalog.post(
            "/v1/accounts", json={"name": "S", "currency": "USD", "parent_id": reseller["id"]}
        )
    )
    url = f"/v1/accounts/{sub['id']}/topups"
    problem(
        catalog.post(url, json={"amount": "10.00", "method": "stripe"}), 400, "validation_error"
    )
    url = f"/v1/accounts/{acc['id']}/topups"
    problem(catalog.post(url, json={"amount": "10.001", "method": "stripe"}), 400, "invalid_amount")
    problem(catalog.post(url, json={"amount": "0", "method": "stripe"}), 400, "invalid_amount")
    assert fake.calls("POST", "/v1/checkout/sessions") == []


# -- webhooks: crediting exactly once ------------------------------------------------------


def test_paid_topup_credits_once_with_its_bonus(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "500.00")
    evt = completed(fake, t["payment_id"])
    first = ok(deliver(catalog, evt), 200)
    assert first["status"] == "processed" and first["outcome"] == "credited"
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")
    # Redelivery of the same event, and the PaymentIntent's own success event: nothing more.
    assert ok(deliver(catalog, evt), 200)["status"] == "duplicate"
    pi = evt["data"]["object"]["payment_intent"]
    meta = {"tw_payment_id": t["payment_id"]}
    again = ok(
        deliver(
            catalog,
            event(
                "payment_intent.succeeded",
                payment_intent_obj(pi, amount=50000, metadata=meta, latest_charge="ch_x"),
            ),
        ),
        200,
    )
    assert again["outcome"] == "already credited"
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")
    topup = ok(catalog.get(f"/v1/payments/{t['payment_id']}"), 200)
    assert topup["status"] == "succeeded" and topup["checkout_url"] is None
    assert ledger_balance(engine, "cash:stripe") == 500 * 10**18
    assert ledger_balance(engine, "cash:bank") == 0
    assert [r.status for r in event_rows(engine)] == ["processed", "processed"]


def test_payment_intent_succeeded_alone_credits_too(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "100.00")
    meta = {"tw_payment_id": t["payment_id"]}
    pi_evt = event(
        "payment_intent.succeeded", payment_intent_obj("pi_alone", amount=10000, metadata=meta)
    )
    assert ok(deliver(catalog, pi_evt), 200)["outcome"] == "credited"
    assert money(balance(catalog, acc["id"])) == ("100.00", "5.00", "0.00", "105.00")
    assert (
        ok(deliver(catalog, completed(fake, t["payment_id"], pi="pi_alone")), 200)["outcome"]
        == "already credited"
    )


def test_the_same_webhook_delivered_three_times_concurrently_credits_once(
    catalog, acc, fake, engine
):
    t = start_topup(catalog, acc["id"], "500.00")
    answers = deliver_at_once(catalog, completed(fake, t["payment_id"]))
    assert sorted(a["status"] for a in answers) == ["duplicate", "duplicate", "processed"]
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")
    (row,) = event_rows(engine)
    assert (row.status, row.attempts) == ("processed", 3)


def test_tampered_signature_or_stale_timestamp_is_rejected_and_changes_nothing(
    catalog, acc, fake, engine
):
    t = start_topup(catalog, acc["id"], "500.00")
    evt = completed(fake, t["payment_id"])
    body, sig = signed(evt)
    tampered = body.replace(b'"amount_total": 50000', b'"amount_total": 90000')
    assert tampered != body
    problem(
        catalog.post(WEBHOOK, content=tampered, headers={"Stripe-Signature": sig}),
        400,
        "invalid_webhook_signature",
    )
    _, wrong_secret = signed(evt, secret="whsec_someone_else")
    problem(
        catalog.post(WEBHOOK, content=body, headers={"Stripe-Signature": wrong_secret}),
        400,
        "invalid_webhook_signature",
    )
    stale_body, stale_sig = signed(evt, timestamp=int(time.time()) - 3600)
    stale = problem(
        catalog.post(WEBHOOK, content=stale_body, headers={"Stripe-Signature": stale_sig}),
        400,
        "invalid_webhook_signature",
    )
    assert "tolerance" in stale["detail"]
    problem(catalog.post(WEBHOOK, content=body), 400, "invalid_webhook_signature")
    assert event_rows(engine) == []
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    assert payment_of(catalog, t["payment_id"])["status"] == "pending"
    # The genuine delivery still works afterwards.
    assert (
        ok(catalog.post(WEBHOOK, content=body, headers={"Stripe-Signature": sig}), 200)["status"]
        == "processed"
    )


def test_webhook_needs_no_api_key(acc, fake, catalog):
    t = start_topup(catalog, acc["id"], "100.00")
    key = catalog.headers.pop("Authorization")
    try:
        assert ok(deliver(catalog, completed(fake, t["payment_id"])), 200)["status"] == (
            "processed"
        )
        assert catalog.get(f"/v1/accounts/{acc['id']}").status_code == 401
    finally:
        catalog.headers["Authorization"] = key


def test_failure_during_processing_leaves_the_event_retryable(
    catalog, acc, fake, engine, monkeypatch
):
    t = start_topup(catalog, acc["id"], "500.00")
    evt = completed(fake, t["payment_id"])
    real = settlement.settle_topup
    calls = []

    def crash_after_crediting(*args, **kwargs):
        calls.append(1)
        real(*args, **kwargs)  # the credit is written... then the process fails
        raise RuntimeError("injected failure after crediting")

    monkeypatch.setattr(settlement, "settle_topup", crash_after_crediting)
    problem(deliver(catalog, evt), 500, "webhook_processing_failed")
    assert calls == [1]
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    (row,) = event_rows(engine)
    assert row.status == "failed"
    with Session(engine) as s:
        err = s.scalar(sa.text("SELECT last_error FROM payment_events"))
    assert "injected failure" in err
    assert payment_of(catalog, t["payment_id"])["status"] == "pending"
    monkeypatch.setattr(settlement, "settle_topup", real)
    assert ok(deliver(catalog, evt), 200)["outcome"] == "credited"
    assert ok(deliver(catalog, evt), 200)["status"] == "duplicate"
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")
    assert [(r.status, r.attempts) for r in event_rows(engine)] == [("processed", 3)]


def test_failed_event_is_retried_by_the_job(catalog, acc, fake, engine, monkeypatch):
    from invoicing.payments.events import retry_failed_events

    t = start_topup(catalog, acc["id"], "100.00")

    def boom(*a, **k):
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(settlement, "settle_topup", boom)
    problem(deliver(catalog, completed(fake, t["payment_id"])), 500, "webhook_processing_failed")
    with Session(engine) as s:
        assert retry_failed_events(s) == {"processed": [], "failed": [event_rows(engine)[0].id]}
        s.commit()
    monkeypatch.undo()
    with Session(engine) as s:
        report = retry_failed_events(s)
        s.commit()
    assert len(report["processed"]) == 1
    assert money(balance(catalog, acc["id"])) == ("100.00", "5.00", "0.00", "105.00")
    with Session(engine) as s:
        assert retry_failed_events(s) == {"processed": [], "failed": []}


def test_amount_mismatch_is_not_credited(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "100.00")
    evt = completed(fake, t["payment_id"])
    evt["data"]["object"]["amount_total"] = 1000
    problem(deliver(catalog, evt), 500, "webhook_processing_failed")
    assert money(balance(catalog, acc["id"]))[0] == "0.00"
    with Session(engine) as s:
        assert "PaymentMismatch" in s.scalar(sa.text("SELECT last_error FROM payment_events"))


def test_unrelated_and_unknown_events_are_stored_and_ignored(catalog, engine):
    other = event("customer.created", {"id": "cus_1", "object": "customer", "metadata": {}})
    assert ok(deliver(catalog, other), 200)["status"] == "ignored"
    foreign = event(
        "checkout.session.completed",
        {
            "id": "cs_foreign",
            "object": "checkout.session",
            "metadata": {},
            "payment_status": "paid",
        },
    )
    assert ok(deliver(catalog, foreign), 200)["status"] == "ignored"
    assert ok(deliver(catalog, foreign), 200)["status"] == "duplicate"
    assert sorted(r.status for r in event_rows(engine)) == ["ignored", "ignored"]


def test_payment_failure_then_success_with_another_card(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "100.00")
    meta = {"tw_payment_id": t["payment_id"]}
    failed = payment_intent_obj(
        "pi_retry",
        amount=10000,
        metadata=meta,
        status="requires_payment_method",
        last_payment_error={
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.",
            "type": "card_error",
        },
    )
    assert (
        ok(deliver(catalog, event("payment_intent.payment_failed", failed)), 200)["outcome"]
        == "payment failed"
    )
    p = payment_of(catalog, t["payment_id"])
    assert (p["status"], p["failure_code"]) == ("failed", "insufficient_funds")
    assert (
        ok(deliver(catalog, completed(fake, t["payment_id"], pi="pi_retry")), 200)["outcome"]
        == "credited"
    )
    p = payment_of(catalog, t["payment_id"])
    assert (p["status"], p["failure_code"]) == ("succeeded", None)
    assert money(balance(catalog, acc["id"])) == ("100.00", "5.00", "0.00", "105.00")


def test_expired_checkout_marks_the_payment_and_credits_nothing(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "100.00")
    session = next(iter(fake.sessions.values()))
    expired = {**session, "status": "expired", "url": None}
    assert (
        ok(deliver(catalog, event("checkout.session.expired", expired)), 200)["outcome"]
        == "payment expired"
    )
    assert payment_of(catalog, t["payment_id"])["status"] == "expired"
    assert balance(catalog, acc["id"])["paid"] == "0.00"


# -- refunds -------------------------------------------------------------------------------
