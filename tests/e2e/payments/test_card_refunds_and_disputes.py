"""Card refunds (from Stripe and by finance) and disputes end to end.

Events may arrive out of order.
"""

from __future__ import annotations

from tests.e2e.payments.card import (
    balance,
    completed,
    deliver,
    dispute_event,
    event_rows,
    ledger_balance,
    money,
    pay,
    payment_of,
    refunded_event,
    start_topup,
)
from tests.helpers import ok, package, problem


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


def dispute_opened(pi: str) -> dict:
    """A new ``charge.dispute.created`` event (its own id) of dispute dp_1: 200.00 of ``pi``."""
    return dispute_event(
        "charge.dispute.created", "dp_1", pi, amount=20000, status="needs_response"
    )


def test_dispute_freezes_credit_until_won(catalog, acc, fake, engine):
    """A dispute opened, the credit frozen until it is won."""
    t = start_topup(catalog, acc["id"], "500.00")  # bonus 50.00
    pi = pay(catalog, fake, t["payment_id"])
    opened = ok(deliver(catalog, dispute_opened(pi)), 200)
    assert "froze 200.00 USD paid and 20.00 USD bonus credit" in opened["outcome"]
    b = balance(catalog, acc["id"])
    assert money(b) == ("500.00", "50.00", "220.00", "330.00")
    # Frozen credit cannot be spent: a purchase bigger than what is left is refused.
    big = ok(catalog.post("/v1/packages", json=package("pk-big", "Big", "331.00", 10)))
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
    late = ok(deliver(catalog, dispute_opened(pi)), 200)
    assert late["outcome"] == "dispute dp_1 already won"
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


def test_a_card_topup_refund_takes_a_reason_as_long_as_any_refund(catalog, acc, fake):
    t = start_topup(catalog, acc["id"], "20.00")
    pi = pay(catalog, fake, t["payment_id"])
    fake.charges[pi] = {"id": "ch_long", "amount": 2000}
    reason = "r" * 500  # the most a refund's reason may be; Stripe's metadata keeps 450
    r = ok(catalog.post(f"/v1/topups/{t['id']}/refunds", json={"amount": "5.00", "reason": reason}))
    assert r["refunded"]["amount"] == "5.00"
    (call,) = fake.calls("POST", "/v1/refunds")
    assert call.params["metadata[tw_reason]"] == "r" * 450
    problem(
        catalog.post(f"/v1/topups/{t['id']}/refunds", json={"reason": "r" * 501}),
        400,
        "validation_error",
    )
