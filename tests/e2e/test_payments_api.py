"""Card payments end to end: the real Stripe SDK over an offline HTTP client, real-shaped and
correctly signed webhooks, real PostgreSQL. Top-ups with bonus, packages and plans by card,
refunds (from Stripe and by finance), disputes, failures and out-of-order delivery."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session

import invoicing.payments.settlement as settlement
from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from api.settings import Settings
from invoicing.payments.stripe_gateway import StripeGateway
from ledger.base import utcnow
from tests.helpers import ok, problem
from tests.stripe_fakes import (
    API_KEY,
    T0,
    WEBHOOK_SECRET,
    FakeStripeHTTP,
    charge_obj,
    completed_session,
    dispute_obj,
    event,
    new_id,
    payment_intent_obj,
    signed,
)

WEBHOOK = "/v1/webhooks/stripe"


@pytest.fixture
def fake():
    return FakeStripeHTTP()


@pytest.fixture
def gateway(fake):
    return StripeGateway(API_KEY, WEBHOOK_SECRET, http_client=fake, max_network_retries=0)


@pytest.fixture
def app(engine, gateway):
    ApiKeyAuthMiddleware._cache.clear()
    return create_app(engine, settings=Settings(), payment_gateway=gateway)


@pytest.fixture
def catalog(admin):
    ok(
        admin.post(
            "/v1/topup-bonus-rules",
            json={
                "currency": "USD",
                "tiers": [
                    {"min_amount": "100.00", "bonus_pct": "5"},
                    {"min_amount": "500.00", "bonus_pct": "10", "bonus_expires_days": 30},
                ],
            },
        )
    )
    ok(admin.post("/v1/models", json={"id": "m-1", "provider": "acme", "display_name": "M"}))
    ok(
        admin.post(
            "/v1/packages",
            json={
                "id": "pk-1m",
                "name": "1M tokens",
                "currency": "USD",
                "price": "9.00",
                "tokens": 1_000_000,
                "valid_days": 30,
            },
        )
    )
    ok(
        admin.post(
            "/v1/plans",
            json={
                "id": "coder",
                "name": "Coder",
                "currency": "USD",
                "monthly_fee": "20.00",
                "windows": [{"kind": "weekly", "unit": "requests", "limit": 10}],
                "on_exhausted": "block",
            },
        )
    )
    return admin


@pytest.fixture
def acc(catalog):
    return ok(catalog.post("/v1/accounts", json={"name": "Card Buyer", "currency": "USD"}))


def balance(client, account_id):
    return ok(client.get(f"/v1/accounts/{account_id}/balance"), 200)


def money(b):
    return b["paid"], b["bonus"], b["held"], b["available"]


def start_topup(client, account_id, amount, **headers):
    return ok(
        client.post(
            f"/v1/accounts/{account_id}/topups",
            json={"amount": amount, "method": "stripe"},
            headers=headers,
        )
    )


def deliver(client, evt, **kw):
    body, sig = signed(evt, **kw)
    return client.post(
        WEBHOOK, content=body, headers={"Stripe-Signature": sig, "Content-Type": "application/json"}
    )


def completed(fake, payment_id, *, pi=None, paid=True):
    """The checkout.session.completed event for our payment's session."""
    session = next(
        s for s in fake.sessions.values() if s["metadata"]["tw_payment_id"] == payment_id
    )
    return event(
        "checkout.session.completed",
        completed_session(session, pi or new_id("pi"), paid=paid),
    )


def pay(client, fake, payment_id):
    evt = completed(fake, payment_id)
    assert ok(deliver(client, evt), 200)["status"] == "processed"
    return evt["data"]["object"]["payment_intent"]


def refunded_event(pi, *, amount, refunded, metadata=None):
    ch = charge_obj(new_id("ch"), pi, amount=amount, amount_refunded=refunded, metadata=metadata)
    return event("charge.refunded", ch, created=T0 + 3600)


def payment_of(client, payment_id):
    return ok(client.get(f"/v1/payments/{payment_id}"), 200)


def event_rows(engine):
    with Session(engine) as s:
        return s.execute(
            sa.text("SELECT id, type, status, attempts FROM payment_events ORDER BY received_at")
        ).all()


