"""Paying a finalized invoice by card, end to end: the real Stripe SDK over an offline HTTP
client, real-shaped and correctly signed webhooks, real PostgreSQL, a real month-end close.

October 2026 is billed through the API (the app's clock is injected): two postpaid customers
use 18.00 USD of tokens each, taxed at 20 %, so each invoice owes 21.60 USD."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.auth import ApiKeyAuthMiddleware, create_key
from api.settings import Settings
from invoicing.payments.stripe_gateway import StripeGateway
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
    refund_obj,
    signed,
)

WEBHOOK = "/v1/webhooks/stripe"
USD = 10**18


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 10, 1, 9, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class World:
    """The app, its keys, and the two invoices of October."""

    def __init__(self, client: TestClient, fake: FakeStripeHTTP, engine, keys: dict) -> None:
        self.client, self.fake, self.engine, self.keys = client, fake, engine, keys
        self.accounts: dict[str, dict] = {}
        self.invoices: dict[str, dict] = {}

    def post(self, path, body=None, *, who="admin", status=201, **headers):
        return ok(self.client.post(path, json=body, headers={**self.keys[who], **headers}), status)

    def get(self, path, who="finance"):
        return ok(self.client.get(path, headers=self.keys[who]), 200)

    def invoice(self, name: str) -> dict:
        return self.get(f"/v1/invoices/{self.invoices[name]['id']}")

    def pay_url(self, name: str) -> str:
        return f"/v1/invoices/{self.invoices[name]['id']}/payments"

    def start(
        self, name: str, *, who: str = "acme", status: int = 202, key: str | None = None, **body
    ) -> dict:
        headers = {"Idempotency-Key": key} if key else {}
        return self.post(
            self.pay_url(name), {"method": "stripe", **body}, who=who, status=status, **headers
        )

    def deliver(self, evt):
        body, sig = signed(evt)
        return self.client.post(
            WEBHOOK,
            content=body,
            headers={"Stripe-Signature": sig, "Content-Type": "application/json"},
        )

    def completed(self, payment_id: str, *, pi: str | None = None):
        session = next(
            s for s in self.fake.sessions.values() if s["metadata"]["tw_payment_id"] == payment_id
        )
        return event("checkout.session.completed", completed_session(session, pi or new_id("pi")))

    def pay(self, payment_id: str) -> str:
        evt = self.completed(payment_id)
        assert ok(self.deliver(evt), 200)["status"] == "processed"
        return evt["data"]["object"]["payment_intent"]

    def balance(self, name: str) -> dict:
        return self.get(f"/v1/accounts/{self.accounts[name]['id']}/balance", "admin")

    def ledger(self, code: str, owner: str | None = None) -> int:
        with Session(self.engine) as s:
            return s.execute(
                sa.text(
                    "SELECT coalesce(sum(p.amount), 0) FROM ledger_postings p"
                    " JOIN ledger_accounts a ON a.id = p.account_id"
                    " WHERE a.code = :code AND a.owner_id IS NOT DISTINCT FROM :owner"
                    " AND p.phase = 0"
                ),
                {"code": code, "owner": owner},
            ).scalar_one()

    def receivable(self, name: str) -> int:
        return self.ledger("receivable:invoiced", self.accounts[name]["id"])

    def count(self, table: str) -> int:
        with Session(self.engine) as s:
            return s.scalar(sa.text(f"SELECT count(*) FROM {table}"))

    def books_tie(self) -> None:
        tb = self.get("/v1/reports/trial-balance?currency=USD&as_of=2027-01-01T00:00:00Z")
        assert tb["summary"]["balanced"] is True
        aging = self.get("/v1/reports/receivables-aging?currency=USD&as_of=2027-01-01")
        assert aging["summary"]["ties"] is True


@pytest.fixture
def fake():
    return FakeStripeHTTP()


@pytest.fixture
def world(engine, fake):
    """Acme and Globex (postpaid, VAT 20 %) each owe 21.60 USD on a finalized October invoice
    (Globex's is left a draft until a test finalizes it); Other is a third customer."""
    ApiKeyAuthMiddleware._cache.clear()
    clock = Clock()
    gateway = StripeGateway(API_KEY, WEBHOOK_SECRET, http_client=fake, max_network_retries=0)
    with Session(engine) as s:
        keys = {r: create_key(s, role=r).secret for r in ("admin", "finance", "gateway")}
        s.commit()
    app = create_app(engine, settings=Settings(), clock=clock, payment_gateway=gateway)
    with TestClient(app) as client:
        hdr = {r: {"Authorization": f"Bearer {k}"} for r, k in keys.items()}
        w = World(client, fake, engine, hdr)
        w.post("/v1/models", {"id": "m", "provider": "acme", "display_name": "M"})
        w.post(
            "/v1/rate-cards",
            {
                "currency": "USD",
                "effective_from": "2026-01-01T00:00:00+00:00",
                "prices": [{"model": "m", "input_per_mtok": "3", "output_per_mtok": "15"}],
            },
        )
        w.post("/v1/tax-profiles", {"id": "vat20", "rate_pct": "20"}, who="finance")
        for name in ("acme", "globex", "other"):
            w.accounts[name] = w.post(
                "/v1/accounts",
                {
                    "name": name.title(),
                    "currency": "USD",
                    "credit_limit": "100",
                    "billing": {"net_terms_days": 30, "tax_profile": "vat20"},
                },
            )
            with Session(engine) as s:
                key = create_key(s, role="customer", account_id=w.accounts[name]["id"]).secret
                s.commit()
            w.keys[name] = {"Authorization": f"Bearer {key}"}
        clock.now = datetime(2026, 10, 10, 12, tzinfo=UTC)
        for i, name in enumerate(("acme", "globex")):
            record = {
                "id": f"u{i}",
                "account_id": w.accounts[name]["id"],
                "model": "m",
                "occurred_at": clock.now.isoformat(),
                "input_tokens": 1_000_000,
                "output_tokens": 1_000_000,
            }
            (r,) = w.post("/v1/usage", {"records": [record]}, who="gateway", status=200)["results"]
            assert (r["status"], r["billed"]["amount"]) == ("charged", "18.00")
        clock.now = datetime(2026, 11, 2, 9, tzinfo=UTC)
        closed = w.post(
            "/v1/billing-periods/2026-10/close", {"finalize": False}, who="finance", status=200
        )
        by_account = {i["account_id"]: i for i in closed["invoices"]}
        for name in ("acme", "globex"):
            w.invoices[name] = by_account[w.accounts[name]["id"]]
        w.post(f"/v1/invoices/{w.invoices['acme']['id']}/finalize", who="finance", status=200)
        inv = w.invoice("acme")
        assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "21.60")
        yield w


