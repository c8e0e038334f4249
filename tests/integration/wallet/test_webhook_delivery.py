"""Outgoing webhooks on real PostgreSQL: one delivery per event and endpoint (an endpoint that
answered 2xx never gets the event again when another endpoint fails), retries with exponential
backoff, dead letters after the last attempt, replay, and ``credits.expiring`` delivered once."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger.base import utcnow
from plans import catalog
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
    recv.calls.clear()
    deliver_due(priced, send=recv, now=at + timedelta(days=3))
    assert recv.calls == []  # dead letters are not retried on their own
    replay_delivery(priced, dead.id, now=at)
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