def ledger_balance(engine, code, owner=None):
    with Session(engine) as s:
        return s.execute(
            sa.text(
                "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p"
                " JOIN ledger_accounts a ON a.id = p.account_id"
                " WHERE a.code = :code AND a.owner_id IS NOT DISTINCT FROM :owner AND p.phase = 0"
            ),
            {"code": code, "owner": owner},
        ).scalar_one()


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
    body, sig = signed(completed(fake, t["payment_id"]))
    barrier = threading.Barrier(3)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def deliver_once():
        # One client shared by the threads (its portal is thread-safe); each request runs its
        # sync handler in a worker thread with its own session and pooled connection.
        try:
            barrier.wait(timeout=30)
            r = catalog.post(WEBHOOK, content=body, headers={"Stripe-Signature": sig})
            answers.append(ok(r, 200))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver_once) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
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


def test_partial_refund_from_stripe_reverses_the_right_paid_and_bonus(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "500.00")  # bonus 10 % = 50.00
    pi = pay(catalog, fake, t["payment_id"])
    r = ok(deliver(catalog, refunded_event(pi, amount=50000, refunded=20000)), 200)
    assert r["outcome"] == "refunded 200.00 USD, bonus clawed back 20.00 USD"  # 200/500 of 50.00
    assert money(balance(catalog, acc["id"])) == ("300.00", "30.00", "0.00", "330.00")
    # An older snapshot arriving late (less refunded) and a redelivery change nothing.
    assert (
        ok(deliver(catalog, refunded_event(pi, amount=50000, refunded=10000)), 200)["outcome"]
        == "refund already applied"
    )
    r2 = ok(deliver(catalog, refunded_event(pi, amount=50000, refunded=50000)), 200)
    assert r2["outcome"] == "refunded 300.00 USD, bonus clawed back 30.00 USD"
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    assert payment_of(catalog, t["payment_id"])["refunded"]["amount"] == "500.00"
    assert ledger_balance(engine, "cash:stripe") == 0


def test_refund_by_stripe_beyond_unspent_credit_is_a_receivable(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "100.00")  # bonus 5.00
    pi = pay(catalog, fake, t["payment_id"])
    ok(catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"}))
    # 9.00 spent: 5.00 from bonus, 4.00 from paid (burn order bonus before paid).
    assert money(balance(catalog, acc["id"])) == ("96.00", "0.00", "0.00", "96.00")
    r = ok(deliver(catalog, refunded_event(pi, amount=10000, refunded=10000)), 200)
    # all the money went back, so all the bonus that came with it is taken back: it was spent,
    # so the customer owes it (5.00) with the paid credit it spent (4.00)
    assert r["outcome"] == "refunded 96.00 USD, bonus clawed back 5.00 USD, receivable 9.00 USD"
    # what is owed uses the (zero) credit limit until an invoice bills it
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "-9.00")
    assert ledger_balance(engine, "receivable:reversals", acc["id"]) == 9 * 10**18


