"""Outgoing webhooks on real PostgreSQL.

One delivery per event and endpoint (an endpoint that answered 2xx never gets the event again
when another endpoint fails), retries with exponential backoff, dead letters after the last
attempt, replay, ``credits.expiring`` delivered once, and no transaction open while a request
is in flight.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from api.scheduler import default_jobs, run_locked
from api.settings import Settings
from ledger.base import utcnow
from plans import catalog
from tests.webhook_endpoint import webhook_endpoint
from wallet.lots import notify_expiring
from wallet.models import OutboxEvent, WebhookDelivery
from wallet.outbox import add_endpoint, backoff, deliver_due, emit, replay_delivery, verify
from wallet.topups import record_topup

from .conftest import T0, funded


class Receiver:
    """Endpoints by URL, each answering from a list of statuses (the last one repeats)."""

    def __init__(self, answers: dict[str, list[int]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, url, headers, body) -> int:
        self.calls.append((url, dict(headers), body))
        statuses = self.answers[url]
        return statuses.pop(0) if len(statuses) > 1 else statuses[0]

    def urls(self) -> list[str]:
        return [c[0] for c in self.calls]


OK, BAD = "https://ok.example/hook", "https://bad.example/hook"
SETTINGS = Settings(database_url="postgresql://unused/none")


def test_backoff_doubles_from_30_seconds_to_an_hour():
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 8, 20)] == [
        30,
        60,
        120,
        240,
        1920,
        3600,
        3600,
    ]


def test_an_endpoint_that_succeeded_is_not_sent_the_event_again_while_another_retries(
    priced: Session,
):
    acc = funded(priced, "10.00")
    ok_ep = add_endpoint(priced, url=OK, account_id=acc.id)
    bad_ep = add_endpoint(priced, url=BAD, account_id=None)  # the operator's
    event_id = emit(priced, account_id=acc.id, type="balance.low", data={"account_id": acc.id})
    priced.commit()
    recv = Receiver({OK: [200], BAD: [500, 503, 0, 204]})
    t = utcnow()
    assert deliver_due(priced, send=recv, now=t).delivered == 1
    assert sorted(recv.urls()) == [BAD, OK]
    # every attempt is signed for its endpoint, with the event id as webhook-id
    for url, headers, body in recv.calls:
        secret = ok_ep.secret if url == OK else bad_ep.secret
        assert headers["webhook-id"] == event_id
        assert verify(secret, headers, body, tolerance_s=3600)
        assert json.loads(body)["type"] == "balance.low"
    priced.commit()  # delivery runs its own transactions
    # the failed one waits 30 s, then 60 s, then 120 s; the one that succeeded is left alone
    waits = []
    at = t
    for wait in (30, 60, 120):
        recv.calls.clear()
        deliver_due(priced, send=recv, now=at + timedelta(seconds=wait - 1))
        assert recv.calls == []  # not due yet
        at += timedelta(seconds=wait)
        report = deliver_due(priced, send=recv, now=at)
        assert recv.urls() == [BAD]
        waits.append(wait)
    assert report.delivered == 1
    priced.commit()
    rows = {
        d.endpoint_id: d
        for d in priced.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == event_id))
    }
    assert (rows[ok_ep.id].status, rows[ok_ep.id].attempts) == ("delivered", 1)
    assert (rows[bad_ep.id].status, rows[bad_ep.id].attempts) == ("delivered", 4)
    assert priced.get_one(OutboxEvent, event_id).delivered_at == at
    priced.commit()
    recv.calls.clear()
    deliver_due(priced, send=recv, now=at + timedelta(days=1))
    assert recv.calls == []  # nothing left to send to anyone


def test_a_delivery_dies_after_its_last_attempt_and_a_replay_sends_it_once_more(
    priced: Session,
):
    acc = funded(priced, "10.00")
    add_endpoint(priced, url=OK, account_id=acc.id)
    bad_ep = add_endpoint(priced, url=BAD, account_id=acc.id)
    emit(priced, account_id=acc.id, type="balance.low", data={"account_id": acc.id})
    priced.commit()
    recv = Receiver({OK: [200], BAD: [500]})
    at = utcnow()
    reports = []
    for _ in range(3):
        reports.append(deliver_due(priced, send=recv, now=at, max_attempts=3))
        at += timedelta(hours=2)
    assert [(r.delivered, r.failed, r.dead) for r in reports] == [(1, 1, 0), (0, 1, 0), (0, 0, 1)]
    dead = priced.scalars(select(WebhookDelivery).where(WebhookDelivery.status == "dead")).one()
    assert (dead.endpoint_id, dead.attempts, dead.last_status) == (bad_ep.id, 3, 500)
    priced.commit()
    recv.calls.clear()
    deliver_due(priced, send=recv, now=at + timedelta(days=3))
    assert recv.calls == []  # dead letters are not retried on their own
    replay_delivery(priced, dead.id, now=at)
    priced.commit()
    recv.answers[BAD] = [200]
    assert deliver_due(priced, send=recv, now=at).delivered == 1
    assert recv.urls() == [BAD]  # the endpoint that had it already is not sent it again
    priced.commit()
    assert (dead.status, dead.replays) == ("delivered", 1)


def test_credits_expiring_is_emitted_once_per_lot_and_delivered_once(priced: Session):
    catalog.create_topup_bonus_rule(
        priced,
        currency="USD",
        tiers=[{"min_amount": "100.00", "bonus_pct": "10", "bonus_expires_days": 5}],
        effective_from=T0,
    )
    acc = funded(priced, None)
    record_topup(priced, acc.id, amount="100.00", method="bank_transfer")
    add_endpoint(priced, url=OK, account_id=acc.id)
    priced.commit()
    now = utcnow()
    assert notify_expiring(priced, now=now) == 1
    assert notify_expiring(priced, now=now + timedelta(hours=1)) == 0  # once per lot
    priced.commit()
    recv = Receiver({OK: [200]})
    deliver_due(priced, send=recv, now=now)
    deliver_due(priced, send=recv, now=now + timedelta(hours=1))
    (call,) = recv.calls
    payload = json.loads(call[2])
    assert payload["type"] == "credits.expiring"
    assert payload["data"]["kind"] == "bonus"
    assert payload["data"]["remaining"] == {"amount": "10.00", "currency": "USD"}


IDLE_IN_TRANSACTION = text(
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
)


def test_no_transaction_is_open_while_a_webhook_request_is_in_flight(
    priced: Session, engine, session_factory
):
    """The delivery job holds no transaction open while it waits on the network.

    A real endpoint asks PostgreSQL, while the request is in flight, whether any backend of the
    database sits idle in a transaction (the job's lock included).
    """
    seen: list[int] = []

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        with engine.connect() as conn:
            seen.append(conn.scalar(IDLE_IN_TRANSACTION))
        return 204

    with webhook_endpoint(answer) as base:
        acc = funded(priced, "10.00")
        add_endpoint(priced, url=f"{base}/a", account_id=acc.id)
        add_endpoint(priced, url=f"{base}/b", account_id=None)
        emit(priced, account_id=acc.id, type="balance.low", data={"account_id": acc.id})
        priced.commit()
        job = next(j for j in default_jobs(SETTINGS) if j.name == "deliver_webhooks")
        assert run_locked(session_factory, job)
    assert seen == [0, 0]
    statuses = priced.scalars(select(WebhookDelivery.status)).all()
    assert statuses == ["delivered", "delivered"]


def test_deliveries_a_failing_sender_did_not_send_are_due_again_at_once(priced: Session):
    acc = funded(priced, "10.00")
    add_endpoint(priced, url=OK, account_id=acc.id)
    add_endpoint(priced, url=BAD, account_id=acc.id)
    emit(priced, account_id=acc.id, type="balance.low", data={"account_id": acc.id})
    priced.commit()
    sent: list[str] = []

    def send(url, headers, body) -> int:
        if sent:
            raise RuntimeError("sender broke")
        sent.append(url)
        return 200

    at = utcnow()
    with pytest.raises(RuntimeError):
        deliver_due(priced, send=send, now=at)
    rows = {d.endpoint_id: d for d in priced.scalars(select(WebhookDelivery))}
    assert sorted((d.status, d.attempts, d.next_attempt_at <= at) for d in rows.values()) == [
        ("delivered", 1, True),
        ("pending", 0, True),
    ]
    priced.commit()
    recv = Receiver({OK: [200], BAD: [200]})
    assert deliver_due(priced, send=recv, now=at).delivered == 1
    assert recv.urls() == [next(u for u in (OK, BAD) if u != sent[0])]


def test_a_session_in_a_transaction_is_refused(priced: Session):
    priced.scalar(select(WebhookDelivery.id))
    with pytest.raises(ValueError, match="own transactions"):
        deliver_due(priced)
