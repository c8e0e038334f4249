"""The gateway hot path over HTTP on real PostgreSQL.

Exactly-once usage, failed-request policies, provider formats, holds, overdraft races, overage,
resellers, plans and packages.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Session

from api.auth import create_key
from ledger.base import utcnow
from tests.helpers import account, authorize, balance, ok, package, plan, rec, send
from wallet.authorizations import expire_authorizations


def test_charge_and_replay_changes_nothing(admin, gw, engine):
    acc = account(admin, "10.00")
    batch = [
        rec("r1", acc),
        rec("r2", acc, input_tokens=1_000_000, output_tokens=200_000),
        {"id": "bad"},
    ]
    first = send(admin, gw, *batch)
    assert [r["status"] for r in first] == ["charged", "charged", "rejected"]
    assert first[0]["billed"] == {"amount": "0.018", "currency": "USD"}  # 1k*3/1M + 1k*15/1M
    assert first[1]["billed"]["amount"] == "6.00"
    assert first[2]["reason"] == "validation_error"
    assert balance(admin, acc)["paid"] == "3.982"
    again = send(admin, gw, *batch)
    assert [r["status"] for r in again] == ["duplicate", "duplicate", "rejected"]
    assert [r["billed"] for r in again[:2]] == [r["billed"] for r in first[:2]]
    assert balance(admin, acc)["paid"] == "3.982"
    with Session(engine) as s:
        assert s.scalar(sa.text("SELECT count(*) FROM wallet_usage_records")) == 2


def test_write_failure_after_claim_leaves_record_retryable(admin, gw, monkeypatch):
    acc = account(admin, "10.00")
    import wallet.gateway as gateway

    real = gateway.write

    def boom(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("disk full (injected)")

    monkeypatch.setattr(gateway, "write", boom)
    resp = admin.post("/v1/usage", json={"records": [rec("x1", acc)]}, headers=gw)
    assert resp.status_code == 500
    assert balance(admin, acc)["paid"] == "10.00"
    monkeypatch.setattr(gateway, "write", real)
    assert send(admin, gw, rec("x1", acc))[0]["status"] == "charged"
    assert send(admin, gw, rec("x1", acc))[0]["status"] == "duplicate"
    assert balance(admin, acc)["paid"] == "9.982"


def test_failed_request_policies(admin, gw):
    ok(
        admin.post(
            "/v1/failed-request-policies",
            json={
                "id": "strict",
                "rules": {
                    "provider_truncation": "output_not_billed",
                    "refusal": "not_billed",
                    "client_disconnect": "billed",
                },
            },
        )
    )
    acc = account(admin, "10.00", failed_request_policy="strict")
    results = send(
        admin,
        gw,
        rec("e500", acc, http_status=502),
        rec("trunc", acc, finish_reason="length"),
        rec("refuse", acc, finish_reason="content_filter"),
        rec("gone", acc, http_status=499),
        rec("empty", acc, output_tokens=0, finish_reason="stop"),
        rec("input-only", acc, output_tokens=0),
        rec("fine", acc),
    )
    by_id = {r["id"]: r for r in results}
    assert (
        by_id["e500"]["billed"]["amount"] == "0.00"
        and by_id["e500"]["credited"]["amount"] == "0.018"
    )
    assert by_id["e500"]["reason"] == "provider_error:not_billed"
    assert (
        by_id["trunc"]["billed"]["amount"] == "0.003"
        and by_id["trunc"]["credited"]["amount"] == "0.015"
    )
    assert by_id["refuse"]["billed"]["amount"] == "0.00"
    assert by_id["gone"]["billed"]["amount"] == "0.018"
    assert by_id["empty"]["billed"]["amount"] == "0.00"  # default: empty completions not billed
    assert by_id["input-only"]["billed"]["amount"] == "0.003"  # 1k input tokens, no output
    assert by_id["fine"]["reason"] is None
    totals = ok(admin.get(f"/v1/accounts/{acc['id']}/usage?group_by=reason"), 200)["data"]
    credited = {row["key"]: row["credited"]["amount"] for row in totals}
    assert credited["provider_error:not_billed"] == "0.018"


def test_provider_formats_price_cached_tokens_at_the_cache_rate(admin, gw):
    acc = account(admin, "10.00")
    r = send(
        admin,
        gw,
        rec(
            "oa",
            acc,
            input_tokens=None,
            output_tokens=None,
            openai_usage={
                "prompt_tokens": 1_000_000,
                "completion_tokens": 1000,
                "prompt_tokens_details": {"cached_tokens": 800_000},
            },
        ),
        rec(
            "an",
            acc,
            input_tokens=None,
            output_tokens=None,
            anthropic_usage={
                "input_tokens": 200_000,
                "output_tokens": 1000,
                "cache_read_input_tokens": 800_000,
                "cache_creation_input_tokens": 0,
            },
        ),
    )
    # 200k uncached at 3.00 + 800k cached at 0.30 (0.1x) + 1k output at 15 = 0.60 + 0.24 + 0.015
    assert [x["billed"]["amount"] for x in r] == ["0.855", "0.855"]


def test_hold_partial_capture_release_and_expiry(admin, gw, engine):
    """A hold's life from authorization to partial capture, release and expiry."""
    acc = account(admin, "1.00")
    auth = authorize(admin, gw, acc, 10_000, 10_000)
    assert auth["status"] == "approved" and auth["held"]["amount"] == "0.18"
    b = balance(admin, acc)
    assert (b["held"], b["available"]) == ("0.18", "0.82")
    # capture less than held: the rest is released
    r = send(
        admin,
        gw,
        rec("c1", acc, input_tokens=1000, output_tokens=1000, authorization_id=auth["id"]),
    )
    assert r[0]["billed"]["amount"] == "0.018"
    b = balance(admin, acc)
    assert (b["held"], b["paid"], b["available"]) == ("0.00", "0.982", "0.982")
    # void and expiry release exactly once
    a2 = authorize(admin, gw, acc, 0, 10_000)
    assert (
        ok(admin.post(f"/v1/authorizations/{a2['id']}/void", headers=gw), 200)["status"] == "voided"
    )
    assert (
        ok(admin.post(f"/v1/authorizations/{a2['id']}/void", headers=gw), 200)["status"] == "voided"
    )
    a3 = authorize(admin, gw, acc, 0, 10_000, ttl_seconds=1)
    with Session(engine) as s:
        assert expire_authorizations(s, now=utcnow() + timedelta(seconds=5)) == [a3["id"]]
        s.commit()
        assert expire_authorizations(s, now=utcnow() + timedelta(seconds=5)) == []
    assert balance(admin, acc)["available"] == "0.982"
    # nothing can cover a big call: declined with a code, nothing held
    big = authorize(admin, gw, acc, 0, 1_000_000)
    assert big["status"] == "declined" and big["decline_code"] == "insufficient_funds"