# -- paying once ---------------------------------------------------------------------------


def test_invoice_paid_by_card_once_even_when_the_webhook_arrives_three_times_concurrently(
    world,
):
    """A card payment started, its webhook delivered three times at once, then the books
    checked: one story, over 60 lines on purpose."""
    w = world
    inv = w.invoices["acme"]
    p = w.start("acme", key="pay-oct")
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

    body, sig = signed(w.completed(p["id"]))
    barrier = threading.Barrier(3)
    answers: list[dict] = []
    errors: list[BaseException] = []

    def deliver_once():
        try:
            barrier.wait(timeout=30)
            r = w.client.post(WEBHOOK, content=body, headers={"Stripe-Signature": sig})
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
    problem(
        w.client.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["acme"]),
        409,
        "invoice_state",
    )


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


def test_bad_states_are_refused_with_problem_json_and_change_nothing(world):
    """Every refused state against one world, then one check that none of them changed anything;
    over 60 lines on purpose (splitting it would rebuild the world per state and lose the
    final check)."""
    w = world
    globex = w.invoices["globex"]
    draft = problem(
        w.client.post(w.pay_url("globex"), json={"method": "stripe"}, headers=w.keys["globex"]),
        409,
        "invoice_state",
    )
    assert "draft" in draft["detail"] and draft["invoice_status"] == "draft"
    # Another customer's invoice does not exist for it; finance and admin may pay any.
    problem(
        w.client.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["globex"]),
        404,
        "not_found",
    )
    problem(
        w.client.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["other"]),
        404,
        "not_found",
    )
    problem(
        w.client.post(
            "/v1/invoices/inv_nope/payments", json={"method": "stripe"}, headers=w.keys["acme"]
        ),
        404,
        "not_found",
    )
    # More than is owed, an amount finer than a cent, nothing at all.
    too_much = problem(
        w.client.post(
            w.pay_url("acme"), json={"method": "stripe", "amount": "21.61"}, headers=w.keys["acme"]
        ),
        422,
        "payment_exceeds_balance",
    )
    assert too_much["open_balance"] == "21.60"
    for amount in ("10.001", "0", "-1"):
        problem(
            w.client.post(
                w.pay_url("acme"),
                json={"method": "stripe", "amount": amount},
                headers=w.keys["acme"],
            ),
            400,
            "invalid_amount",
        )
    # A card payment is recorded by Stripe's confirmation, not by the caller.
    problem(
        w.client.post(
            w.pay_url("acme"),
            json={"method": "stripe", "reference": "pi_mine"},
            headers=w.keys["finance"],
        ),
        400,
        "validation_error",
    )
    # Customers may not record bank transfers; finance must name the amount and reference.
    problem(
        w.client.post(
            w.pay_url("acme"),
            json={"method": "bank_transfer", "amount": "21.60", "reference": "TX"},
            headers=w.keys["acme"],
        ),
        403,
        "forbidden",
    )
    problem(
        w.client.post(
            w.pay_url("acme"), json={"method": "bank_transfer"}, headers=w.keys["finance"]
        ),
        400,
        "validation_error",
    )
    # Void.
    w.post(f"/v1/invoices/{globex['id']}/finalize", who="finance", status=200)
    w.post(
        f"/v1/invoices/{globex['id']}/void",
        {"reason": "billed in error"},
        who="finance",
        status=200,
    )
    void = problem(
        w.client.post(w.pay_url("globex"), json={"method": "stripe"}, headers=w.keys["globex"]),
        409,
        "invoice_state",
    )
    assert "void" in void["detail"]
    # Paid (by bank transfer, which finance still records as before).
    w.post(
        w.pay_url("acme"),
        {"method": "bank_transfer", "amount": "21.60", "reference": "TX-1"},
        who="finance",
    )
    paid = problem(
        w.client.post(w.pay_url("acme"), json={"method": "stripe"}, headers=w.keys["acme"]),
        409,
        "invoice_state",
    )
    assert "paid" in paid["detail"]
    assert w.fake.calls("POST", "/v1/checkout/sessions") == []
    assert w.count("payments") == 0
    assert w.ledger("cash:stripe") == 0
    w.books_tie()


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


