"""Concurrent deliveries and races on one payment, with real concurrent connections.

Each thread has its own session on real PostgreSQL.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from sqlalchemy import text

from api.payments import handle_stripe_webhook
from invoicing.payments.refunds import refund_card_payment
from ledger.errors import DomainError
from plans.catalog import create_package
from tests.stripe_fakes import (
    T0,
    charge_obj,
    dispute_obj,
    event,
    payment_intent_obj,
    signed,
)
from wallet.balance import balance_of
from wallet.models import Account
from wallet.packages import buy_package


def run_together(*fns):
    """Start every fn at the same moment in its own thread; return results or exceptions."""
    barrier = threading.Barrier(len(fns))
    out: list[object] = [None] * len(fns)

    def wrap(i, fn):
        barrier.wait(timeout=30)
        try:
            out[i] = fn()
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=wrap, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def money(session_factory, account_id):
    with session_factory() as s:
        b = balance_of(s, s.get_one(Account, account_id))
        return b.paid.format(), b.bonus.format(), b.held.format()


def test_completion_and_intent_success_racing_credit_once(
    session_factory, gateway, card_topup, account_id
):
    payment_id, _, completed = card_topup("500.00", pi="pi_race")
    intent = event(
        "payment_intent.succeeded",
        payment_intent_obj("pi_race", amount=50000, metadata={"tw_payment_id": payment_id}),
    )
    deliveries = [signed(completed), signed(intent)] * 3

    def deliver(body_sig):
        def run():
            with session_factory() as s:
                return handle_stripe_webhook(s, gateway, *body_sig).result.status

        return run

    results = run_together(*(deliver(d) for d in deliveries))
    assert sorted(results) == ["duplicate"] * 4 + ["processed"] * 2
    assert money(session_factory, account_id) == ("500.00", "50.00", "0.00")
    with session_factory() as s:
        entries = s.scalar(
            text("SELECT count(*) FROM ledger_entries WHERE description LIKE 'top-up %'")
        )
    assert entries == 1


def test_finance_refund_and_its_webhook_racing_apply_once(
    session_factory, gateway, fake, card_topup, deliver, account_id
):
    payment_id, _, completed = card_topup("200.00", pi="pi_refund_race")
    deliver(completed)
    fake.charges["pi_refund_race"] = {"id": "ch_rr", "amount": 20000}
    webhook = event(
        "charge.refunded",
        charge_obj("ch_rr", "pi_refund_race", amount=20000, amount_refunded=5000),
        created=T0 + 3600,
    )

    def finance():
        with session_factory() as s:
            r = refund_card_payment(s, gateway, payment_id, amount="50.00", request_key="k1")
            s.commit()
            return r.applied is not None

    def stripe_says():
        with session_factory() as s:
            return handle_stripe_webhook(s, gateway, *signed(webhook)).result.outcome

    results = run_together(finance, stripe_says)
    assert not any(isinstance(r, BaseException) for r in results), results
    # Whichever came first applied the refund; the other found it applied.
    assert money(session_factory, account_id) == ("150.00", "7.50", "0.00")


def test_dispute_freeze_racing_a_purchase_stays_consistent(
    session_factory, in_tx, gateway, card_topup, deliver, account_id
):
    in_tx(
        lambda s: create_package(
            s, id="pk-450", name="Big", currency="USD", price="450.00", tokens=100, valid_days=30
        )
    )
    _, _, completed = card_topup("500.00", pi="pi_freeze_race")
    deliver(completed)
    dispute = event(
        "charge.dispute.created",
        dispute_obj("dp_race", "ch_x", "pi_freeze_race", amount=20000, status="needs_response"),
    )

    def purchase():
        with session_factory() as s:
            p = buy_package(s, account_id, "pk-450")
            s.commit()
            return p.id

    def freeze():
        with session_factory() as s:
            return handle_stripe_webhook(s, gateway, *signed(dispute)).result.outcome

    bought, frozen = run_together(purchase, freeze)
    assert not isinstance(frozen, BaseException), frozen
    paid, bonus, held = money(session_factory, account_id)
    if isinstance(bought, DomainError):
        # The freeze won: 200 of paid + 20 of bonus held, 330 left: too little for 450.
        assert bought.code == "insufficient_funds"
        assert (paid, bonus, held) == ("500.00", "50.00", "220.00")
    else:
        # The purchase won: 450 spent (50 bonus first, then 400 paid); the freeze took the
        # 100 of paid credit left (the disputed 200 is larger than what is unspent).
        assert isinstance(bought, str)
        assert (paid, bonus, held) == ("100.00", "0.00", "100.00")


def test_card_settlement_racing_a_wallet_purchase_both_succeed(
    session_factory, in_tx, gateway, card_topup, deliver, account_id
):
    in_tx(
        lambda s: create_package(
            s, id="pk-9", name="Small", currency="USD", price="9.00", tokens=10, valid_days=30
        )
    )
    _, _, first = card_topup("100.00", pi="pi_first")
    deliver(first)  # 100 paid + 5 bonus to spend
    for round_ in range(3):
        _, _, completed = card_topup("100.00", pi=f"pi_race_{round_}")

        def purchase():
            with session_factory() as s:
                p = buy_package(s, account_id, "pk-9")
                s.commit()
                return p.id

        def settle(evt=completed):
            with session_factory() as s:
                return handle_stripe_webhook(s, gateway, *signed(evt)).result.outcome

        bought, settled = run_together(purchase, settle)
        assert isinstance(bought, str), bought
        assert settled == "credited", settled
    paid, bonus, held = money(session_factory, account_id)
    # 400 paid + 4 x 5 bonus in, 3 x 9 spent (how it splits between bonus and paid depends on
    # which of each pair went first).
    assert Decimal(paid) + Decimal(bonus) == Decimal("393.00") and held == "0.00"
