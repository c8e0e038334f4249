"""Refunds and disputes of invoices paid by card, end to end.

See ``invoice_world`` for the October invoices they start from.
"""

from __future__ import annotations

from tests.e2e.payments.invoice_world import USD
from tests.helpers import ok, problem
from tests.stripe_fakes import (
    T0,
    charge_obj,
    dispute_obj,
    event,
    payment_intent_obj,
    refund_obj,
)

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