# -- refunds and disputes ------------------------------------------------------------------


def test_refund_from_stripe_reopens_what_is_owed(world):
    w = world
    p = w.start("acme")
    pi = w.pay(p["id"])
    inv_id = w.invoices["acme"]["id"]

    def refunded(total):
        ch = charge_obj("ch_inv", pi, amount=2160, amount_refunded=total)
        return ok(w.deliver(event("charge.refunded", ch, created=T0 + 3600)), 200)

    assert refunded(1000)["outcome"] == f"refunded: invoice {inv_id} owes 10.00 USD again"
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "10.00")
    assert inv["totals"]["amount_paid"]["amount"] == "11.60"
    assert inv["payments"][0]["reversed"]["amount"] == "10.00"
    assert w.receivable("acme") == 10 * USD
    # An older snapshot and a redelivery change nothing; the rest reopens the rest.
    assert refunded(500)["outcome"] == "refund already applied"
    assert refunded(2160)["outcome"] == f"refunded: invoice {inv_id} owes 11.60 USD again"
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "21.60")
    assert w.get(f"/v1/payments/{p['id']}")["refunded"]["amount"] == "21.60"
    assert w.ledger("cash:stripe") == 0
    assert w.receivable("acme") == 2160 * USD // 100
    w.books_tie()
    # Owed again: it can be paid again, by card.
    again = w.start("acme")
    w.pay(again["id"])
    assert w.invoice("acme")["status"] == "paid"
    w.books_tie()


def test_a_refund_that_fails_at_stripe_makes_the_invoice_paid_again_once(world):
    w = world
    p = w.start("acme")
    pi = w.pay(p["id"])
    ch = charge_obj("ch_inv_f", pi, amount=2160, amount_refunded=2160)
    ok(w.deliver(event("charge.refunded", ch, created=T0 + 3600)), 200)
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "21.60")
    refund = refund_obj(
        "re_inv_f", "ch_inv_f", pi, amount=2160, status="failed", failure_reason="unknown"
    )
    for etype, created in (("refund.failed", T0 + 7200), ("charge.refund.updated", T0 + 7201)):
        ok(w.deliver(event(etype, refund, created=created)), 200)
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("paid", "0.00")
    assert inv["payments"][0]["reversed"]["amount"] == "0.00"
    assert w.get(f"/v1/payments/{p['id']}")["refunded"]["amount"] == "0.00"
    assert w.ledger("cash:stripe") == 2160 * USD // 100
    assert w.receivable("acme") == 0
    assert w.count("wallet_outbox WHERE type = 'payment.refund_failed'") == 1
    w.books_tie()


