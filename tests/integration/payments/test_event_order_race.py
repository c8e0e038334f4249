"""A refund delivered while the payment's completion is being applied waits, then applies.

Events of one payment intent apply one at a time, so the refund is never left deferred.
"""

from __future__ import annotations

import threading

from sqlalchemy import text

import invoicing.payments.events as events
from invoicing.payments.events import receive_event
from tests.stripe_fakes import T0, charge_obj, event
from wallet.balance import balance_of
from wallet.models import Account


def test_a_refund_arriving_during_the_completion_is_applied(
    session_factory, card_topup, account_id, monkeypatch
):
    _, _, completed = card_topup("100.00", pi="pi_gap")  # +5 % bonus
    refunded = event(
        "charge.refunded",
        charge_obj("ch_gap", "pi_gap", amount=10000, amount_refunded=10000),
        created=T0 + 120,
    )
    real = events._replay_deferred
    looked, go = threading.Event(), threading.Event()

    def paused(session, payment):
        out = real(session, payment)  # finds nothing deferred yet
        looked.set()
        assert go.wait(30)  # ...and the completion has not committed yet
        return out

    monkeypatch.setattr(events, "_replay_deferred", paused)
    done: list[str] = []

    def complete() -> None:
        with session_factory.begin() as s:
            done.append(receive_event(s, completed).outcome)

    def refund() -> None:
        with session_factory.begin() as s:
            done.append(receive_event(s, refunded).status)

    first = threading.Thread(target=complete)
    first.start()
    assert looked.wait(30)
    second = threading.Thread(target=refund)
    second.start()
    second.join(1)
    assert second.is_alive()  # waits for the completion instead of deferring itself
    go.set()
    first.join(30)
    second.join(30)
    assert done == ["credited", "processed"]
    with session_factory() as s:
        status = s.scalar(
            text("SELECT status FROM payment_events WHERE id = :i"), {"i": refunded["id"]}
        )
        b = balance_of(s, s.get_one(Account, account_id))
    assert status == "processed"
    assert (b.paid.format(), b.bonus.format()) == ("0.00", "0.00")