def test_capture_above_hold_is_charged_as_usage_and_capped_only_at_the_wallet(admin, gw):
    for funds, billed, credited, reason, left in (
        ("1.00", "0.03", "0.00", None, "0.97"),  # the excess is plain usage
        ("0.02", "0.02", "0.01", "capped_at_hold", "0.00"),  # what nothing can pay is credited
    ):
        acc = account(admin, funds)
        auth = authorize(admin, gw, acc, 0, 1000)
        assert auth["held"]["amount"] == "0.015"
        r = send(
            admin,
            gw,
            rec(
                "big" + funds, acc, input_tokens=0, output_tokens=2000, authorization_id=auth["id"]
            ),
        )
        assert (r[0]["billed"]["amount"], r[0]["credited"]["amount"], r[0]["reason"]) == (
            billed,
            credited,
            reason,
        )
        assert balance(admin, acc)["paid"] == left


def test_concurrent_void_and_capture_of_one_hold(admin, gw):
    acc = account(admin, "1.00")
    for n in range(4):
        auth = authorize(admin, gw, acc, 0, 1000)
        out: list[int] = []
        barrier = threading.Barrier(2)

        record = rec(
            f"cap{n}", acc, input_tokens=0, output_tokens=1000, authorization_id=auth["id"]
        )

        def capture(record=record):
            barrier.wait()
            out.append(admin.post("/v1/usage", headers=gw, json={"records": [record]}).status_code)

        def void(aid=auth["id"]):
            barrier.wait()
            out.append(admin.post(f"/v1/authorizations/{aid}/void", headers=gw).status_code)

        threads = [threading.Thread(target=capture), threading.Thread(target=void)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert out and all(code == 200 for code in out)
    b = balance(admin, acc)
    assert b["held"] == "0.00"
    # each charged record cost 0.015; whatever won, money only left once per capture
    charged = ok(admin.get(f"/v1/accounts/{acc['id']}/usage"), 200)["data"]
    spent = sum(int(row["records"]) for row in charged)
    assert Decimal(b["paid"]) == Decimal("1.00") - Decimal("0.015") * spent


def test_overdraft_race_exactly_n_succeed(admin, gw):
    acc = account(admin, "0.15")  # exactly 10 records of 0.015
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def spend(worker: int) -> None:
        barrier.wait()
        for j in range(3):
            record = rec(f"w{worker}-{j}", acc, input_tokens=0, output_tokens=1000)
            r = admin.post("/v1/usage", headers=gw, json={"records": [record]})
            with lock:
                results.append(r.json()["results"][0]["status"])

    threads = [threading.Thread(target=spend, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("charged") == 10
    assert results.count("rejected") == 38
    b = balance(admin, acc)
    assert (b["paid"], b["available"]) == ("0.00", "0.00")


def test_overage_within_credit_limit_goes_to_unbilled_receivable(admin, gw):
    acc = account(admin, "0.01", credit_limit="0.02")
    r = send(admin, gw, *[rec(f"o{i}", acc, input_tokens=0, output_tokens=1000) for i in range(3)])
    assert [x["status"] for x in r] == ["charged", "charged", "rejected"]
    assert r[2]["reason"] == "insufficient_funds"
    b = balance(admin, acc)
    assert (b["paid"], b["overage_unbilled"], b["available"]) == ("0.00", "0.02", "0.00")


def test_reseller_usage_draws_float_at_wholesale(admin, gw):
    reseller = account(admin, "0.03", kind="reseller")
    ok(
        admin.post(
            "/v1/reseller-price-books",
            json={"reseller_account_id": reseller["id"], "currency": "USD", "markup_pct": "100"},
        )
    )
    sub = account(admin, parent_id=reseller["id"])
    ok(
        admin.post(
            f"/v1/accounts/{sub['id']}/topups", json={"amount": "1.00", "method": "reseller"}
        )
    )
    r = send(admin, gw, *[rec(f"s{i}", sub, input_tokens=0, output_tokens=1000) for i in range(3)])
    assert [x["status"] for x in r] == ["charged", "charged", "rejected"]
    assert r[0]["billed"]["amount"] == "0.03"  # retail = wholesale 0.015 + 100 %
    assert r[2]["reason"] == "reseller_float_exhausted"
    assert balance(admin, sub)["paid"] == "0.94"
    assert balance(admin, reseller)["paid"] == "0.00"


def test_plan_quota_then_block_and_package_tokens(admin, gw, engine):
    ok(admin.post("/v1/plans", json=plan("p", "1.00", "block", ("rolling_5h", "requests", 2))))
    acc = account(admin, "2.00")
    ok(admin.post(f"/v1/accounts/{acc['id']}/subscriptions", json={"plan_id": "p"}))
    r = send(admin, gw, *[rec(f"p{i}", acc) for i in range(3)])
    assert [x["status"] for x in r] == ["charged", "charged", "rejected"]
    assert r[0]["billed"]["amount"] == "0.00" and r[2]["reason"] == "plan_quota_exhausted"
    ok(admin.post("/v1/packages", json=package("pk", "Pk", "0.50", 3000, valid_days=10)))
    acc2 = account(admin, "1.00")
    ok(admin.post(f"/v1/accounts/{acc2['id']}/package-purchases", json={"package_id": "pk"}))
    r = send(admin, gw, rec("k1", acc2), rec("k2", acc2))  # 2000 tokens each; the package has 3000
    assert r[0]["billed"]["amount"] == "0.00"
    assert r[1]["billed"]["amount"] == "0.009"  # half of 0.018 paid from the wallet
    b = balance(admin, acc2)
    assert b["packages"] == [] and b["paid"] == "0.491"
    with Session(engine) as s:
        recognized = s.execute(
            sa.text(
                "SELECT -sum(p.amount) FROM ledger_postings p"
                " JOIN ledger_accounts a ON a.id = p.account_id WHERE a.code = 'revenue:packages'"
            )
        ).scalar_one()
    assert int(recognized) == 5 * 10**17


def test_usage_totals_honour_from_and_to(admin, gw):
    acc = account(admin, "1.00")
    now = utcnow()
    send(
        admin,
        gw,
        rec("early", acc, occurred_at=(now - timedelta(hours=2)).isoformat()),
        rec("late", acc, occurred_at=now.isoformat()),
    )
    since = (now - timedelta(hours=1)).isoformat()
    rows = ok(admin.get(f"/v1/accounts/{acc['id']}/usage", params={"from": since}), 200)["data"]
    assert [(r["key"], r["records"]) for r in rows] == [("m", 1)]
    rows = ok(admin.get(f"/v1/accounts/{acc['id']}/usage", params={"to": since}), 200)["data"]
    assert [(r["key"], r["records"]) for r in rows] == [("m", 1)]


def test_a_database_conflict_is_a_retryable_503_that_changes_nothing(admin, gw, monkeypatch):
    import psycopg
    from sqlalchemy.exc import OperationalError

    import api.batcher as route

    acc = account(admin, "1.00")

    def deadlock(*args, **kwargs):
        raise OperationalError("UPDATE ...", {}, psycopg.errors.DeadlockDetected("deadlock"))

    monkeypatch.setattr(route, "execute", deadlock)
    resp = admin.post("/v1/usage", json={"records": [rec("d1", acc)]}, headers=gw)
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["code"] == "concurrent_update"
    assert balance(admin, acc)["paid"] == "1.00"


# -- multi-capture authorizations over HTTP -----------------------------------------------------


def grant_(admin, gw, acc, status=201, **body):
    return ok(
        admin.post(
            "/v1/authorizations",
            json={"account_id": acc["id"], "multi_capture": True, **body},
            headers=gw,
        ),
        status,
    )


def test_multi_capture_over_http(admin, gw):
    acc = account(admin, "2.00")
    g = grant_(admin, gw, acc, amount="1.00", model="m", ttl_seconds=600)
    assert (g["status"], g["multi_capture"], g["final"]) == ("approved", True, False)
    assert g["held"] == {"amount": "1.00", "currency": "USD"}
    assert g["remaining"] == {"amount": "1.00", "currency": "USD"}
    assert g["price"]["input_per_mtok"] == "3.00" and g["price"]["output_per_mtok"] == "15.00"
    r = send(admin, gw, *[rec(f"mc{n}", acc, authorization_id=g["id"]) for n in range(3)])
    assert [x["billed"]["amount"] for x in r] == ["0.018"] * 3
    assert r[-1]["authorization"]["remaining"] == {"amount": "0.946", "currency": "USD"}
    assert r[-1]["authorization"]["captured"] == {"amount": "0.054", "currency": "USD"}
    more = ok(
        admin.post(
            f"/v1/authorizations/{g['id']}/increment",
            json={"amount": "0.50", "records": [rec("mc3", acc, authorization_id=g["id"])]},
            headers=gw,
        ),
        200,
    )
    assert more["granted"] == {"amount": "0.50", "currency": "USD"}
    assert more["held"] == {"amount": "1.50", "currency": "USD"}
    assert more["usage"]["results"][0]["status"] == "charged"
    shown = ok(admin.get(f"/v1/authorizations/{g['id']}", headers=gw), 200)
    assert shown["captured"] == {"amount": "0.072", "currency": "USD"}
    assert shown["remaining"] == {"amount": "1.428", "currency": "USD"}
    assert balance(admin, acc)["held"] == "1.428"
    voided = ok(admin.post(f"/v1/authorizations/{g['id']}/void", headers=gw), 200)
    assert voided["status"] == "voided" and voided["remaining"]["amount"] == "0.00"
    b = balance(admin, acc)
    assert (b["held"], b["paid"]) == ("0.00", "1.928")
    closed = admin.post(
        f"/v1/authorizations/{g['id']}/increment", json={"amount": "0.10"}, headers=gw
    )
    assert closed.status_code == 409 and closed.json()["code"] == "authorization_closed"


def test_grant_answers_are_replayed_by_idempotency_key(admin, gw):
    acc = account(admin, "1.00")
    headers = {**gw, "Idempotency-Key": "grant-1"}
    body = {"account_id": acc["id"], "multi_capture": True, "amount": "0.40"}
    first = ok(admin.post("/v1/authorizations", json=body, headers=headers))
    again = ok(admin.post("/v1/authorizations", json=body, headers=headers))
    assert first == again
    assert balance(admin, acc)["held"] == "0.40"  # reserved once
    inc = {**gw, "Idempotency-Key": "inc-1"}
    a = ok(
        admin.post(
            f"/v1/authorizations/{first['id']}/increment", json={"amount": "0.10"}, headers=inc
        ),
        200,
    )
    b = ok(
        admin.post(
            f"/v1/authorizations/{first['id']}/increment", json={"amount": "0.10"}, headers=inc
        ),
        200,
    )
    assert a == b and a["held"]["amount"] == "0.50"
    assert balance(admin, acc)["held"] == "0.50"


def test_authorization_bodies_are_checked(admin, gw):
    acc = account(admin, "1.00")
    for body in (
        {"account_id": acc["id"], "multi_capture": True},  # neither amount nor tokens
        {"account_id": acc["id"], "multi_capture": True, "amount": "1.00", "tokens": 5},
        {"account_id": acc["id"], "multi_capture": True, "amount": "1.5e2"},
        {"account_id": acc["id"], "multi_capture": True, "amount": 1.5},
        {"account_id": acc["id"], "amount": "1.00"},  # amount needs multi_capture
        {"account_id": acc["id"], "model": "m"},  # a hold needs its estimates
    ):
        resp = admin.post("/v1/authorizations", json=body, headers=gw)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    unknown = admin.post(
        "/v1/authorizations",
        json={"account_id": "acc_nope", "multi_capture": True, "amount": "1.00"},
        headers=gw,
    )
    assert unknown.status_code == 404
    assert ok(admin.get(f"/v1/accounts/{acc['id']}/balance"), 200)["held"] == "0.00"
    missing = admin.get("/v1/authorizations/auth_nope", headers=gw)
    assert missing.status_code == 404


def test_a_bound_gateway_key_cannot_use_another_trees_authorization(admin, gw, engine):
    mine, theirs = account(admin, "1.00"), account(admin, "1.00")
    with Session(engine) as s:
        key = create_key(s, role="gateway", account_id=mine["id"]).secret
        s.commit()
    bound = {"Authorization": f"Bearer {key}"}
    g = grant_(admin, gw, theirs, amount="0.50")
    assert admin.get(f"/v1/authorizations/{g['id']}", headers=bound).status_code == 404
    assert admin.post(f"/v1/authorizations/{g['id']}/void", headers=bound).status_code == 404
    r = send(admin, bound, rec("b1", mine, authorization_id=g["id"]))
    assert (r[0]["status"], r[0]["reason"]) == ("rejected", "unknown_authorization")
    assert balance(admin, theirs)["held"] == "0.50"