def test_finance_refund_goes_through_stripe_and_is_limited_to_unspent(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "200.00")  # bonus 10.00
    pi = pay(catalog, fake, t["payment_id"])
    fake.charges[pi] = {"id": "ch_fin", "amount": 20000}
    too_much = problem(
        catalog.post(f"/v1/topups/{t['id']}/refunds", json={"amount": "200.01"}),
        422,
        "refund_exceeds_unspent",
    )
    assert too_much["unspent"] == "200.00"
    assert fake.calls("POST", "/v1/refunds") == []  # refused before calling Stripe
    r = ok(
        catalog.post(
            f"/v1/topups/{t['id']}/refunds",
            json={"amount": "50.00", "reason": "customer asked"},
            headers={"Idempotency-Key": "refund-1"},
        )
    )
    assert (r["refunded"]["amount"], r["bonus_clawed_back"]["amount"]) == ("50.00", "2.50")
    (call,) = fake.calls("POST", "/v1/refunds")
    assert call.params["payment_intent"] == pi and call.params["amount"] == "5000"
    assert call.idempotency_key == f"tokenwallet-refund-{t['payment_id']}-refund-1"
    assert call.params["metadata[tw_topup_id]"] == t["id"]
    assert money(balance(catalog, acc["id"])) == ("150.00", "7.50", "0.00", "157.50")
    # Stripe's charge.refunded for that refund follows: already applied.
    assert (
        ok(deliver(catalog, refunded_event(pi, amount=20000, refunded=5000)), 200)["outcome"]
        == "refund already applied"
    )
    # A retry of the same request replays the answer; no second refund at Stripe.
    again = catalog.post(
        f"/v1/topups/{t['id']}/refunds",
        json={"amount": "50.00", "reason": "customer asked"},
        headers={"Idempotency-Key": "refund-1"},
    )
    assert again.status_code == 201 and again.json() == r
    assert len(fake.calls("POST", "/v1/refunds")) == 1
    # The rest, through the payments endpoint.
    rest = ok(catalog.post(f"/v1/payments/{t['payment_id']}/refunds", json={}))
    assert (rest["refunded"]["amount"], rest["bonus_clawed_back"]["amount"]) == ("150.00", "7.50")
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    assert payment_of(catalog, t["payment_id"])["refunded"]["amount"] == "200.00"


def test_refund_of_a_pending_payment_is_refused(catalog, acc):
    t = start_topup(catalog, acc["id"], "20.00")
    problem(
        catalog.post(f"/v1/payments/{t['payment_id']}/refunds", json={}), 400, "validation_error"
    )


# -- out of order --------------------------------------------------------------------------


def test_refund_arriving_before_the_completion_ends_right(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "500.00")
    evt = completed(fake, t["payment_id"])
    pi = evt["data"]["object"]["payment_intent"]
    early = ok(deliver(catalog, refunded_event(pi, amount=50000, refunded=10000)), 200)
    assert early["status"] == "deferred"
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "0.00")
    done = ok(deliver(catalog, evt), 200)
    assert done["outcome"].startswith("credited; applied 1 earlier event(s)")
    assert money(balance(catalog, acc["id"])) == ("400.00", "40.00", "0.00", "440.00")
    assert sorted(r.status for r in event_rows(engine)) == ["processed", "processed"]


def test_refund_with_our_metadata_before_completion_settles_then_refunds(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "100.00")
    meta = {"tw_payment_id": t["payment_id"]}
    r = ok(
        deliver(catalog, refunded_event("pi_meta", amount=10000, refunded=4000, metadata=meta)), 200
    )
    assert r["outcome"] == "credited, then refunded 40.00 USD, bonus clawed back 2.00 USD"
    assert money(balance(catalog, acc["id"])) == ("60.00", "3.00", "0.00", "63.00")
    late = ok(deliver(catalog, completed(fake, t["payment_id"], pi="pi_meta")), 200)
    assert late["outcome"] == "already credited"
    assert money(balance(catalog, acc["id"])) == ("60.00", "3.00", "0.00", "63.00")


# -- disputes ------------------------------------------------------------------------------


def dispute_event(etype, dp, pi, *, amount, status, **kw):
    return event(
        etype,
        dispute_obj(dp, "ch_disputed", pi, amount=amount, status=status, **kw),
        created=T0 + 7200,
    )


