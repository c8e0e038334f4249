"""Helpers of the card payment tests.

Start and pay checkouts, deliver signed webhooks, read balances, payments, stored events and
ledger sums.
"""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from tests.helpers import ok
from tests.stripe_fakes import (
    T0,
    charge_obj,
    completed_session,
    dispute_obj,
    event,
    new_id,
    signed,
)

WEBHOOK = "/v1/webhooks/stripe"


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


def deliver_at_once(client, evt, times: int = 3) -> list[dict[str, Any]]:
    """Deliver one signed event ``times`` at once (threads behind a barrier); the 200 answers.

    One client is shared by the threads (its portal is thread-safe); each request runs its sync
    handler in a worker thread with its own session and pooled connection.
    """
    body, sig = signed(evt)
    barrier = threading.Barrier(times)
    answers: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def deliver_once() -> None:
        try:
            barrier.wait(timeout=30)
            r = client.post(WEBHOOK, content=body, headers={"Stripe-Signature": sig})
            answers.append(ok(r, 200))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deliver_once) for _ in range(times)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    return answers


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


def dispute_event(etype, dp, pi, *, amount, status, **kw):
    return event(
        etype,
        dispute_obj(dp, "ch_disputed", pi, amount=amount, status=status, **kw),
        created=T0 + 7200,
    )