def test_finance_refund_of_an_invoice_payment_goes_through_stripe(world):
    w = world
    p = w.start("acme")
    pi = w.pay(p["id"])
    w.fake.charges[pi] = {"id": "ch_fin", "amount": 2160}
    too_much = problem(
        w.client.post(
            f"/v1/payments/{p['id']}/refunds", json={"amount": "21.61"}, headers=w.keys["finance"]
        ),
        422,
        "refund_exceeds_unspent",
    )
    assert too_much["unspent"] == "21.60"
    assert w.fake.calls("POST", "/v1/refunds") == []
    # Customers may not refund.
    problem(
        w.client.post(f"/v1/payments/{p['id']}/refunds", json={}, headers=w.keys["acme"]),
        403,
        "forbidden",
    )
    r = w.post(
        f"/v1/payments/{p['id']}/refunds",
        {"amount": "5.00", "reason": "goodwill"},
        who="finance",
        **{"Idempotency-Key": "ref-1"},
    )
    assert (r["reopened"]["amount"], r["refunded"]["amount"], r["topup_id"]) == (
        "5.00",
        "0.00",
        None,
    )
    (call,) = w.fake.calls("POST", "/v1/refunds")
    assert call.params["amount"] == "500" and call.params["payment_intent"] == pi
    assert call.params["metadata[tw_invoice_id]"] == w.invoices["acme"]["id"]
    assert w.invoice("acme")["totals"]["balance_due"]["amount"] == "5.00"
    # Stripe's own charge.refunded follows: already applied.
    ch = charge_obj("ch_fin", pi, amount=2160, amount_refunded=500)
    assert ok(w.deliver(event("charge.refunded", ch)), 200)["outcome"] == "refund already applied"
    rest = w.post(f"/v1/payments/{p['id']}/refunds", {}, who="finance")
    assert rest["reopened"]["amount"] == "16.60"
    assert w.invoice("acme")["totals"]["balance_due"]["amount"] == "21.60"
    problem(
        w.client.post(f"/v1/payments/{p['id']}/refunds", json={}, headers=w.keys["finance"]),
        422,
        "refund_exceeds_unspent",
    )
    assert w.ledger("cash:stripe") == 0
    w.books_tie()


def test_lost_dispute_reopens_the_invoice_and_a_won_one_leaves_it_paid(world):
    w = world
    p = w.start("acme")
    pi = w.pay(p["id"])

    def dispute(etype, dp, status, **kw):
        obj = dispute_obj(dp, "ch_dsp", pi, amount=2160, status=status, **kw)
        return ok(w.deliver(event(etype, obj, created=T0 + 7200)), 200)

    opened = dispute("charge.dispute.created", "dp_w", "needs_response")
    assert "withdrawn" in opened["outcome"]
    # nothing to freeze; the invoice shows its payment is disputed while the dispute is open
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["disputed"]["amount"]) == ("disputed", "21.60")
    assert inv["totals"]["balance_due"]["amount"] == "0.00"
    assert w.ledger("cash:stripe") == 0 and w.ledger("cash:stripe_disputed") == 2160 * USD // 100
    aging = w.get("/v1/reports/receivables-aging?currency=USD&as_of=2027-01-01")
    (row,) = [r for r in aging["rows"] if r["invoice_id"] == inv["id"]]
    assert (row["bucket"], row["open"], row["disputed"]) == ("disputed", "0.00", "21.60")
    assert aging["summary"]["disputed"] == "21.60" and aging["summary"]["ties"] is True
    listed = w.get("/v1/invoices?status=disputed")
    assert [i["id"] for i in listed["data"]] == [inv["id"]]
    won = dispute("charge.dispute.closed", "dp_w", "won", reinstated=True)
    assert "reinstated" in won["outcome"]
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["disputed"]["amount"]) == ("paid", "0.00")
    aging = w.get("/v1/reports/receivables-aging?currency=USD&as_of=2027-01-01")
    assert aging["summary"]["disputed"] == "0.00"
    assert not [r for r in aging["rows"] if r["invoice_id"] == inv["id"]]
    assert w.ledger("cash:stripe") == 2160 * USD // 100
    w.books_tie()
    # A second dispute on the same charge is lost: the invoice owes it all again.
    dispute("charge.dispute.created", "dp_l", "needs_response")
    assert w.invoice("acme")["status"] == "disputed"
    lost = dispute("charge.dispute.closed", "dp_l", "lost")
    assert f"lost: 21.60 USD owed on invoice {w.invoices['acme']['id']} again" in lost["outcome"]
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "21.60")
    assert w.ledger("cash:stripe") == 0 and w.ledger("cash:stripe_disputed") == 0
    assert w.receivable("acme") == 2160 * USD // 100
    assert w.ledger("receivable:reversals", w.accounts["acme"]["id"]) == 0
    # A later snapshot of the same dispute changes nothing.
    assert (
        dispute("charge.dispute.closed", "dp_l", "lost")["outcome"] == "dispute dp_l already lost"
    )
    assert w.invoice("acme")["totals"]["balance_due"]["amount"] == "21.60"
    w.books_tie()