def test_dispute_freezes_credit_until_won(catalog, acc, fake, engine):
    """A dispute opened, the credit frozen until it is won: one story, over 60 lines on
    purpose."""
    t = start_topup(catalog, acc["id"], "500.00")  # bonus 50.00
    pi = pay(catalog, fake, t["payment_id"])
    opened = ok(
        deliver(
            catalog,
            dispute_event(
                "charge.dispute.created", "dp_1", pi, amount=20000, status="needs_response"
            ),
        ),
        200,
    )
    assert "froze 200.00 USD paid and 20.00 USD bonus credit" in opened["outcome"]
    b = balance(catalog, acc["id"])
    assert money(b) == ("500.00", "50.00", "220.00", "330.00")
    # Frozen credit cannot be spent: a purchase bigger than what is left is refused.
    big = ok(
        catalog.post(
            "/v1/packages",
            json={
                "id": "pk-big",
                "name": "Big",
                "currency": "USD",
                "price": "331.00",
                "tokens": 10,
                "valid_days": 30,
            },
        )
    )
    assert big["id"] == "pk-big"
    problem(
        catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-big"}),
        402,
        "insufficient_funds",
    )
    assert ledger_balance(engine, "cash:stripe") == (50000 - 20000) * 10**16
    d = payment_of(catalog, t["payment_id"])["disputes"][0]
    assert (d["outcome"], d["frozen_paid"]["amount"], d["frozen_bonus"]["amount"]) == (
        "open",
        "200.00",
        "20.00",
    )
    won = ok(
        deliver(
            catalog,
            dispute_event(
                "charge.dispute.closed", "dp_1", pi, amount=20000, status="won", reinstated=True
            ),
        ),
        200,
    )
    assert "freeze released" in won["outcome"] and "reinstated" in won["outcome"]
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")
    assert ledger_balance(engine, "cash:stripe") == 500 * 10**18
    assert ledger_balance(engine, "cash:stripe_disputed") == 0
    # A late redelivery of the opening changes nothing.
    assert (
        ok(
            deliver(
                catalog,
                dispute_event(
                    "charge.dispute.created", "dp_1", pi, amount=20000, status="needs_response"
                ),
            ),
            200,
        )["outcome"]
        == "dispute dp_1 already won"
    )
    assert money(balance(catalog, acc["id"])) == ("500.00", "50.00", "0.00", "550.00")


def test_lost_dispute_takes_the_money_and_books_what_was_spent(catalog, acc, fake, engine):
    t = start_topup(catalog, acc["id"], "100.00")  # bonus 5.00
    pi = pay(catalog, fake, t["payment_id"])
    ok(catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"}))
    assert money(balance(catalog, acc["id"])) == ("96.00", "0.00", "0.00", "96.00")
    ok(
        deliver(
            catalog,
            dispute_event(
                "charge.dispute.created", "dp_2", pi, amount=10000, status="needs_response"
            ),
        ),
        200,
    )
    assert money(balance(catalog, acc["id"])) == ("96.00", "0.00", "96.00", "0.00")
    lost = ok(
        deliver(
            catalog, dispute_event("charge.dispute.closed", "dp_2", pi, amount=10000, status="lost")
        ),
        200,
    )
    assert "lost: 96.00 USD of credit taken" in lost["outcome"]
    assert "4.00 USD owed by the customer" in lost["outcome"]
    # what is owed uses the (zero) credit limit until an invoice bills it
    assert money(balance(catalog, acc["id"])) == ("0.00", "0.00", "0.00", "-4.00")
    assert ledger_balance(engine, "receivable:reversals", acc["id"]) == 4 * 10**18
    assert ledger_balance(engine, "cash:stripe") == 0
    assert ledger_balance(engine, "cash:stripe_disputed") == 0
    d = payment_of(catalog, t["payment_id"])["disputes"][0]
    assert (d["outcome"], d["receivable"]["amount"]) == ("lost", "4.00")


def test_dispute_closed_before_created_ends_right(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "100.00")
    pi = pay(catalog, fake, t["payment_id"])
    closed = dispute_event("charge.dispute.closed", "dp_3", pi, amount=3000, status="lost")
    created = dispute_event(
        "charge.dispute.created", "dp_3", pi, amount=3000, status="needs_response"
    )
    ok(deliver(catalog, closed), 200)
    assert money(balance(catalog, acc["id"])) == ("70.00", "3.50", "0.00", "73.50")
    assert ok(deliver(catalog, created), 200)["outcome"] == "dispute dp_3 already lost"
    assert money(balance(catalog, acc["id"])) == ("70.00", "3.50", "0.00", "73.50")


# -- packages and plans by card ------------------------------------------------------------


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
    hold = ok(
        catalog.post(
            "/v1/authorizations",
            json={
                "account_id": acc["id"],
                "model": "m-1",
                "estimated_input_tokens": 1000,
                "max_output_tokens": 1000,
            },
            headers=gw,
        )
    )
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
