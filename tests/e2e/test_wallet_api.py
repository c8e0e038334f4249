"""Wallet through the HTTP API on real PostgreSQL.

Top-ups and bonus, lots and expiry, packages, plans and their windows, renewals, refunds, resellers,
and signed outgoing events.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from litestar.testing import TestClient
from sqlalchemy.orm import Session

from api.app import create_app
from api.settings import Settings
from ledger.base import utcnow
from tests.helpers import BONUS_TIERS, key_headers, ok, package, plan, problem
from tests.webhook_endpoint import webhook_endpoint
from wallet.lots import expire_lots
from wallet.models import OutboxEvent, Subscription, SubscriptionPeriod
from wallet.outbox import deliver_due, verify
from wallet.subscriptions import consume_quota, renew_due


@pytest.fixture
def catalog(admin):
    ok(
        admin.post(
            "/v1/models", json={"id": "m-large", "provider": "acme", "display_name": "Large"}
        )
    )
    ok(
        admin.post(
            "/v1/topup-bonus-rules",
            json={
                "currency": "USD",
                "tiers": [*BONUS_TIERS, {"min_amount": "1000.00", "bonus_amount": "150.00"}],
            },
        )
    )
    ok(admin.post("/v1/packages", json=package("pk-1m", "1M tokens", "9.00", 1_000_000, "m-large")))
    windows = (("rolling_5h", "requests", 3), ("weekly", "requests", 10))
    ok(admin.post("/v1/plans", json=plan("coder", "20.00", "block", *windows)))
    return admin


def new_account(client, **kw):
    body = {"name": "Acme", "currency": "USD", **kw}
    return ok(client.post("/v1/accounts", json=body))


def topup(client, account_id, amount, method="bank_transfer", **headers):
    return client.post(
        f"/v1/accounts/{account_id}/topups",
        json={"amount": amount, "method": method},
        headers=headers,
    )


def balance(client, account_id):
    return ok(client.get(f"/v1/accounts/{account_id}/balance"), 200)


def test_tiered_bonus_topup_including_the_boundary(catalog):
    acc = new_account(catalog)
    below = ok(topup(catalog, acc["id"], "99.99"))
    assert below["bonus"]["amount"] == "0.00"
    at_boundary = ok(topup(catalog, acc["id"], "100.00"))
    assert at_boundary["bonus"] == {"amount": "5.00", "currency": "USD"}
    assert at_boundary["credited_total"]["amount"] == "105.00"
    high = ok(topup(catalog, acc["id"], "999.99"))
    assert high["bonus"]["amount"] == "99.999"  # 10 % of 999.99, exact (sub-cent kept)
    fixed = ok(topup(catalog, acc["id"], "1000.00"))
    assert fixed["bonus"]["amount"] == "150.00"
    b = balance(catalog, acc["id"])
    assert b["paid"] == "2199.98"
    assert b["bonus"] == "254.999"
    assert b["available"] == "2454.979"


def test_topup_is_idempotent_and_validated(catalog):
    acc = new_account(catalog)
    h = {"Idempotency-Key": "wire-42"}
    first = ok(topup(catalog, acc["id"], "100.00", **h))
    again = topup(catalog, acc["id"], "100.00", **h)
    assert again.status_code == 201 and again.json()["id"] == first["id"]
    problem(topup(catalog, acc["id"], "200.00", **h), 409, "idempotency_conflict")
    problem(topup(catalog, acc["id"], "1.001"), 400, "invalid_amount")
    problem(topup(catalog, acc["id"], "-5"), 400, "invalid_amount")
    problem(topup(catalog, acc["id"], "5", method="stripe"), 422, "payments_not_configured")
    assert balance(catalog, acc["id"])["paid"] == "100.00"


def test_bonus_lot_expiry_returns_bonus_to_promotions(catalog, engine):
    acc = new_account(catalog)
    ok(topup(catalog, acc["id"], "500.00"))  # 10 % bonus expiring in 30 days
    with Session(engine) as s:
        assert expire_lots(s, now=utcnow() + timedelta(days=29)) == []
        expired = expire_lots(s, now=utcnow() + timedelta(days=31))
        s.commit()
        assert len(expired) == 1
        rows = s.execute(
            sa.text(
                "SELECT a.code, p.amount FROM ledger_postings p"
                " JOIN ledger_accounts a ON a.id = p.account_id"
                " JOIN ledger_entries e ON e.id = p.entry_id"
                " WHERE e.description LIKE 'bonus lot % expired'"
                " ORDER BY a.code"
            )
        ).all()
    assert [(code, int(amount)) for code, amount in rows] == [
        ("customer:bonus", 50 * 10**18),
        ("promotions", -50 * 10**18),
    ]
    b = balance(catalog, acc["id"])
    assert (b["bonus"], b["paid"]) == ("0.00", "500.00")


def test_package_purchase_moves_price_to_deferred_revenue(catalog, engine):
    acc = new_account(catalog)
    ok(topup(catalog, acc["id"], "10.00"))
    bought = ok(
        catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"})
    )
    assert (
        bought["price"] == {"amount": "9.00", "currency": "USD"} and bought["tokens"] == 1_000_000
    )
    b = balance(catalog, acc["id"])
    assert b["paid"] == "1.00"
    assert b["packages"][0]["tokens_remaining"] == 1_000_000 and b["packages"][0]["models"] == [
        "m-large"
    ]
    with Session(engine) as s:
        deferred = s.execute(
            sa.text(
                "SELECT credits_posted - debits_posted FROM ledger_accounts"
                " WHERE code = 'deferred:packages' AND owner_id = :o"
            ),
            {"o": acc["id"]},
        ).scalar_one()
        assert int(deferred) == 9 * 10**18
    # not enough left for a second one: refused, nothing changes
    problem(
        catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"}),
        402,
        "insufficient_funds",
    )
    assert balance(catalog, acc["id"])["paid"] == "1.00"
    # the package expires: tokens to entitlements:expired, deferred money to breakage
    with Session(engine) as s:
        expire_lots(s, now=utcnow() + timedelta(days=31))
        s.commit()
        breakage = s.execute(
            sa.text(
                "SELECT -sum(p.amount) FROM ledger_postings p"
                " JOIN ledger_accounts a ON a.id = p.account_id WHERE a.code = 'revenue:breakage'"
            )
        ).scalar_one()
        assert int(breakage) == 9 * 10**18
    assert balance(catalog, acc["id"])["packages"] == []


def test_plan_with_two_windows_tighter_blocks_first(catalog, engine):
    acc = new_account(catalog)
    problem(
        catalog.post(f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder"}),
        402,
        "insufficient_funds",
    )
    ok(topup(catalog, acc["id"], "25.00"))
    sub = ok(catalog.post(f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder"}))
    assert balance(catalog, acc["id"])["paid"] == "5.00"
    t0 = utcnow()
    with Session(engine) as s:
        for i in range(3):
            assert consume_quota(s, sub["id"], tokens=100, at=t0 + timedelta(minutes=i)).allowed
        blocked = consume_quota(s, sub["id"], tokens=100, at=t0 + timedelta(minutes=10))
        s.commit()
    assert not blocked.allowed
    assert blocked.blocked_by.kind == "rolling_5h"
    assert blocked.blocked_by.resets_at == t0 + timedelta(hours=5)
    b = balance(catalog, acc["id"])
    windows = {w["kind"]: w for w in b["subscription"]["windows"]}
    assert windows["rolling_5h"]["used"] == 3 and windows["weekly"]["used"] == 3
    # after the 5-hour window resets, the weekly window still counts
    with Session(engine) as s:
        assert consume_quota(s, sub["id"], tokens=1, at=t0 + timedelta(hours=5, minutes=1)).allowed
        s.commit()


def test_renewal_run_twice_renews_once_and_cancellation_ends(catalog, engine):
    acc = new_account(catalog)
    ok(topup(catalog, acc["id"], "45.00"))
    sub = ok(catalog.post(f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "coder"}))
    later = utcnow() + timedelta(days=32)
    with Session(engine) as s:
        first = renew_due(s, now=later)
        s.commit()
        second = renew_due(s, now=later)
        s.commit()
        periods = s.scalar(sa.select(sa.func.count()).select_from(SubscriptionPeriod))
        events = s.scalars(sa.select(OutboxEvent.type)).all()
    assert first.renewed == [sub["id"]] and second.renewed == []
    assert periods == 2 and events == ["subscription.renewed"]
    assert balance(catalog, acc["id"])["paid"] == "5.00"
    # the third month cannot be paid: past_due and one renewal_failed event
    with Session(engine) as s:
        third = renew_due(s, now=later + timedelta(days=31))
        s.commit()
        renew_due(s, now=later + timedelta(days=31, hours=1))
        s.commit()
        failed = s.scalars(
            sa.select(OutboxEvent).where(OutboxEvent.type == "subscription.renewal_failed")
        ).all()
        status = s.get_one(Subscription, sub["id"]).status
    assert third.failed == [sub["id"]] and len(failed) == 1 and status == "past_due"
    ok(catalog.post(f"/v1/subscriptions/{sub['id']}/cancel"), 200)
    assert balance(catalog, acc["id"])["subscription"] is None


def test_refund_claws_back_proportional_unspent_bonus(catalog):
    acc = new_account(catalog)
    t = ok(topup(catalog, acc["id"], "200.00"))  # bonus 10.00
    refund = ok(
        catalog.post(f"/v1/topups/{t['id']}/refunds", json={"amount": "50.00", "reason": "asked"})
    )
    assert refund["refunded"]["amount"] == "50.00"
    assert refund["bonus_clawed_back"]["amount"] == "2.50"  # 50/200 of the unspent 10.00
    b = balance(catalog, acc["id"])
    assert (b["paid"], b["bonus"]) == ("150.00", "7.50")
    problem(
        catalog.post(f"/v1/topups/{t['id']}/refunds", json={"amount": "150.01"}),
        422,
        "refund_exceeds_unspent",
    )
    rest = ok(catalog.post(f"/v1/topups/{t['id']}/refunds", json={}))
    assert rest["refunded"]["amount"] == "150.00" and rest["bonus_clawed_back"]["amount"] == "7.50"
    assert balance(catalog, acc["id"])["available"] == "0.00"


def test_reseller_sees_only_its_own_subtree(catalog, engine, client):
    r1 = new_account(catalog, name="Reseller One", kind="reseller")
    r2 = new_account(catalog, name="Reseller Two", kind="reseller")
    h1, h2 = key_headers(engine, "reseller", r1["id"]), key_headers(engine, "reseller", r2["id"])
    sub1 = ok(client.post("/v1/accounts", json={"name": "Shop", "currency": "USD"}, headers=h1))
    assert sub1["parent_id"] == r1["id"]
    # the reseller records money it collected, in its own book
    t = ok(
        client.post(
            f"/v1/accounts/{sub1['id']}/topups",
            json={"amount": "30.00", "method": "reseller"},
            headers=h1,
        )
    )
    assert t["bonus"]["amount"] == "0.00"  # operator bonus rules do not apply in a reseller's book
    # the other reseller cannot see or touch it: 404, not 403
    problem(client.get(f"/v1/accounts/{sub1['id']}", headers=h2), 404, "not_found")
    problem(client.get(f"/v1/accounts/{sub1['id']}/balance", headers=h2), 404, "not_found")
    problem(
        client.post(
            f"/v1/accounts/{sub1['id']}/topups",
            json={"amount": "1.00", "method": "reseller"},
            headers=h2,
        ),
        404,
        "not_found",
    )
    problem(
        client.post(
            "/v1/accounts",
            json={"name": "x", "currency": "USD", "parent_id": sub1["id"]},
            headers=h2,
        ),
        404,
        "not_found",
    )
    listed = ok(client.get("/v1/accounts", headers=h2), 200)["data"]
    assert [a["id"] for a in listed] == [r2["id"]]
    # a customer key sees only its own account
    hc = key_headers(engine, "customer", sub1["id"])
    assert ok(client.get(f"/v1/accounts/{sub1['id']}/balance", headers=hc), 200)["paid"] == "30.00"
    problem(client.get(f"/v1/accounts/{r1['id']}", headers=hc), 404, "not_found")
    with Session(engine) as s:
        book = s.execute(
            sa.text("SELECT DISTINCT book FROM ledger_accounts WHERE owner_id = :o"),
            {"o": sub1["id"]},
        ).scalar_one()
    assert book == f"reseller:{r1['id']}"


def test_events_are_delivered_signed(catalog, engine):
    received: list[tuple[dict, bytes]] = []

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        received.append((headers, body))
        return 204

    with webhook_endpoint(answer) as base:
        acc = new_account(catalog, low_balance_threshold="10.00")
        ep = ok(
            catalog.post(
                "/v1/webhook-endpoints", json={"url": f"{base}/hook", "account_id": acc["id"]}
            )
        )
        assert ep["secret"].startswith("whsec_")
        ok(topup(catalog, acc["id"], "12.00"))
        ok(
            catalog.post(
                f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"}
            )
        )
        with Session(engine) as s:
            report = deliver_due(s)
            s.commit()
        assert report.delivered == 1
        headers, body = received[0]
        assert verify(ep["secret"], headers, body)
        assert not verify(ep["secret"], headers, body + b" ")
        event = json.loads(body)
        assert event["type"] == "balance.low" and event["data"]["available"]["amount"] == "3.00"


def kill_the_flaky_delivery(catalog, engine, client, base: str) -> tuple[dict, dict]:
    """Both endpoints get the account's events; /flaky's dies after 3 attempts: (mine, theirs)."""
    acc = new_account(catalog, low_balance_threshold="10.00")
    mine = key_headers(engine, "customer", acc["id"])
    theirs = key_headers(engine, "customer", new_account(catalog)["id"])
    for path in ("/good", "/flaky"):
        ok(client.post("/v1/webhook-endpoints", json={"url": base + path}, headers=mine))
    ok(topup(catalog, acc["id"], "12.00"))
    ok(catalog.post(f"/v1/accounts/{acc['id']}/package-purchases", json={"package_id": "pk-1m"}))
    at = utcnow()
    for i in range(3):
        with Session(engine) as s:
            deliver_due(s, now=at + timedelta(hours=2 * i), max_attempts=3)
            s.commit()
    return mine, theirs


def test_dead_letters_are_listed_and_replayed_over_the_api(catalog, engine, client):
    """Two real endpoints of one account: one answers 204, one 500 until it is fixed.

    The failing delivery dies after its attempts, is listed as dead, is replayed once (a replayed
    request with the same key replays the answer), and the endpoint that succeeded never receives
    the event twice.
    """
    hits = {"/good": 0, "/flaky": 0}
    fixed = threading.Event()

    def answer(path: str, headers: dict[str, str], body: bytes) -> int:
        """/good answers 204, /flaky 500 until it is fixed."""
        hits[path] += 1
        return 500 if path == "/flaky" and not fixed.is_set() else 204

    with webhook_endpoint(answer) as base:
        mine, theirs = kill_the_flaky_delivery(catalog, engine, client, base)
        assert hits == {"/good": 1, "/flaky": 3}
        dead = ok(client.get("/v1/webhook-deliveries?status=dead", headers=mine), 200)["data"]
        assert [(d["url"], d["attempts"], d["last_status"]) for d in dead] == [
            (base + "/flaky", 3, 500)
        ]
        # another customer sees none of it and cannot replay it
        assert ok(client.get("/v1/webhook-deliveries", headers=theirs), 200)["data"] == []
        url = f"/v1/webhook-deliveries/{dead[0]['id']}/replay"
        problem(client.post(url, headers=theirs), 404, "not_found")
        fixed.set()
        replay = client.post(url, headers={**mine, "Idempotency-Key": "replay-1"})
        assert ok(replay, 200)["status"] == "pending"
        again = client.post(url, headers={**mine, "Idempotency-Key": "replay-1"})
        assert again.headers.get("Idempotent-Replayed") == "true"
        with Session(engine) as s:
            assert deliver_due(s, now=utcnow()).delivered == 1
            s.commit()
        assert hits == {"/good": 1, "/flaky": 4}
        delivered = ok(client.get("/v1/webhook-deliveries?status=delivered", headers=mine), 200)
        assert sorted((d["url"], d["replays"]) for d in delivered["data"]) == [
            (base + "/flaky", 1),
            (base + "/good", 0),
        ]
        # a delivery that is not dead is not replayed
        problem(client.post(url, headers=mine), 409, "conflict")


def test_paid_credit_expiry_is_refused_unless_the_operator_allows_it(catalog, engine):
    acc = new_account(catalog)
    body = {"amount": "10.00", "method": "bank_transfer", "paid_expires_in_days": 30}
    url = f"/v1/accounts/{acc['id']}/topups"
    problem(catalog.post(url, json=body), 422, "paid_expiry_not_allowed")
    problem(catalog.post(url, json={**body, "paid_expires_in_days": 0}), 400, "validation_error")
    assert balance(catalog, acc["id"])["paid"] == "0.00"  # nothing changed

    allowing = create_app(engine, settings=Settings(tokenwallet_paid_credit_expiry_allowed=True))
    with TestClient(allowing) as c:
        c.headers.update(catalog.headers)
        t = ok(c.post(url, json=body))
    assert t["credited_total"]["amount"] == "10.00"
    with Session(engine) as s:
        expires = s.execute(
            sa.text("SELECT expires_at - created_at FROM wallet_credit_lots WHERE source_id = :t"),
            {"t": t["id"]},
        ).scalar_one()
    assert timedelta(days=29) < expires <= timedelta(days=30, seconds=5)
