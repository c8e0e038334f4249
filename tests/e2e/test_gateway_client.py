"""The gateway client (integrations/) against a real ``tokenwallet serve`` process.

Each test starts the server as a subprocess on this test's fresh database, sets up a catalog
and accounts over the admin API, and drives the client as a gateway would: many threads
reporting usage, a multi-capture grant spent locally down to the hard stop, and the server
killed with SIGKILL and restarted while usage keeps flowing. Exactly-once and exact balances
are checked over the API and in the database (and the ``engine`` fixture audits the ledger
invariants after each test).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from integrations import TokenwalletClient
from tests.e2e.served import Server
from tests.helpers import account_id, add_model_m, ok

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CALL = {"input_tokens": 1000, "output_tokens": 1000}  # USD 0.018 at 3 in / 15 out per Mtok
CALL_COST = Decimal("0.018")
TOKENWALLET = Path(sys.executable).with_name("tokenwallet")


@pytest.fixture
def admin(server, keys) -> Iterator[httpx.Client]:
    """Admin HTTP client with the catalog set up (model ``m``, USD 3 in / 15 out per Mtok)."""
    with server.client(keys["admin"]) as c:
        add_model_m(c, T0)
        yield c


@pytest.fixture
def gateway(server, keys, admin) -> Iterator[httpx.Client]:
    """Gateway HTTP client; skips the test when the server has no multi-capture grants yet."""
    with server.client(keys["gateway"]) as c:
        probe = account_id(admin, None)
        resp = c.post(
            "/v1/authorizations",
            json={"account_id": probe, "multi_capture": True, "amount": "1.00"},
        )
        if resp.status_code in (400, 422):
            pytest.skip(
                "the server does not accept multi-capture authorizations yet"
                f" (POST /v1/authorizations answered {resp.status_code}: {resp.text[:200]})"
            )
        assert resp.status_code == 201, resp.text
        yield c


def balance(admin: httpx.Client, acc: str) -> dict[str, Any]:
    return dict(ok(admin.get(f"/v1/accounts/{acc}/balance"), 200))


def usage(admin: httpx.Client, acc: str) -> list[dict[str, Any]]:
    return list(ok(admin.get(f"/v1/accounts/{acc}/usage"), 200)["data"])


def charged_per_id(engine, accounts: list[str]) -> dict[str, int]:
    with Session(engine) as s:
        rows = s.execute(
            sa.text(
                "SELECT id, count(*) FROM wallet_usage_records"
                " WHERE account_id = ANY(:a) GROUP BY id"
            ),
            {"a": accounts},
        ).all()
    return {str(r[0]): int(r[1]) for r in rows}


def client(server: Server, keys: dict[str, str], **kw: Any) -> TokenwalletClient:
    options: dict[str, Any] = {
        "max_batch": 200,
        "flush_interval_s": 0.05,
        "timeout_s": 5,
        "retry_max_s": 20,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
    }
    options.update(kw)
    return TokenwalletClient(server.url, keys["gateway"], **options)


def test_many_threads_report_usage_charged_exactly_once(server, keys, admin, gateway, engine):
    accounts = [account_id(admin, "100.00") for _ in range(20)]
    per_thread = 250
    with client(server, keys) as c:

        def report(t: int) -> None:
            for i in range(per_thread):
                n = t * per_thread + i
                c.report({"id": f"a-{n}", "account_id": accounts[n % 20], "model": "m", **CALL})

        threads = [threading.Thread(target=report, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c.flush(timeout=120)
        stats = c.stats()
    assert stats.charged + stats.duplicate == 2000, stats
    assert stats.rejected == {} and stats.pending == 0
    assert charged_per_id(engine, accounts) == {f"a-{n}": 1 for n in range(2000)}
    for acc in accounts:
        rows = usage(admin, acc)
        assert [(r["key"], r["records"]) for r in rows] == [("m", 100)]
        assert Decimal(rows[0]["billed"]["amount"]) == 100 * CALL_COST
        b = balance(admin, acc)
        assert Decimal(b["paid"]) == Decimal("100.00") - 100 * CALL_COST  # exact to the atom
        assert Decimal(b["available"]) == Decimal(b["paid"])


def test_a_grant_is_spent_locally_down_to_an_exact_hard_stop(server, keys, admin, gateway, engine):
    acc = account_id(admin, "0.90")  # exactly 60 calls of 0.015
    tokens = {"input_tokens": 0, "output_tokens": 1000}
    with client(server, keys, flush_interval_s=0.02) as c:
        g = c.grant(acc, amount="0.30", model="m", low_water="0.10", increment="0.30")
        assert g.status == "approved" and not g.final
        cost = g.cost(tokens)
        assert cost == Decimal("0.015") and isinstance(cost, Decimal)
        spent: list[int] = []

        def serve_calls() -> None:
            n = 0
            while g.try_spend(cost):
                n += 1
                g.settle({"occurred_at": datetime.now(UTC), **tokens}, cost)
            spent.append(n)

        threads = [threading.Thread(target=serve_calls) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(spent) == 60
        assert g.final and g.remaining == 0
        assert not g.try_spend(Decimal("0.000001"))
        c.flush(timeout=60)
        state = g.refresh()
        assert state.state.held == state.state.captured == Decimal("0.90")
        assert state.state.remaining == 0 and state.state.final
        b = balance(admin, acc)
        assert Decimal(b["available"]) == 0 and Decimal(b["paid"]) == 0
        assert Decimal(b["held"]) == 0
        g.void()
        assert g.status == "voided"
    rows = usage(admin, acc)
    assert rows[0]["records"] == 60
    assert Decimal(rows[0]["billed"]["amount"]) == Decimal("0.90")
    assert Decimal(rows[0]["credited"]["amount"]) == 0  # nothing was captured beyond funds
    assert Decimal(balance(admin, acc)["available"]) == 0
    assert c.stats().rejected == {}


def test_usage_survives_a_server_killed_and_restarted(server, keys, admin, gateway, engine):
    accounts = [account_id(admin, "100.00") for _ in range(4)]
    total = 1500
    with client(server, keys, max_batch=50, timeout_s=2) as c:
        done = threading.Event()

        def report() -> None:
            for n in range(total):
                c.report({"id": f"k-{n}", "account_id": accounts[n % 4], "model": "m", **CALL})
                time.sleep(0.002)
            done.set()

        reporter = threading.Thread(target=report)
        reporter.start()
        deadline = time.monotonic() + 60
        while c.stats().charged < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not done.is_set(), "the stream ended before the server could be killed"
        server.kill()
        time.sleep(0.5)
        server.start()
        reporter.join()
        c.flush(timeout=120)
        stats = c.stats()
    assert stats.retries > 0, "the kill did not interrupt the stream"
    assert stats.charged + stats.duplicate == total and stats.rejected == {}
    assert charged_per_id(engine, accounts) == {f"k-{n}": 1 for n in range(total)}
    for acc in accounts:
        b = balance(admin, acc)
        assert Decimal(b["paid"]) == Decimal("100.00") - (total // 4) * CALL_COST