def test_events_out_of_order_end_in_the_same_state(world):
    w = world
    inv_id = w.invoices["acme"]["id"]
    p = w.start("acme")
    evt = w.completed(p["id"])
    pi = evt["data"]["object"]["payment_intent"]
    # A refund of 6.00 reported before the payment's completion waits for it.
    ch = charge_obj("ch_ooo", pi, amount=2160, amount_refunded=600)
    early = ok(w.deliver(event("charge.refunded", ch, created=T0 + 3600)), 200)
    assert early["status"] == "deferred"
    assert w.invoice("acme")["payments"] == []
    done = ok(w.deliver(evt), 200)
    assert done["outcome"].startswith(f"invoice {inv_id} payment recorded; applied 1 earlier")
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "6.00")
    # The PaymentIntent's success, late, changes nothing.
    late = event(
        "payment_intent.succeeded",
        payment_intent_obj(pi, amount=2160, metadata={"tw_payment_id": p["id"]}),
    )
    assert ok(w.deliver(late), 200)["outcome"] == "invoice payment already recorded"
    assert w.invoice("acme")["totals"]["balance_due"]["amount"] == "6.00"
    assert w.ledger("cash:stripe") == 1560 * USD // 100
    w.books_tie()


def test_lost_dispute_takes_the_credit_first_then_reopens_the_invoice(world):
    w = world
    inv_id = w.invoices["acme"]["id"]
    p = w.start("acme")
    w.post(
        w.pay_url("acme"),
        {"method": "bank_transfer", "amount": "10.00", "reference": "TX-first"},
        who="finance",
    )
    pi = w.pay(p["id"])  # 11.60 on the invoice, 10.00 as paid credit
    assert w.balance("acme")["paid"] == "10.00"

    def dispute(etype, status):
        obj = dispute_obj("dp_x", "ch_x", pi, amount=2160, status=status)
        return ok(w.deliver(event(etype, obj, created=T0 + 7200)), 200)

    opened = dispute("charge.dispute.created", "needs_response")
    assert "froze 10.00 USD paid and 0.00 USD bonus credit" in opened["outcome"]
    b = w.balance("acme")
    # The frozen credit cannot be spent; what is available is the credit limit (100.00).
    assert (b["paid"], b["held"], b["available"]) == ("10.00", "10.00", "100.00")
    inv = w.invoice("acme")  # the rest of the dispute is the invoice's 11.60
    assert (inv["status"], inv["totals"]["disputed"]["amount"]) == ("disputed", "11.60")
    lost = dispute("charge.dispute.closed", "lost")
    assert "lost: 10.00 USD of credit taken" in lost["outcome"]
    assert f"lost: 11.60 USD owed on invoice {inv_id} again" in lost["outcome"]
    b = w.balance("acme")
    assert (b["paid"], b["held"]) == ("0.00", "0.00")
    inv = w.invoice("acme")
    assert (inv["status"], inv["totals"]["balance_due"]["amount"]) == ("finalized", "11.60")
    assert w.ledger("cash:stripe") == 0 and w.ledger("cash:stripe_disputed") == 0
    assert w.ledger("cash:bank") == 10 * USD
    assert w.ledger("receivable:reversals", w.accounts["acme"]["id"]) == 0
    w.books_tie()
